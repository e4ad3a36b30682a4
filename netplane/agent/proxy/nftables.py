"""kube-proxy's nftables mode: Service ports (model.py) -> the `ip kube-proxy` table, one nft
transaction a sync, with only what changed sent.

The layout and names follow upstream's `pkg/proxy/nftables`: the verdict maps `service-ips`
(ClusterIPs, external IPs and load-balancer IPs, keyed `daddr . l4proto . dport`) and
`service-nodeports` (keyed `l4proto . dport`, for any local address of the node); per Service port
the policy chains `service-<hash>-<ns>/<name>/<proto>/<port>` (Cluster: every endpoint) and
`local-<hash>-...` (Local: this node's), the ClusterIP going to the one internalTrafficPolicy
names and, when it has NodePorts or external addresses, an `external-<hash>-...` chain that applies
externalTrafficPolicy after short-circuiting pods and the node itself to the Cluster policy; the
masquerade mark 0x4000; `affinity-<hash>-...__<ip>/<port>` sets remembering clients with
sessionAffinity: ClientIP; `no-endpoint-services` / `no-endpoint-nodeports` rejecting (or, with a
Local policy and no local endpoint, dropping) traffic that has nowhere to go, checked after DNAT
(filter chains at priority 0, as upstream since kubernetes#132456) so that what the short-circuit
translated passes; `firewall-ips` enforcing loadBalancerSourceRanges before DNAT.

Where it differs from upstream, it is for the kernel's sake at 10,000 Services (figures in the
README's performance section):
- no `endpoint-...` chain per endpoint: the Service's chain DNATs itself, so the table has a
  quarter of the chains, and the kernel, which validates every chain a transaction can reach,
  commits a one-Service change in tens of milliseconds instead of a hundred and more;
- an endpoint is chosen by a cascade of `numgen random mod K == 0` rules (K = N, N-1, ..., as
  iptables' `statistic` cascade does) instead of `numgen random mod N vmap { ... }`: each such vmap
  is an anonymous set, and the kernel links each new anonymous set by walking the whole
  transaction, so a full sync of 10,000 Services took 90-100 s that way;
- hairpin (a pod reaching itself through its Service) is masqueraded by one rule in
  `masquerading` matching `ip saddr . ip daddr @hairpin-endpoints` (each endpoint the node's rules
  may DNAT to, paired with itself) instead of a mark in each endpoint chain.
"""
from __future__ import annotations

from netplane import names
from netplane.agent.proxy.model import Endpoint, ServicePort
from netplane.agent.proxy.ruleset import Diff, Fragment, merge


def service_chain(sp: ServicePort) -> str:
    return f"service-{sp.hash}-{sp.id}"


def local_chain(sp: ServicePort) -> str:
    return f"local-{sp.hash}-{sp.id}"


def internal_chain(sp: ServicePort) -> str:
    """The policy chain of ClusterIP traffic (internalTrafficPolicy)."""
    return local_chain(sp) if sp.internal_local else service_chain(sp)


def external_chain(sp: ServicePort) -> str:
    return f"external-{sp.hash}-{sp.id}"


def firewall_chain(sp: ServicePort) -> str:
    return f"firewall-{sp.hash}-{sp.id}"


def _endpoint_key(sp: ServicePort, ep: Endpoint) -> str:
    key = f"{sp.id}__{ep.ip}/{ep.port}"
    return f"{names.short_hash(key)}-{key}"


def affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    return f"affinity-{_endpoint_key(sp, ep)}"


TABLE = f"ip {names.NFT_TABLE}"
BY_ADDRESS = "ipv4_addr . inet_proto . inet_service"
BY_PORT = "inet_proto . inet_service"
SHARED = {  # the sets and maps all Services put elements in -> their type
    "service-ips": f"{BY_ADDRESS} : verdict", "service-nodeports": f"{BY_PORT} : verdict",
    "no-endpoint-services": f"{BY_ADDRESS} : verdict", "no-endpoint-nodeports": f"{BY_PORT} : verdict",
    "firewall-ips": f"{BY_ADDRESS} : verdict",
    "hairpin-endpoints": "ipv4_addr . ipv4_addr",  # endpoint . itself: a pod reaching itself via a Service
}
HOOKS = {  # base chain -> its hook; the endpoint checks see the destination after DNAT, the firewall before
    "filter-prerouting-pre-dnat": "type filter hook prerouting priority -110; policy accept;",
    "filter-output-pre-dnat": "type filter hook output priority -110; policy accept;",
    "filter-input": "type filter hook input priority filter; policy accept;",
    "filter-forward": "type filter hook forward priority filter; policy accept;",
    "filter-output": "type filter hook output priority filter; policy accept;",
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}


