"""What kube-proxy makes of Services and EndpointSlices, independent of iptables or nftables: one
ServicePort per port of a Service, with its addresses (ClusterIP, NodePort, external and load
balancer IPs), its policies, and the endpoints each kind of traffic may use on this node.

Endpoint choice follows upstream's `CategorizeEndpoints`: ready endpoints; when none is ready,
the serving-and-terminating ones (so a rolling update does not drop traffic); with
internalTrafficPolicy Local only this node's for cluster traffic, with externalTrafficPolicy Local
only this node's for external traffic (NodePort, external and load-balancer IPs).
"""
from __future__ import annotations

from dataclasses import dataclass

from netplane import names

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_SECONDS = 10800


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    service: str
    port_name: str
    protocol: str  # lower case: tcp, udp, sctp
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    affinity_seconds: int = 0  # 0: no session affinity
    external_local: bool = False
    internal_local: bool = False
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def id(self) -> str:
        """`ns/name/proto/port-name`, kube-proxy's ServicePortName shape (port number when unnamed)."""
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.port_name or self.port}"

    @property
    def hash(self) -> str:
        return names.short_hash(self.id)

    @property
    def has_external(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    def cluster_endpoints(self, node: str) -> list[Endpoint]:
        """The endpoints traffic to the ClusterIP may go to from this node."""
        return usable([e for e in self.endpoints if not self.internal_local or e.node == node])

    def external_endpoints(self, node: str) -> list[Endpoint]:
        """The endpoints traffic to a NodePort, external or load-balancer IP may go to from this node."""
        return usable([e for e in self.endpoints if not self.external_local or e.node == node])


def usable(endpoints: list[Endpoint]) -> list[Endpoint]:
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def _endpoints(slices: list[dict], namespace: str, service: str, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    found: dict[tuple[str, int], Endpoint] = {}
    for s in slices:
        meta = s["metadata"]
        if meta.get("namespace") != namespace or meta.get("labels", {}).get(SERVICE_NAME_LABEL) != service:
            continue
        ports = [p for p in s.get("ports") or [] if (p.get("name") or "") == port_name
                 and p.get("protocol", "TCP").lower() == protocol and p.get("port") is not None]
        if not ports:
            continue
        for ep in s.get("endpoints") or []:
            c = ep.get("conditions", {})
            ready = c.get("ready", True) is not False
            for address in ep.get("addresses", []):
                found[(address, int(ports[0]["port"]))] = Endpoint(
                    address, int(ports[0]["port"]), ep.get("nodeName") or "", ready,
                    c.get("serving", ready) is not False, bool(c.get("terminating", False)))
    return tuple(sorted(found.values(), key=lambda e: (tuple(int(x) for x in e.ip.split(".")), e.port)))


def service_ports(services: list[dict], slices: list[dict]) -> list[ServicePort]:
    """Every port of every Service that kube-proxy programs (not headless, not ExternalName)."""
    found = []
    for svc in services:
        spec, meta = svc.get("spec", {}), svc["metadata"]
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
            affinity = int(config.get("timeoutSeconds", DEFAULT_AFFINITY_SECONDS))
        ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        lb_ips = tuple(i["ip"] for i in ingress if i.get("ip")) if spec.get("type") == "LoadBalancer" else ()
        for port in spec.get("ports", []):
            protocol = port.get("protocol", "TCP").lower()
            name = port.get("name") or ""
            found.append(ServicePort(
                meta["namespace"], meta["name"], name, protocol, ip, int(port["port"]),
                node_port=int(port.get("nodePort") or 0) if spec.get("type") in ("NodePort", "LoadBalancer") else 0,
                external_ips=tuple(spec.get("externalIPs") or ()),
                load_balancer_ips=lb_ips,
                source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()),
                affinity_seconds=affinity,
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                endpoints=_endpoints(slices, meta["namespace"], meta["name"], name, protocol),
            ))
    return sorted(found, key=lambda sp: (sp.namespace, sp.service, sp.protocol, sp.port))


def udp_destinations(ports: list[ServicePort], node: str) -> set[tuple[str, int, str]]:
    """(service address, port, endpoint IP) of every UDP destination this node's rules translate to."""
    found = set()
    for sp in ports:
        if sp.protocol != "udp":
            continue
        found |= {(sp.cluster_ip, sp.port, e.ip) for e in sp.cluster_endpoints(node)}
        external = sp.external_endpoints(node)
        for address in (*sp.external_ips, *sp.load_balancer_ips):
            found |= {(address, sp.port, e.ip) for e in external}
        if sp.node_port:
            found |= {("", sp.node_port, e.ip) for e in external}
    return found
