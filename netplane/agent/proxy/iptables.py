"""kube-proxy's iptables mode: Service ports (model.py) -> rules in the `nat` and `filter` tables,
one `iptables-restore --noflush` a sync. A pure renderer; kernel/iptables.py loads what it writes.

Names and rules follow upstream's `pkg/proxy/iptables/proxier.go`, so what a user reads here is
what a real node holds:
- per Service port, chains named by a prefix and the first 16 characters of
  base32(sha256("<ns>/<name>[:<port name>]" + "<protocol in lower case>")): KUBE-SVC- chooses among
  the endpoints for the Cluster policy, KUBE-SVL- among this node's for a Local policy, KUBE-EXT-
  takes the NodePort, external-IP and load-balancer traffic and applies externalTrafficPolicy,
  KUBE-FW- applies loadBalancerSourceRanges; KUBE-SEP- (the hash also covers the endpoint's
  "<ip>:<port>") marks hairpin traffic for masquerade, remembers the client for session affinity
  (`-m recent`) and DNATs;
- top-level chains, rewritten whole on every sync and jumped to once from a built-in chain: nat
  KUBE-SERVICES (the NodePorts jump last), KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ (mark
  0x4000); filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES (REJECT for a Service without endpoints,
  DROP when a Local policy finds none on this node), KUBE-FORWARD, KUBE-NODEPORTS,
  KUBE-PROXY-FIREWALL (drops load-balancer traffic KUBE-FW- did not accept);
- an endpoint is chosen by `-m statistic --mode random --probability 1/N`, 1/(N-1), ... and the
  last for sure, after the affinity rules (`-m recent --rcheck --seconds T --reap`).

Which endpoints serve which traffic comes from model.py, as in nftables.py: KUBE-SVC- holds the
Cluster policy's endpoints, KUBE-SVL- this node's; with externalTrafficPolicy Local, pods and the
node itself are short-circuited to KUBE-SVC- whatever internalTrafficPolicy says, as upstream. Not
rendered: upstream's large-cluster mode (no comments past 1000 endpoints), localhost NodePorts,
health-check NodePorts and the KUBE-PROXY-CANARY monitor.
"""
from __future__ import annotations

from collections.abc import Iterable

from netplane import names
from netplane.agent.proxy.model import Endpoint, ServicePort
from netplane.agent.ruleset import Diff, Fragment, Rules, merge
from netplane.kernel.iptables import Jump, Saved

NAT, FILTER = "nat", "filter"
SERVICES = "KUBE-SERVICES"
EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
NODEPORTS = "KUBE-NODEPORTS"
POSTROUTING = "KUBE-POSTROUTING"
MARK_MASQ = "KUBE-MARK-MASQ"
FORWARD = "KUBE-FORWARD"
PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
TOP_CHAINS = {  # per table, in upstream's order
    FILTER: (SERVICES, EXTERNAL_SERVICES, FORWARD, NODEPORTS, PROXY_FIREWALL),
    NAT: (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ),
}
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
MARK = f"0x{names.MASQ_MARK:x}"


def key(table: str, chain: str) -> str:
    """How a Fragment names a chain: "<table> <chain>"."""
    return f"{table} {chain}"


def _jump(table: str, chain: str, target: str, comment: str, new: bool = False) -> Jump:
    state = "-m conntrack --ctstate NEW " if new else ""
    return Jump(table, chain, target, f'{state}-m comment --comment "{comment}" -j {target}')