def base() -> Fragment:
    """The chains every node has, whatever its Services."""
    mark = f"0x{names.MASQ_MARK:x}"
    return Fragment(chains={
        "filter-prerouting-pre-dnat": ("ct state new jump firewall-check",),
        "filter-output-pre-dnat": ("ct state new jump firewall-check",),
        "filter-input": ("ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"),
        "filter-forward": ("ct state new jump service-endpoints-check",),
        "filter-output": ("ct state new jump service-endpoints-check",),
        "nat-prerouting": ("jump services",),
        "nat-output": ("jump services",),
        "nat-postrouting": ("jump masquerading",),
        "mark-for-masquerade": (f"meta mark set meta mark | {mark}",),
        "masquerading": ("ct status dnat ip saddr . ip daddr @hairpin-endpoints masquerade fully-random",
                         f"meta mark & {mark} == 0 return", f"meta mark set meta mark ^ {mark}",
                         "masquerade fully-random"),
        "reject-chain": ("reject",),
        "services": ("ip daddr . meta l4proto . th dport vmap @service-ips",
                     "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"),
        "service-endpoints-check": ("ip daddr . meta l4proto . th dport vmap @no-endpoint-services",),
        "nodeport-endpoints-check": ("fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports",),
        "firewall-check": ("ip daddr . meta l4proto . th dport vmap @firewall-ips",),
    })


def _send(sp: ServicePort, ep: Endpoint) -> str:
    """To one endpoint: remember the client there (session affinity), then DNAT."""
    remember = f"update @{affinity_set(sp, ep)} {{ ip saddr }} " if sp.affinity_seconds else ""
    return f"{remember}meta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}"


def _choose(sp: ServicePort, endpoints: list[Endpoint]) -> list[str]:
    """Session affinity first (the endpoint that served this client before), then a random one:
    the first of N with probability 1/N, else the second of the N-1 left with 1/(N-1), ..."""
    lines = [f"ip saddr @{affinity_set(sp, ep)} {_send(sp, ep)}" for ep in endpoints if sp.affinity_seconds]
    left = len(endpoints)
    for ep in endpoints[:-1]:
        lines.append(f"numgen random mod {left} == 0 {_send(sp, ep)}")
        left -= 1
    return lines + [_send(sp, endpoints[-1])]


def _external_rules(sp: ServicePort, node: str, cluster_cidr: str) -> list[str]:
    """externalTrafficPolicy Cluster: masquerade, then any endpoint. Local: traffic from pods goes
    on to every endpoint unmasqueraded, the node's own masqueraded, as upstream short-circuits both
    (as if they had gone out to a load balancer and come back); other clients keep their address
    and reach this node's endpoints, or fall through to the drop of the no-endpoint maps."""
    if not sp.external_local:
        return ["jump mark-for-masquerade", f"goto {service_chain(sp)}"]
    lines = [f"ip saddr {cluster_cidr} goto {service_chain(sp)}",
             "fib saddr type local jump mark-for-masquerade",
             f"fib saddr type local goto {service_chain(sp)}"]
    return lines + ([f"goto {local_chain(sp)}"] if sp.local_policy_endpoints(node) else [])


def affinity_declaration(seconds: int | None) -> str:
    return f"type ipv4_addr; flags dynamic,timeout; timeout {seconds}s;"


def fragment(sp: ServicePort, node: str, cluster_cidr: str) -> Fragment:
    """The chains, map elements and affinity sets of one Service port on one node, decided as
    upstream's syncProxyRules decides them."""
    chains: dict[str, tuple[str, ...]] = {}
    entries: dict[str, dict[str, str]] = {name: {} for name in SHARED}
    sets: dict[str, str] = {}
    cluster, local = sp.cluster_policy_endpoints(), sp.local_policy_endpoints(node)
    if cluster:
        chains[service_chain(sp)] = tuple(_choose(sp, cluster))
    if local:
        chains[local_chain(sp)] = tuple(_choose(sp, local))
    key = f"{sp.protocol} . {sp.port}"
    # nowhere to go at all: reject; nowhere on this node with a Local policy: drop, as upstream
    missing = "drop" if sp.reachable else "goto reject-chain"
    if sp.internal_endpoints(node):
        internal = internal_chain(sp)
        entries["service-ips"][f"{sp.cluster_ip} . {key}"] = f"goto {internal}"
        # a client off the cluster (routed to the service range through this node) is
        # masqueraded, so that the reply comes back through this node to be un-DNATed
        masquerade = f"ip daddr {sp.cluster_ip} {sp.protocol} dport {sp.port} ip saddr != {cluster_cidr} jump mark-for-masquerade"
        chains[internal] = (masquerade, *chains[internal])
    else:
        entries["no-endpoint-services"][f"{sp.cluster_ip} . {key}"] = missing
    if sp.has_external:
        if sp.reachable:  # even with no endpoint for outside clients: pods and the node short-circuit
            chains[external_chain(sp)] = tuple(_external_rules(sp, node, cluster_cidr))
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                entries["service-ips"][f"{ip} . {key}"] = f"goto {external_chain(sp)}"
            if sp.node_port:
                entries["service-nodeports"][f"{sp.protocol} . {sp.node_port}"] = f"goto {external_chain(sp)}"
        if not sp.external_endpoints(node):  # what the external chain did not translate stops here
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                entries["no-endpoint-services"][f"{ip} . {key}"] = missing
            if sp.node_port:
                entries["no-endpoint-nodeports"][f"{sp.protocol} . {sp.node_port}"] = missing
        if sp.source_ranges and sp.load_balancer_ips:
            chains[firewall_chain(sp)] = (f"ip saddr != {{ {', '.join(sp.source_ranges)} }} drop",)
            for ip in sp.load_balancer_ips:
                entries["firewall-ips"][f"{ip} . {key}"] = f"goto {firewall_chain(sp)}"
    for ep in sp.reachable_endpoints(node):
        entries["hairpin-endpoints"][f"{ep.ip} . {ep.ip}"] = ""
        if sp.affinity_seconds:
            sets[affinity_set(sp, ep)] = affinity_declaration(sp.affinity_seconds)
    return Fragment(chains, {k: v for k, v in entries.items() if v}, sets)


