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
- a port whose endpoint does not depend on the client (`flat`: no session affinity, no Local
  external policy, no source ranges, at most MAX_FLAT_ENDPOINTS endpoints) has no chain: its
  address is an element of `flat-ips` (NodePort: `flat-nodeports`) and of the set saying whom it
  masquerades (`cluster-ips`: clients off the cluster; `external-ips`: everyone), and its N
  endpoints are elements of the data map `endpoints-N`, keyed by the address, protocol, port and
  `numgen random mod N`, which the chain `flat-services` DNATs through. Its changes are elements
  only, and elements of sets and data maps make the kernel re-validate no chain (a rule or a
  verdict does: every chain it can reach, 10,000 of them);
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
from netplane.agent.ruleset import Diff, Fragment, NftTable, Rules, merge
from netplane.kernel.nftobjects import (
    CT_STATE, CT_STATUS, DROP, FIB_DADDR_TYPE, FIB_SADDR_TYPE, IP_DADDR, IP_SADDR, L4PROTO, MARK, REJECT,
    RETURN, TH_DPORT, Chain, Dnat, DnatMap, Hook, Lookup, Map, Masquerade, Match, Numgen, Set, SetMark, Table,
    Term, Transaction, Update, VerdictMap, dport, goto, jump)


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


def endpoints_map(n: int) -> str:
    """The data map choosing among n endpoints of a Service address and port."""
    return f"endpoints-{n}"


def nodeport_endpoints_map(n: int) -> str:
    return f"nodeport-endpoints-{n}"


def _draw(n: int) -> str:
    return f"numgen random mod {n}"


TABLE = Table("ip", names.NFT_TABLE, "rules for kube-proxy")
BY_ADDRESS = "ipv4_addr . inet_proto . inet_service"
BY_PORT = "inet_proto . inet_service"
SERVICE_KEY = (IP_DADDR, L4PROTO, TH_DPORT)
NODEPORT_KEY = (L4PROTO, TH_DPORT)
MAX_FLAT_ENDPOINTS = 16  # more endpoints than this: a chain of its own
ENDPOINT = "ip daddr . th dport"
SHARED: dict[str, Set | Map] = {s.name: s for s in (  # the sets and maps all Services put elements in
    Map("service-ips", BY_ADDRESS), Map("service-nodeports", BY_PORT),
    Map("no-endpoint-services", BY_ADDRESS), Map("no-endpoint-nodeports", BY_PORT),
    Map("firewall-ips", BY_ADDRESS),
    Set("hairpin-endpoints", "ipv4_addr . ipv4_addr"),  # endpoint . itself: a pod reaching itself via a Service
    # the flat layout: addresses whose endpoint a data map draws, and which of them masquerade whom
    Set("flat-ips", BY_ADDRESS), Set("flat-nodeports", BY_PORT),
    Set("cluster-ips", BY_ADDRESS),  # ClusterIPs: clients off the cluster are masqueraded
    Set("external-ips", BY_ADDRESS),  # external and load-balancer IPs: every client is masqueraded
    *(Map(endpoints_map(n), " . ".join((*SERVICE_KEY, _draw(n))), ENDPOINT, typeof=True)
      for n in range(1, MAX_FLAT_ENDPOINTS + 1)),
    *(Map(nodeport_endpoints_map(n), " . ".join((*NODEPORT_KEY, _draw(n))), ENDPOINT, typeof=True)
      for n in range(1, MAX_FLAT_ENDPOINTS + 1)),
)}
HOOKS = {  # base chain -> its hook; the endpoint checks see the destination after DNAT, the firewall before
    "filter-prerouting-pre-dnat": Hook("filter", "prerouting", "-110"),
    "filter-output-pre-dnat": Hook("filter", "output", "-110"),
    "filter-input": Hook("filter", "input", "filter"),
    "filter-forward": Hook("filter", "forward", "filter"),
    "filter-output": Hook("filter", "output", "filter"),
    "nat-prerouting": Hook("nat", "prerouting", "dstnat"),
    "nat-output": Hook("nat", "output", "-100"),
    "nat-postrouting": Hook("nat", "postrouting", "srcnat"),
}
HELD_BY_SEVERAL = {"hairpin-endpoints"}  # the one object whose entries several ports may hold at once
DRAWING_CHAINS = {"flat-services", "flat-nodeports"}  # the chains that draw endpoints from the data maps
NEW = Match(CT_STATE, "new")
ANY_PORT_PROTOCOL = Match(L4PROTO, ("tcp", "udp", "sctp"))  # lets nft translate the port of a drawn endpoint
LOCAL_DESTINATION = Match(FIB_DADDR_TYPE, "local")
LOCAL_SOURCE = Match(FIB_SADDR_TYPE, "local")
MARK_FOR_MASQUERADE = jump("mark-for-masquerade")


