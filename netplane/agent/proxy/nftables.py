"""kube-proxy's nftables mode as a pure function: (Services, EndpointSlices) -> one nft script.

The layout and names follow upstream's `pkg/proxy/nftables`: table `ip kube-proxy`, the
`service-ips` verdict map keyed by `daddr . l4proto . dport`, one `service-<hash>-<ns>/<name>/<proto>/<port>`
chain per Service port choosing an endpoint with `numgen random mod N vmap`, one
`endpoint-<hash>-...__<ip>/<port>` chain per endpoint doing the DNAT, the masquerade mark 0x4000, and
`no-endpoint-services` rejecting Services that have no ready endpoint. The script replaces the
whole table in one transaction (`add table; delete table; table {...}`), so a sync is atomic;
sending only the changed elements is the next step (issue 6).
"""
from __future__ import annotations

from dataclasses import dataclass

from netplane import names

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    service: str
    port_name: str
    protocol: str  # lower case: tcp, udp, sctp
    cluster_ip: str
    port: int

    @property
    def id(self) -> str:
        """`ns/name/proto/port-name`, kube-proxy's ServicePortName shape (port number when unnamed)."""
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.port_name or self.port}"

    @property
    def chain(self) -> str:
        return f"service-{names.short_hash(self.id)}-{self.id}"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int

    def chain(self, sp: ServicePort) -> str:
        key = f"{sp.id}__{self.ip}/{self.port}"
        return f"endpoint-{names.short_hash(key)}-{key}"


def service_ports(services: list[dict]) -> list[ServicePort]:
    """Every port of every Service that has a ClusterIP."""
    found = []
    for svc in services:
        spec, meta = svc.get("spec", {}), svc["metadata"]
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        for port in spec.get("ports", []):
            found.append(ServicePort(meta["namespace"], meta["name"], port.get("name", ""),
                                     port.get("protocol", "TCP").lower(), ip, int(port["port"])))
    return sorted(found, key=lambda sp: (sp.namespace, sp.service, sp.protocol, sp.port))


def ready_endpoints(slices: list[dict], sp: ServicePort) -> list[Endpoint]:
    """Ready endpoints of a Service port, from all of its slices, in a stable order."""
    found = set()
    for s in slices:
        meta = s["metadata"]
        if meta.get("namespace") != sp.namespace or meta.get("labels", {}).get(SERVICE_NAME_LABEL) != sp.service:
            continue
        ports = [p for p in s.get("ports") or [] if (p.get("name") or "") == sp.port_name
                 and p.get("protocol", "TCP").lower() == sp.protocol]
        if not ports:
            continue
        for ep in s.get("endpoints") or []:
            if ep.get("conditions", {}).get("ready", True):
                found.update(Endpoint(address, int(ports[0]["port"])) for address in ep["addresses"])
    return sorted(found, key=lambda e: (tuple(int(x) for x in e.ip.split(".")), e.port))


def _base(cluster_cidr: str) -> list[str]:
    mark = f"0x{names.MASQ_MARK:x}"
    return [
        'comment "rules for kube-proxy"',
        f"chain mark-for-masquerade {{ meta mark set meta mark | {mark}; }}",
        "chain masquerading {",
        f"\tmeta mark & {mark} == 0 return",
        f"\tmeta mark set meta mark ^ {mark}",
        "\tmasquerade fully-random",
        "}",
        "chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }",
        "chain nat-output { type nat hook output priority -100; policy accept; jump services; }",
        "chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }",
        "chain filter-input { type filter hook input priority -110; policy accept; ct state new jump service-endpoints-check; }",
        "chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; }",
        "chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; }",
        "chain reject-chain { reject; }",
        "chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }",
        "chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }",
    ]


def _map(name: str, elements: list[str]) -> list[str]:
    lines = [f"map {name} {{", "\ttype ipv4_addr . inet_proto . inet_service : verdict"]
    if elements:
        lines.append("\telements = { " + ",\n\t\t".join(elements) + " }")
    return lines + ["}"]


def _service_chain(sp: ServicePort, endpoints: list[Endpoint], cluster_cidr: str) -> list[str]:
    choices = ", ".join(f"{i} : goto {ep.chain(sp)}" for i, ep in enumerate(endpoints))
    return [
        f"chain {sp.chain} {{",
        f"\tip daddr {sp.cluster_ip} {sp.protocol} dport {sp.port} ip saddr != {cluster_cidr} jump mark-for-masquerade",
        f"\tnumgen random mod {len(endpoints)} vmap {{ {choices} }}",
        "}",
    ]


def _endpoint_chain(sp: ServicePort, ep: Endpoint) -> list[str]:
    return [
        f"chain {ep.chain(sp)} {{",
        f"\tip saddr {ep.ip} jump mark-for-masquerade",
        f"\tmeta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}",
        "}",
    ]


def render(services: list[dict], slices: list[dict], cluster_cidr: str) -> str:
    """The whole `ip kube-proxy` table as one atomic nft transaction."""
    body = _base(cluster_cidr)
    with_endpoints, without = [], []
    chains: list[str] = []
    for sp in service_ports(services):
        key = f"{sp.cluster_ip} . {sp.protocol} . {sp.port}"
        endpoints = ready_endpoints(slices, sp)
        if not endpoints:
            without.append(f"{key} : goto reject-chain")
            continue
        with_endpoints.append(f"{key} : goto {sp.chain}")
        chains += _service_chain(sp, endpoints, cluster_cidr)
        for ep in endpoints:
            chains += _endpoint_chain(sp, ep)
    body += _map("service-ips", with_endpoints) + _map("no-endpoint-services", without) + chains
    table = f"ip {names.NFT_TABLE}"
    return "\n".join([f"add table {table}", f"delete table {table}", f"table {table} {{"]
                     + ["\t" + line for line in body] + ["}", ""])