def _elements(items: dict[str, str]) -> str:
    return ", ".join(f"{k} : {v}" if v else k for k, v in items.items())


def _kind(name: str) -> str:
    return "map" if ":" in SHARED[name] else "set"


def declare(everything: Fragment) -> str:
    """A whole new table as one `table { ... }` block: the fast form for a table that does not exist."""
    lines = [f"table {TABLE} {{", '\tcomment "rules for kube-proxy"']
    for name, declaration in everything.sets.items():
        lines.append(f"\tset {name} {{ {declaration} }}")
    for name, key in SHARED.items():
        items = everything.entries.get(name)
        lines.append(f"\t{_kind(name)} {name} {{ type {key};" + (f" elements = {{ {_elements(items)} }}" if items else "") + " }")
    for chain, rules in everything.chains.items():
        hook = f" {HOOKS[chain]}" if chain in HOOKS else ""
        lines.append(f"\tchain {chain} {{{hook}" + "".join(f"\n\t\t{r}" for r in rules) + "\n\t}")
    return "\n".join(lines + ["}", ""])


def replace(everything: Fragment, chains: set[str], sets: dict[str, int | None]) -> str:
    """Every object rewritten in an existing table (given its chains and its sets' timeouts), the
    ones no longer wanted deleted. Affinity sets keep their members unless their timeout changed, and
    the connections conntrack already translated are not touched: a restarted proxy adopts its
    table this way."""
    changed = {n for n, d in everything.sets.items() if n in sets and affinity_declaration(sets[n]) != d}
    out = [f"add table {TABLE}"]
    # base chains are made anew, so that one left with another hook or priority (by an older
    # netplane, as upstream moved its filter chains) takes the current one
    for chain in HOOKS.keys() & chains:
        out += [f"flush chain {TABLE} {chain}", f"delete chain {TABLE} {chain}"]
    for name, key in SHARED.items():
        out += [f"add {_kind(name)} {TABLE} {name} {{ type {key}; }}", f"flush {_kind(name)} {TABLE} {name}"]
    return "\n".join(out + _transaction(
        write_chains=everything.chains, delete_chains=chains - everything.chains.keys(),
        add_entries=everything.entries, delete_entries={},
        add_sets={n: d for n, d in everything.sets.items() if n not in sets or n in changed},
        delete_sets=sets.keys() - everything.sets.keys() - SHARED.keys(), replace_sets=changed)) + "\n"


def update(d: Diff) -> str:
    """The incremental transaction for one sync's changes."""
    return "\n".join(_transaction(d.write_chains, d.delete_chains, d.add_entries, d.delete_entries,
                                  d.add_sets, d.delete_sets - d.add_sets.keys(), d.delete_sets & d.add_sets.keys())) + "\n"


def _transaction(write_chains: dict[str, tuple[str, ...]], delete_chains: set[str],
                 add_entries: dict[str, dict[str, str]], delete_entries: dict[str, dict[str, str]],
                 add_sets: dict[str, str], delete_sets: set[str], replace_sets: set[str]) -> list[str]:
    """In the order the kernel needs: references go before what they point to is deleted, and
    what a rule points to exists before the rule."""
    out = [f"delete element {TABLE} {name} {{ {', '.join(items)} }}" for name, items in delete_entries.items() if items]
    for chain in write_chains:
        hook = f" {{ {HOOKS[chain]} }}" if chain in HOOKS else ""
        out += [f"add chain {TABLE} {chain}{hook}", f"flush chain {TABLE} {chain}"]
    out += [f"flush chain {TABLE} {chain}" for chain in delete_chains]
    out += [f"delete set {TABLE} {name}" for name in replace_sets]
    out += [f"add set {TABLE} {name} {{ {declaration} }}" for name, declaration in add_sets.items()]
    out += [f"add rule {TABLE} {chain} {rule}" for chain, rules in write_chains.items() for rule in rules]
    out += [f"add element {TABLE} {name} {{ {_elements(items)} }}" for name, items in add_entries.items() if items]
    out += [f"delete chain {TABLE} {chain}" for chain in delete_chains]
    return out + [f"delete set {TABLE} {name}" for name in delete_sets]


def render(ports: list[ServicePort], node: str, cluster_cidr: str) -> str:
    """The whole table of one node, as a user reads it (and as a fresh node loads it)."""
    return declare(merge([base(), *(fragment(sp, node, cluster_cidr) for sp in ports)]))
