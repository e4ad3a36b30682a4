"""kube-proxy's nftables mode as a pure function: Service ports (model.py) -> one nft script.

The layout and names follow upstream's `pkg/proxy/nftables`: table `ip kube-proxy`; the verdict
maps `service-ips` (ClusterIPs, external IPs and load-balancer IPs, keyed `daddr . l4proto . dport`)
and `service-nodeports` (keyed `l4proto . dport`, for any local address of the node); per Service
port a `service-<hash>-<ns>/<name>/<proto>/<port>` chain choosing among the cluster endpoints with
`numgen random mod N vmap`, and, when it has NodePorts or external addresses, an
`external-<hash>-...` chain that applies externalTrafficPolicy and chooses among the external
endpoints; one `endpoint-<hash>-...__<ip>/<port>` chain per endpoint doing the DNAT (and
remembering the client in its `affinity-...` set with sessionAffinity: ClientIP); the masquerade
mark 0x4000; `no-endpoint-services` / `no-endpoint-nodeports` rejecting (or, with a Local policy
and no local endpoint, dropping) traffic that has nowhere to go; `firewall-ips` enforcing
loadBalancerSourceRanges. The script replaces the whole table in one transaction
(`add table; delete table; table {...}`), so a sync is atomic.
"""
from __future__ import annotations

from netplane import names
from netplane.agent.proxy.model import Endpoint, ServicePort, usable


def service_chain(sp: ServicePort) -> str:
    return f"service-{sp.hash}-{sp.id}"


def external_chain(sp: ServicePort) -> str:
    return f"external-{sp.hash}-{sp.id}"


def firewall_chain(sp: ServicePort) -> str:
    return f"firewall-{sp.hash}-{sp.id}"


def _endpoint_key(sp: ServicePort, ep: Endpoint) -> str:
    key = f"{sp.id}__{ep.ip}/{ep.port}"
    return f"{names.short_hash(key)}-{key}"


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return f"endpoint-{_endpoint_key(sp, ep)}"


def affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    return f"affinity-{_endpoint_key(sp, ep)}"


def _base() -> list[str]:
    mark = f"0x{names.MASQ_MARK:x}"
    hooks = [
        ("filter-prerouting", "filter", "prerouting", "-110", ["ct state new jump firewall-check"]),
        ("filter-input", "filter", "input", "-110",
         ["ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"]),
        ("filter-forward", "filter", "forward", "-110", ["ct state new jump service-endpoints-check"]),
        ("filter-output", "filter", "output", "-110",
         ["ct state new jump service-endpoints-check", "ct state new jump firewall-check"]),
        ("nat-prerouting", "nat", "prerouting", "dstnat", ["jump services"]),
        ("nat-output", "nat", "output", "-100", ["jump services"]),
        ("nat-postrouting", "nat", "postrouting", "srcnat", ["jump masquerading"]),
    ]
    lines = ['comment "rules for kube-proxy"']
    for name, kind, hook, priority, rules in hooks:
        lines.append(f"chain {name} {{ type {kind} hook {hook} priority {priority}; policy accept; "
                     + "".join(f"{r}; " for r in rules) + "}")
    return lines + [
        f"chain mark-for-masquerade {{ meta mark set meta mark | {mark}; }}",
        "chain masquerading {",
        f"\tmeta mark & {mark} == 0 return",
        f"\tmeta mark set meta mark ^ {mark}",
        "\tmasquerade fully-random",
        "}",
        "chain reject-chain { reject; }",
        "chain services {",
        "\tip daddr . meta l4proto . th dport vmap @service-ips",
        "\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        "}",
        "chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }",
        "chain nodeport-endpoints-check { fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports; }",
        "chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }",
    ]


def _map(name: str, key: str, elements: list[str]) -> list[str]:
    lines = [f"map {name} {{", f"\ttype {key} : verdict"]
    if elements:
        lines.append("\telements = { " + ",\n\t\t".join(elements) + " }")
    return lines + ["}"]


def _choose(sp: ServicePort, endpoints: list[Endpoint]) -> list[str]:
    """Session affinity first (the endpoint that served this client before), then a random one."""
    lines = [f"\tip saddr @{affinity_set(sp, ep)} goto {endpoint_chain(sp, ep)}" for ep in endpoints
             if sp.affinity_seconds]
    choices = ", ".join(f"{i} : goto {endpoint_chain(sp, ep)}" for i, ep in enumerate(endpoints))
    return lines + [f"\tnumgen random mod {len(endpoints)} vmap {{ {choices} }}"]