def base(cluster_cidr: str) -> Fragment:
    """The chains every node has, whatever its Services."""
    mark = names.MASQ_MARK
    not_loopback = Match(IP_DADDR, "127.0.0.0/8", "!=")
    return Fragment(chains={
        "filter-prerouting-pre-dnat": ((NEW, jump("firewall-check")),),
        "filter-output-pre-dnat": ((NEW, jump("firewall-check")),),
        "filter-input": ((NEW, jump("nodeport-endpoints-check")), (NEW, jump("service-endpoints-check"))),
        "filter-forward": ((NEW, jump("service-endpoints-check")),),
        "filter-output": ((NEW, jump("service-endpoints-check")),),
        "nat-prerouting": ((jump("services"),),),
        "nat-output": ((jump("services"),),),
        "nat-postrouting": ((jump("masquerading"),),),
        "mark-for-masquerade": ((SetMark("|", mark),),),
        "masquerading": ((Match(CT_STATUS, "dnat"), Lookup((IP_SADDR, IP_DADDR), "hairpin-endpoints"), Masquerade()),
                         (Match(MARK, 0, "==", mask=mark), RETURN), (SetMark("^", mark),), (Masquerade(),)),
        "reject-chain": ((REJECT,),),
        "services": ((VerdictMap(SERVICE_KEY, "service-ips"),),
                     (Lookup(SERVICE_KEY, "flat-ips"), goto("flat-services")),
                     (LOCAL_DESTINATION, not_loopback, VerdictMap(NODEPORT_KEY, "service-nodeports")),
                     (LOCAL_DESTINATION, not_loopback, Lookup(NODEPORT_KEY, "flat-nodeports"), goto("flat-nodeports"))),
        "flat-services": ((Match(IP_SADDR, cluster_cidr, "!="), Lookup(SERVICE_KEY, "cluster-ips"), MARK_FOR_MASQUERADE),
                          (Lookup(SERVICE_KEY, "external-ips"), MARK_FOR_MASQUERADE),
                          *((ANY_PORT_PROTOCOL, DnatMap((*SERVICE_KEY, _draw(n)), endpoints_map(n)))
                            for n in range(1, MAX_FLAT_ENDPOINTS + 1))),
        "flat-nodeports": ((MARK_FOR_MASQUERADE,),
                           *((ANY_PORT_PROTOCOL, DnatMap((*NODEPORT_KEY, _draw(n)), nodeport_endpoints_map(n)))
                             for n in range(1, MAX_FLAT_ENDPOINTS + 1))),
        "service-endpoints-check": ((VerdictMap(SERVICE_KEY, "no-endpoint-services"),),),
        "nodeport-endpoints-check": ((LOCAL_DESTINATION, VerdictMap(NODEPORT_KEY, "no-endpoint-nodeports")),),
        "firewall-check": ((VerdictMap(SERVICE_KEY, "firewall-ips"),),),
    })


def _send(sp: ServicePort, ep: Endpoint) -> tuple[Term, ...]:
    """To one endpoint: remember the client there (session affinity), then DNAT."""
    remember = (Update(affinity_set(sp, ep), (IP_SADDR,)),) if sp.affinity_seconds else ()
    return (*remember, Dnat(sp.protocol, ep.ip, ep.port))


def _choose(sp: ServicePort, endpoints: list[Endpoint]) -> list[tuple[Term, ...]]:
    """Session affinity first (the endpoint that served this client before), then a random one:
    the first of N with probability 1/N, else the second of the N-1 left with 1/(N-1), ..."""
    rules = [(Lookup((IP_SADDR,), affinity_set(sp, ep)), *_send(sp, ep)) for ep in endpoints if sp.affinity_seconds]
    left = len(endpoints)
    for ep in endpoints[:-1]:
        rules.append((Numgen(left), *_send(sp, ep)))
        left -= 1
    return rules + [_send(sp, endpoints[-1])]