PORTALS = "kubernetes service portals"
EXTERNAL_PORTALS = "kubernetes externally-visible service portals"
LB_FIREWALL = "kubernetes load balancer firewall"
JUMPS = (  # from the built-in chains to ours, as upstream's iptablesJumpChains
    _jump(FILTER, "INPUT", EXTERNAL_SERVICES, EXTERNAL_PORTALS, new=True),
    _jump(FILTER, "FORWARD", EXTERNAL_SERVICES, EXTERNAL_PORTALS, new=True),
    _jump(FILTER, "INPUT", NODEPORTS, "kubernetes health check service ports"),
    _jump(FILTER, "FORWARD", SERVICES, PORTALS, new=True),
    _jump(FILTER, "OUTPUT", SERVICES, PORTALS, new=True),
    _jump(FILTER, "FORWARD", FORWARD, "kubernetes forwarding rules"),
    _jump(FILTER, "INPUT", PROXY_FIREWALL, LB_FIREWALL, new=True),
    _jump(FILTER, "OUTPUT", PROXY_FIREWALL, LB_FIREWALL, new=True),
    _jump(FILTER, "FORWARD", PROXY_FIREWALL, LB_FIREWALL, new=True),
    _jump(NAT, "OUTPUT", SERVICES, PORTALS),
    _jump(NAT, "PREROUTING", SERVICES, PORTALS),
    _jump(NAT, "POSTROUTING", POSTROUTING, "kubernetes postrouting rules"),
)


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


BASE = Fragment(entries={  # the rules of the top-level chains that do not depend on Services
    key(NAT, POSTROUTING): dict.fromkeys((
        f"-m mark ! --mark {MARK}/{MARK} -j RETURN",
        f"-j MARK --xor-mark {MARK}",  # so a packet that loops through the stack is not masqueraded twice
        f"{_comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully"), ""),
    key(NAT, MARK_MASQ): {f"-j MARK --or-mark {MARK}": ""},
    key(FILTER, FORWARD): dict.fromkeys((
        "-m conntrack --ctstate INVALID -j DROP",  # kubernetes#74839: no RST for out-of-window packets
        f"{_comment('kubernetes forwarding rules')} -m mark --mark {MARK}/{MARK} -j ACCEPT",
        f"{_comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED "
        "-j ACCEPT"), ""),
})
TAIL = Fragment(entries={key(NAT, SERVICES): {  # any local address but loopback (no route_localnet here)
    f"{_comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} "
    f"-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {NODEPORTS}": ""}})


def port_name(sp: ServicePort) -> str:
    """Upstream's ServicePortName.String(): `ns/name:port-name`, or `ns/name` when the port is unnamed."""
    service = f"{sp.namespace}/{sp.service}"
    return f"{service}:{sp.port_name}" if sp.port_name else service


def _hashed(prefix: str, text: str) -> str:
    return prefix + names.short_hash(text, 16)


def service_chain(sp: ServicePort) -> str:
    return _hashed("KUBE-SVC-", port_name(sp) + sp.protocol)


def local_chain(sp: ServicePort) -> str:
    return _hashed("KUBE-SVL-", port_name(sp) + sp.protocol)


def external_chain(sp: ServicePort) -> str:
    return _hashed("KUBE-EXT-", port_name(sp) + sp.protocol)


def firewall_chain(sp: ServicePort) -> str:
    return _hashed("KUBE-FW-", port_name(sp) + sp.protocol)


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return _hashed("KUBE-SEP-", f"{port_name(sp)}{sp.protocol}{ep.ip}:{ep.port}")


def internal_chain(sp: ServicePort) -> str:
    """The chain of the endpoints ClusterIP traffic may use (internalTrafficPolicy)."""
    return local_chain(sp) if sp.internal_local else service_chain(sp)