def _service_chain(sp: ServicePort, endpoints: list[Endpoint], cluster_cidr: str) -> list[str]:
    masquerade = f"\tip daddr {sp.cluster_ip} {sp.protocol} dport {sp.port} ip saddr != {cluster_cidr} jump mark-for-masquerade"
    return [f"chain {service_chain(sp)} {{", masquerade, *_choose(sp, endpoints), "}"]


def _external_chain(sp: ServicePort, endpoints: list[Endpoint], cluster_ok: bool, cluster_cidr: str) -> list[str]:
    """externalTrafficPolicy Cluster: masquerade, any endpoint. Local: keep the client's address and
    use this node's endpoints, except for pods and the node itself, which are treated as cluster
    traffic (as upstream does, so that they reach the Service from any node)."""
    lines = [f"chain {external_chain(sp)} {{"]
    if sp.external_local:
        if cluster_ok:
            lines += [f"\tip saddr {cluster_cidr} goto {service_chain(sp)}",
                      "\tfib saddr type local jump mark-for-masquerade",
                      f"\tfib saddr type local goto {service_chain(sp)}"]
    else:
        lines.append("\tjump mark-for-masquerade")
    return lines + (_choose(sp, endpoints) if endpoints else ["\tdrop"]) + ["}"]


def _endpoint_chain(sp: ServicePort, ep: Endpoint) -> list[str]:
    lines = [f"chain {endpoint_chain(sp, ep)} {{", f"\tip saddr {ep.ip} jump mark-for-masquerade"]
    if sp.affinity_seconds:
        lines.append(f"\tupdate @{affinity_set(sp, ep)} {{ ip saddr }}")
    return lines + [f"\tmeta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}", "}"]


def _affinity_set(sp: ServicePort, ep: Endpoint) -> list[str]:
    return [f"set {affinity_set(sp, ep)} {{ type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_seconds}s; }}"]


def _firewall_chain(sp: ServicePort) -> list[str]:
    allowed = ", ".join(sp.source_ranges)
    return [f"chain {firewall_chain(sp)} {{", f"\tip saddr != {{ {allowed} }} drop", "}"]


def render(ports: list[ServicePort], node: str, cluster_cidr: str) -> str:
    """The whole `ip kube-proxy` table of one node as one atomic nft transaction."""
    service_ips, nodeports, no_endpoints, no_nodeports, firewalls = [], [], [], [], []
    chains: list[str] = []
    sets: list[str] = []
    for sp in ports:
        cluster = sp.cluster_endpoints(node)
        external = sp.external_endpoints(node)
        any_endpoint = bool(usable(list(sp.endpoints)))
        key = f"{sp.protocol} . {sp.port}"
        if cluster:
            service_ips.append(f"{sp.cluster_ip} . {key} : goto {service_chain(sp)}")
            chains += _service_chain(sp, cluster, cluster_cidr)
        else:
            no_endpoints.append(f"{sp.cluster_ip} . {key} : goto reject-chain")
        if sp.has_external:
            chains += _external_chain(sp, external, bool(cluster), cluster_cidr)
            # nowhere to go at all: reject; nowhere on this node with a Local policy: drop, as upstream
            missing = "drop" if any_endpoint else "goto reject-chain"
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                target = service_ips if external else no_endpoints
                target.append(f"{ip} . {key} : " + (f"goto {external_chain(sp)}" if external else missing))
            if sp.node_port:
                entry = f"{sp.protocol} . {sp.node_port} : "
                (nodeports if external else no_nodeports).append(
                    entry + (f"goto {external_chain(sp)}" if external else missing))
            if sp.source_ranges and sp.load_balancer_ips:
                chains += _firewall_chain(sp)
                firewalls += [f"{ip} . {key} : goto {firewall_chain(sp)}" for ip in sp.load_balancer_ips]
        for ep in {e: None for e in cluster + external}:
            chains += _endpoint_chain(sp, ep)
            if sp.affinity_seconds:
                sets += _affinity_set(sp, ep)
    by_address = "ipv4_addr . inet_proto . inet_service"
    body = (_base() + sets
            + _map("service-ips", by_address, service_ips) + _map("service-nodeports", "inet_proto . inet_service", nodeports)
            + _map("no-endpoint-services", by_address, no_endpoints)
            + _map("no-endpoint-nodeports", "inet_proto . inet_service", no_nodeports)
            + _map("firewall-ips", by_address, firewalls) + chains)
    table = f"ip {names.NFT_TABLE}"
    return "\n".join([f"add table {table}", f"delete table {table}", f"table {table} {{"]
                     + ["\t" + line for line in body] + ["}", ""])