def _external_rules(sp: ServicePort, node: str, cluster_cidr: str) -> list[tuple[Term, ...]]:
    """externalTrafficPolicy Cluster: masquerade, then any endpoint. Local: traffic from pods goes
    on to every endpoint unmasqueraded, the node's own masqueraded, as upstream short-circuits both
    (as if they had gone out to a load balancer and come back); other clients keep their address
    and reach this node's endpoints, or fall through to the drop of the no-endpoint maps."""
    if not sp.external_local:
        return [(MARK_FOR_MASQUERADE,), (goto(service_chain(sp)),)]
    rules = [(Match(IP_SADDR, cluster_cidr), goto(service_chain(sp))),
             (LOCAL_SOURCE, MARK_FOR_MASQUERADE),
             (LOCAL_SOURCE, goto(service_chain(sp)))]
    return rules + ([(goto(local_chain(sp)),)] if sp.local_policy_endpoints(node) else [])


def affinity(name: str, seconds: int | None) -> Set:
    """A set remembering the clients an endpoint served, each for `seconds`."""
    return Set(name, "ipv4_addr", ("dynamic", "timeout"), seconds)


def flat(sp: ServicePort, node: str) -> bool:
    """Whether the port's rules are only elements of the shared maps and sets: where its traffic goes
    does not depend on the client (no session affinity, no Local external policy, no source ranges)
    and each of its addresses has at most MAX_FLAT_ENDPOINTS endpoints."""
    if sp.affinity_seconds or (sp.has_external and (sp.external_local or (sp.source_ranges and sp.load_balancer_ips))):
        return False
    return max(len(sp.internal_endpoints(node)), len(sp.cluster_policy_endpoints()) if sp.has_external else 0) \
        <= MAX_FLAT_ENDPOINTS


def _spread(entries: dict, key: tuple[str, ...], endpoints: list[Endpoint]) -> None:
    """The key's endpoints as the data map's elements: draw i of n goes to the i-th."""
    for i, ep in enumerate(endpoints):
        entries[(*key, str(i))] = (ep.ip, str(ep.port))


def fragment(sp: ServicePort, node: str, cluster_cidr: str) -> Fragment:
    """The chains, map elements and affinity sets of one Service port on one node, decided as
    upstream's syncProxyRules decides them: flat when it can be, else with chains of its own."""
    return _flat(sp, node) if flat(sp, node) else _chained(sp, node, cluster_cidr)


def _flat(sp: ServicePort, node: str) -> Fragment:
    """Elements only: each address's key in flat-ips (and in the set saying whom it masquerades) and
    its endpoints in the data map of their number."""
    entries: dict[str, dict] = {}
    port = (sp.protocol, str(sp.port))
    missing = DROP if sp.reachable else goto("reject-chain")
    internal = sp.internal_endpoints(node)
    if internal:
        key = (sp.cluster_ip, *port)
        _put(entries, key, "flat-ips", "cluster-ips")
        _spread(entries.setdefault(endpoints_map(len(internal)), {}), key, internal)
    else:
        entries.setdefault("no-endpoint-services", {})[(sp.cluster_ip, *port)] = missing
    cluster = sp.cluster_policy_endpoints() if sp.has_external else []
    for ip in (*sp.external_ips, *sp.load_balancer_ips):
        key = (ip, *port)
        if cluster:
            _put(entries, key, "flat-ips", "external-ips")
            _spread(entries.setdefault(endpoints_map(len(cluster)), {}), key, cluster)
        else:
            entries.setdefault("no-endpoint-services", {})[key] = missing
    if sp.node_port:
        key = (sp.protocol, str(sp.node_port))
        if cluster:
            _put(entries, key, "flat-nodeports")
            _spread(entries.setdefault(nodeport_endpoints_map(len(cluster)), {}), key, cluster)
        else:
            entries.setdefault("no-endpoint-nodeports", {})[key] = missing
    reachable = sp.reachable_endpoints(node)
    if reachable:
        entries["hairpin-endpoints"] = {(ep.ip, ep.ip): None for ep in reachable}
    return Fragment(entries=entries)


def _put(entries: dict[str, dict], key: tuple[str, ...], *sets: str) -> None:
    """The key as an element of each of these sets."""
    for name in sets:
        entries.setdefault(name, {})[key] = None