def is_service_chain(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """1/n as upstream writes it (%0.10f)."""
    return f"{1 / n:0.10f}"


def _to(sp: ServicePort, ip: str, port: int) -> str:
    return f"-m {sp.protocol} -p {sp.protocol} -d {ip} --dport {port}"


def _refusal(sp: ServicePort, reachable: bool) -> tuple[str, str]:
    """Comment and verdict for traffic with nowhere to go: REJECT (the client learns at once) when
    the Service has no endpoint at all, DROP when its endpoints are all on other nodes and a Local
    policy forbids them."""
    if reachable:
        return _comment(f"{port_name(sp)} has no local endpoints"), "DROP"
    return _comment(f"{port_name(sp)} has no endpoints"), "REJECT"


def _choose(sp: ServicePort, endpoints: list[Endpoint]) -> list[str]:
    """Session affinity first (the endpoint that served this client within the timeout), then a
    random one: the first of N with probability 1/N, else the next of the N-1 left with 1/(N-1), ..."""
    def comment(ep: Endpoint) -> str:
        return _comment(f"{port_name(sp)} -> {ep.ip}:{ep.port}")

    lines = [f"{comment(ep)} -m recent --name {endpoint_chain(sp, ep)} --rcheck --seconds {sp.affinity_seconds} "
             f"--reap -j {endpoint_chain(sp, ep)}" for ep in endpoints if sp.affinity_seconds]
    for i, ep in enumerate(endpoints):
        left = len(endpoints) - i
        chance = f" -m statistic --mode random --probability {probability(left)}" if left > 1 else ""
        lines.append(f"{comment(ep)}{chance} -j {endpoint_chain(sp, ep)}")
    return lines


def _endpoint_rules(sp: ServicePort, ep: Endpoint) -> Rules:
    comment, chain = _comment(port_name(sp)), endpoint_chain(sp, ep)
    remember = f" -m recent --name {chain} --set" if sp.affinity_seconds else ""
    return (f"{comment} -s {ep.ip} -j {MARK_MASQ}",  # hairpin: a pod reaching itself through its Service
            f"{comment}{remember} -m {sp.protocol} -p {sp.protocol} -j DNAT --to-destination {ep.ip}:{ep.port}")


def _cluster_ip(sp: ServicePort, node: str, chains: dict[str, Rules], cluster_cidr: str) -> Fragment:
    """The ClusterIP: to the chain internalTrafficPolicy names, or refused in the filter table."""
    to = _to(sp, sp.cluster_ip, sp.port)
    if not sp.internal_endpoints(node):
        comment, verdict = _refusal(sp, sp.reachable)
        return Fragment(entries={key(FILTER, SERVICES): {f"{comment} {to} -j {verdict}": ""}})
    comment, chain = _comment(f"{port_name(sp)} cluster IP"), internal_chain(sp)
    # a client off the cluster (a route to the service range through this node) is masqueraded, so
    # that the reply comes back through this node to be un-DNATed
    masquerade = f"{comment} {to} ! -s {cluster_cidr} -j {MARK_MASQ}"
    return Fragment(chains={key(NAT, chain): (masquerade, *chains[key(NAT, chain)])},
                    entries={key(NAT, SERVICES): {f"{comment} {to} -j {chain}": ""}})


def _external_rules(sp: ServicePort, node: str, cluster_cidr: str) -> Rules:
    """externalTrafficPolicy Cluster: masquerade, any endpoint. Local: pods and the node itself go to
    KUBE-SVC- (the node masqueraded), as if they went out to a load balancer and came back; other
    clients keep their address and reach this node's endpoints, or fall through to the filter
    table's DROP."""
    name, cluster = port_name(sp), service_chain(sp)
    if not sp.external_local:
        return (f"{_comment(f'masquerade traffic for {name} external destinations')} -j {MARK_MASQ}",
                f"-j {cluster}")
    lines = [f"{_comment(f'pod traffic for {name} external destinations')} -s {cluster_cidr} -j {cluster}",
             f"{_comment(f'masquerade LOCAL traffic for {name} external destinations')} "
             f"-m addrtype --src-type LOCAL -j {MARK_MASQ}",
             f"{_comment(f'route LOCAL traffic for {name} external destinations')} "
             f"-m addrtype --src-type LOCAL -j {cluster}"]
    return (*lines, *([f"-j {local_chain(sp)}"] if sp.local_policy_endpoints(node) else []))


def _firewall(sp: ServicePort) -> Fragment:
    """loadBalancerSourceRanges: KUBE-FW- lets the allowed sources on to KUBE-EXT-; the rest is not
    DNATed and meets KUBE-PROXY-FIREWALL's DROP in the filter table."""
    name, fw = port_name(sp), firewall_chain(sp)
    allowed = _comment(f"{name} loadbalancer IP")
    rules = (*(f"{allowed} -s {cidr} -j {external_chain(sp)}" for cidr in sp.source_ranges),
             _comment(f"other traffic to {name} will be dropped by {PROXY_FIREWALL}"))
    dropped = _comment(f"{name} traffic not accepted by {fw}")
    return Fragment(chains={key(NAT, fw): rules}, entries={key(FILTER, PROXY_FIREWALL): {
        f"{dropped} {_to(sp, ip, sp.port)} -j DROP": "" for ip in sp.load_balancer_ips}})


def _external_chains(sp: ServicePort, node: str, cluster_cidr: str) -> Fragment:
    """NodePorts, external IPs and load-balancer IPs of a Service that has endpoints: all to KUBE-EXT-."""
    name, ext = port_name(sp), external_chain(sp)
    firewalled = bool(sp.source_ranges and sp.load_balancer_ips)
    services = {f"{_comment(f'{name} external IP')} {_to(sp, ip, sp.port)} -j {ext}": "" for ip in sp.external_ips}
    lb_target = firewall_chain(sp) if firewalled else ext
    services |= {f"{_comment(f'{name} loadbalancer IP')} {_to(sp, ip, sp.port)} -j {lb_target}": ""
                 for ip in sp.load_balancer_ips}
    entries = {key(NAT, SERVICES): services}
    if sp.node_port:
        entries[key(NAT, NODEPORTS)] = {
            f"{_comment(name)} -m {sp.protocol} -p {sp.protocol} --dport {sp.node_port} -j {ext}": ""}
    chains = {key(NAT, ext): _external_rules(sp, node, cluster_cidr)}
    return merge([Fragment(chains, entries), *([_firewall(sp)] if firewalled else [])])


def _external_refusals(sp: ServicePort, reachable: bool) -> Fragment:
    comment, verdict = _refusal(sp, reachable)
    rules = [f"{comment} {_to(sp, ip, sp.port)} -j {verdict}" for ip in (*sp.external_ips, *sp.load_balancer_ips)]
    if sp.node_port:
        rules.append(f"{comment} -m addrtype --dst-type LOCAL -m {sp.protocol} -p {sp.protocol} "
                     f"--dport {sp.node_port} -j {verdict}")
    return Fragment(entries={key(FILTER, EXTERNAL_SERVICES): dict.fromkeys(rules, "")})


def fragment(sp: ServicePort, node: str, cluster_cidr: str) -> Fragment:
    """The chains and top-level-chain rules of one Service port on one node, decided as upstream's
    syncProxyRules decides them."""
    cluster, local = sp.cluster_policy_endpoints(), sp.local_policy_endpoints(node)
    policies = {key(NAT, chain): tuple(_choose(sp, endpoints))
                for chain, endpoints in ((service_chain(sp), cluster), (local_chain(sp), local)) if endpoints}
    parts = [Fragment(chains=policies), _cluster_ip(sp, node, policies, cluster_cidr)]
    if sp.has_external and sp.reachable:  # even with no endpoint for outside clients: pods and the node short-circuit
        parts.append(_external_chains(sp, node, cluster_cidr))
    if sp.has_external and not sp.external_endpoints(node):
        parts.append(_external_refusals(sp, sp.reachable))
    parts += [Fragment(chains={key(NAT, endpoint_chain(sp, ep)): _endpoint_rules(sp, ep)})
              for ep in sp.reachable_endpoints(node)]
    found = merge(parts)
    return Fragment(found.chains, {name: rules for name, rules in found.entries.items() if rules})


def top_rules(fragments: dict[str, Fragment]) -> dict[str, list[str]]:
    """The rules of every top-level chain: the fixed ones, then each port's in the order of port
    ids, and the NodePorts jump last in nat KUBE-SERVICES."""
    rules: dict[str, list[str]] = {key(table, chain): [] for table, chains in TOP_CHAINS.items() for chain in chains}
    for f in (BASE, *(fragments[k] for k in sorted(fragments)), TAIL):
        for name, items in f.entries.items():
            rules[name].extend(items)
    return rules


def _by_table(chains: Iterable[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {table: [] for table in TOP_CHAINS}
    for name in chains:
        table, chain = name.split(" ", 1)
        found.setdefault(table, []).append(chain)
    return found


def restore(write: dict[str, Rules], delete: Iterable[str] = (), jumps: Iterable[Jump] = ()) -> str:
    """One iptables-restore --noflush input. Per table: a chain line for each chain written or
    deleted (creating it, or flushing it when it exists), their rules, the jumps to insert into
    built-in chains, and last the deletions, once no rule of the transaction points at them."""
    written, gone = _by_table(write), _by_table(sorted(delete))
    lines = []
    for table in written:
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in written[table] + gone[table]]
        lines += [f"-A {chain} {rule}" for chain in written[table] for rule in write[key(table, chain)]]
        lines += [f"-I {j.chain} {j.spec}" for j in jumps if j.table == table]
        lines += [f"-X {chain}" for chain in gone[table]]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def full(fragments: dict[str, Fragment], chains: Iterable[str] = (), jumps: Iterable[Jump] = ()) -> str:
    """Every chain written, given the chains and jumps the kernel holds: the per-Service chains no
    port owns any more are deleted (ours by their prefix, as upstream's), the missing jumps added."""
    own = merge(fragments[k] for k in sorted(fragments)).chains
    stale = [c for c in chains if c.startswith(f"{NAT} ") and is_service_chain(c.split(" ", 1)[1]) and c not in own]
    present = {(j.table, j.chain, j.target) for j in jumps}
    missing = [j for j in JUMPS if (j.table, j.chain, j.target) not in present]
    return restore({**top_rules(fragments), **own}, stale, missing)


def update(fragments: dict[str, Fragment], changes: Diff) -> str:
    """The partial sync: the top-level chains whole, the per-Service chains that changed or went."""
    return restore({**top_rules(fragments), **dict(sorted(changes.write_chains.items()))}, changes.delete_chains)


def rule_counts(fragments: dict[str, Fragment]) -> dict[str, int]:
    """How many rules a sync of these fragments writes in each chain ("table chain")."""
    written = {**top_rules(fragments), **merge(fragments[k] for k in sorted(fragments)).chains}
    return {chain: len(rules) for chain, rules in written.items()}


def intact(counts: dict[str, int], saved: Saved) -> bool:
    """Whether the kernel still holds what a sync wrote (its rule_counts): every jump from the
    built-in chains, every chain with as many rules as written (a flushed table, a deleted chain or
    rule, a lost jump all show)."""
    present = {(j.table, j.chain, j.target) for j in saved.jumps}
    return (all((j.table, j.chain, j.target) in present for j in JUMPS)
            and all(saved.rules.get(chain) == count for chain, count in counts.items()))


def removal(chains: Iterable[str], jumps: Iterable[Jump]) -> str:
    """What deletes every KUBE-* chain and the built-in chains' jumps to them ("" when there is none)."""
    ours = _by_table(sorted(c for c in chains if c.split(" ", 1)[1].startswith("KUBE-")))
    links = [j for j in jumps if j.target.startswith("KUBE-")]
    lines = []
    for table, found in ours.items():
        unlink = [f"-D {j.chain} {j.spec}" for j in links if j.table == table]
        if found or unlink:
            lines += [f"*{table}", *(f":{c} - [0:0]" for c in found), *unlink, *(f"-X {c}" for c in found), "COMMIT"]
    return "\n".join(lines) + "\n" if lines else ""


def render(ports: list[ServicePort], node: str, cluster_cidr: str) -> str:
    """The rules of one node as one iptables-restore input (what a fresh node loads)."""
    return full({sp.id: fragment(sp, node, cluster_cidr) for sp in ports})