def _chained(sp: ServicePort, node: str, cluster_cidr: str) -> Fragment:
    """Chains of the port's own, where the endpoint depends on the client: its ClusterIP's, its
    external addresses' (applying externalTrafficPolicy), its firewall's."""
    chains: dict[str, Rules] = {}
    entries: dict[str, dict] = {name: {} for name in SHARED}
    sets: dict[str, Set] = {}
    cluster, local = sp.cluster_policy_endpoints(), sp.local_policy_endpoints(node)
    if cluster:
        chains[service_chain(sp)] = tuple(_choose(sp, cluster))
    if local:
        chains[local_chain(sp)] = tuple(_choose(sp, local))
    port = (sp.protocol, str(sp.port))
    # nowhere to go at all: reject; nowhere on this node with a Local policy: drop, as upstream
    missing = DROP if sp.reachable else goto("reject-chain")
    if sp.internal_endpoints(node):
        internal = internal_chain(sp)
        entries["service-ips"][(sp.cluster_ip, *port)] = goto(internal)
        # a client off the cluster (routed to the service range through this node) is
        # masqueraded, so that the reply comes back through this node to be un-DNATed
        masquerade = (Match(IP_DADDR, sp.cluster_ip), Match(dport(sp.protocol), sp.port),
                      Match(IP_SADDR, cluster_cidr, "!="), MARK_FOR_MASQUERADE)
        chains[internal] = (masquerade, *chains[internal])
    else:
        entries["no-endpoint-services"][(sp.cluster_ip, *port)] = missing
    if sp.has_external:
        if sp.reachable:  # even with no endpoint for outside clients: pods and the node short-circuit
            chains[external_chain(sp)] = tuple(_external_rules(sp, node, cluster_cidr))
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                entries["service-ips"][(ip, *port)] = goto(external_chain(sp))
            if sp.node_port:
                entries["service-nodeports"][(sp.protocol, str(sp.node_port))] = goto(external_chain(sp))
        if not sp.external_endpoints(node):  # what the external chain did not translate stops here
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                entries["no-endpoint-services"][(ip, *port)] = missing
            if sp.node_port:
                entries["no-endpoint-nodeports"][(sp.protocol, str(sp.node_port))] = missing
        if sp.source_ranges and sp.load_balancer_ips:
            chains[firewall_chain(sp)] = ((Match(IP_SADDR, tuple(sp.source_ranges), "!="), DROP),)
            for ip in sp.load_balancer_ips:
                entries["firewall-ips"][(ip, *port)] = goto(firewall_chain(sp))
    for ep in sp.reachable_endpoints(node):
        entries["hairpin-endpoints"][(ep.ip, ep.ip)] = None
        if sp.affinity_seconds:
            sets[affinity_set(sp, ep)] = affinity(affinity_set(sp, ep), sp.affinity_seconds)
    return Fragment(chains, {k: v for k, v in entries.items() if v}, sets)


TABLE_OBJECTS = NftTable(TABLE, HOOKS, SHARED)


def declare(everything: Fragment) -> Transaction:
    """A whole new table, for a table that does not exist."""
    return TABLE_OBJECTS.declare(everything)


def replace(everything: Fragment, chains: set[str], sets: dict[str, int | None]) -> Transaction:
    """Every object rewritten in an existing table (given its chains and its sets' timeouts), the
    ones no longer wanted deleted. Affinity sets keep their members unless their timeout changed, and
    the connections conntrack already translated are not touched: a restarted proxy adopts its
    table this way."""
    changed = {n for n, s in everything.sets.items() if n in sets and affinity(n, sets[n]) != s}
    tx = Transaction(TABLE)
    tx.add(TABLE)
    # base chains are made anew, so that one left with another hook or priority (by an older
    # netplane, as upstream moved its filter chains) takes the current one
    for name in HOOKS.keys() & chains:
        tx.flush(Chain(name))
        tx.delete(Chain(name))
    # nft 1.0.6 cannot add a rule reading a `typeof` map it knows only from the kernel ("conflicting
    # protocols specified: tcp vs. th"): the chains reading them are emptied and the maps made anew
    for name in DRAWING_CHAINS & chains:
        tx.flush(Chain(name))
    for obj in SHARED.values():
        tx.add(obj)
        if isinstance(obj, Map) and obj.typeof:
            tx.delete(obj)
            tx.add(obj)
        else:
            tx.flush(obj)
    TABLE_OBJECTS.changes(tx, write_chains=everything.chains, delete_chains=chains - everything.chains.keys(),
                          add_entries=everything.entries, delete_entries={},
                          add_sets={n: s for n, s in everything.sets.items() if n not in sets or n in changed},
                          delete_sets=sets.keys() - everything.sets.keys() - SHARED.keys(), replace_sets=changed)
    return tx


def update(d: Diff) -> Transaction:
    """The incremental transaction for one sync's changes."""
    return TABLE_OBJECTS.update(d)


def render(ports: list[ServicePort], node: str, cluster_cidr: str) -> Transaction:
    """The whole table of one node, as a fresh node loads it."""
    return declare(merge([base(cluster_cidr), *(fragment(sp, node, cluster_cidr) for sp in ports)]))
