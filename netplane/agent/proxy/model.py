"""What kube-proxy makes of Services and EndpointSlices, independent of iptables or nftables: one
ServicePort per port of a Service, with its addresses (ClusterIP, NodePort, external and load
balancer IPs), its policies, and the endpoints each kind of traffic may use on this node.

Endpoint choice follows upstream's `CategorizeEndpoints`: ready endpoints; when none is ready,
the serving-and-terminating ones (so a rolling update does not drop traffic). The Cluster policy
uses them all, the Local policy this node's; internalTrafficPolicy picks the policy of ClusterIP
traffic, externalTrafficPolicy that of NodePort, external-IP and load-balancer traffic, except that
pods and the node itself are always sent on with the Cluster policy (upstream's short-circuit: as if
they had gone out to a load balancer and come back).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from netplane import names

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

    @cached_property
    def id(self) -> str:
        """`ns/name/proto/port-name`, kube-proxy's ServicePortName shape (port number when unnamed)."""
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.port_name or self.port}"

    @cached_property
    def hash(self) -> str:
        return names.short_hash(self.id)

    @property
    def has_external(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Upstream's UsesClusterEndpoints: the Cluster policy serves ClusterIP traffic, or external
        traffic, or (with externalTrafficPolicy Local) the pods and the node short-circuited to it."""
        return not self.internal_local or self.has_external

    def cluster_policy_endpoints(self) -> list[Endpoint]:
        """The endpoints of the Cluster traffic policy: every usable one, on any node."""
        return usable(list(self.endpoints)) if self.uses_cluster_endpoints else []

    def local_policy_endpoints(self, node: str) -> list[Endpoint]:
        """The endpoints of the Local traffic policy: this node's usable ones."""
        if not (self.internal_local or (self.external_local and self.has_external)):
            return []
        return usable([e for e in self.endpoints if e.node == node])

    def internal_endpoints(self, node: str) -> list[Endpoint]:
        """The endpoints traffic to the ClusterIP may go to from this node (internalTrafficPolicy)."""
        return self.local_policy_endpoints(node) if self.internal_local else self.cluster_policy_endpoints()

    def external_endpoints(self, node: str) -> list[Endpoint]:
        """The endpoints a NodePort, external or load-balancer IP sends to from this node
        (externalTrafficPolicy); pods and the node itself are short-circuited to the Cluster policy's."""
        return self.local_policy_endpoints(node) if self.external_local else self.cluster_policy_endpoints()

    @property
    def reachable(self) -> bool:
        """Upstream's hasEndpoints: a usable endpoint somewhere in the cluster."""
        return bool(usable(list(self.endpoints)))

    def reachable_endpoints(self, node: str) -> list[Endpoint]:
        """Every endpoint this node's rules may DNAT to, whatever the source (upstream's
        allLocallyReachableEndpoints), in order."""
        return list(dict.fromkeys(self.cluster_policy_endpoints() + self.local_policy_endpoints(node)))


def usable(endpoints: list[Endpoint]) -> list[Endpoint]:
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


ServiceKey = tuple[str, str]  # (namespace, name)


def _endpoints(slices: list[dict], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The endpoints of one Service port from the Service's own slices."""
    found: dict[tuple[str, int], Endpoint] = {}
    for s in slices:
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


def ports_of(svc: dict, slices: list[dict]) -> list[ServicePort]:
    """Every port kube-proxy programs for one Service (none when headless or ExternalName)."""
    spec, meta = svc.get("spec", {}), svc["metadata"]
    ip = spec.get("clusterIP")
    if not ip or ip == "None" or spec.get("type") == "ExternalName":
        return []
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds", DEFAULT_AFFINITY_SECONDS))
    ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    lb_ips = tuple(i["ip"] for i in ingress if i.get("ip")) if spec.get("type") == "LoadBalancer" else ()
    found = []
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
            endpoints=_endpoints(slices, name, protocol),
        ))
    return found


def slice_owner(eps: dict) -> ServiceKey | None:
    meta = eps["metadata"]
    service = meta.get("labels", {}).get(names.SERVICE_NAME_LABEL)
    return (meta.get("namespace", ""), service) if service else None


def service_ports(services: list[dict], slices: list[dict]) -> list[ServicePort]:
    """Every port of every Service that kube-proxy programs, in a stable order."""
    by_service: dict[ServiceKey, list[dict]] = {}
    for s in slices:
        owner = slice_owner(s)
        if owner:
            by_service.setdefault(owner, []).append(s)
    found = [sp for svc in services
             for sp in ports_of(svc, by_service.get((svc["metadata"]["namespace"], svc["metadata"]["name"]), []))]
    return sorted(found, key=lambda sp: (sp.namespace, sp.service, sp.protocol, sp.port))


class ServiceTracker:
    """The ServicePorts of all Services, kept current from Service and EndpointSlice events: a sync
    recomputes only the Services an event touched (upstream's service and endpoints change trackers)."""

    def __init__(self) -> None:
        self.services: dict[ServiceKey, dict] = {}
        self.slices: dict[ServiceKey, dict[str, dict]] = {}
        self._ports: dict[ServiceKey, list[ServicePort]] = {}
        self._dirty: set[ServiceKey] = set()

    async def on_service(self, kind: str, obj: dict, old: dict | None) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind == "DELETED":
            self.services.pop(key, None)
        else:
            self.services[key] = obj
        self._dirty.add(key)

    async def on_slice(self, kind: str, obj: dict, old: dict | None) -> None:
        name = obj["metadata"]["name"]
        for owner in {slice_owner(old) if old else None, slice_owner(obj)} - {None}:
            self.slices.get(owner, {}).pop(name, None)
            self._dirty.add(owner)
        owner = slice_owner(obj)
        if owner and kind != "DELETED":
            self.slices.setdefault(owner, {})[name] = obj

    def ports(self) -> list[ServicePort]:
        for key in self._dirty:
            svc = self.services.get(key)
            self._ports.pop(key, None)
            if svc is not None:
                self._ports[key] = ports_of(svc, list(self.slices.get(key, {}).values()))
            if not self.slices.get(key, True):
                del self.slices[key]
        self._dirty.clear()
        return [sp for found in self._ports.values() for sp in found]


def udp_destinations(ports: list[ServicePort], node: str) -> set[tuple[str, int, str]]:
    """(service address, port, endpoint IP) of every UDP destination this node's rules translate to."""
    found = set()
    for sp in ports:
        if sp.protocol != "udp":
            continue
        found |= {(sp.cluster_ip, sp.port, e.ip) for e in sp.internal_endpoints(node)}
        if not sp.reachable:
            continue
        # with externalTrafficPolicy Local, pods and the node reach any endpoint (short-circuit)
        external = sp.reachable_endpoints(node) if sp.external_local else sp.external_endpoints(node)
        for address in (*sp.external_ips, *sp.load_balancer_ips):
            found |= {(address, sp.port, e.ip) for e in external}
        if sp.node_port:
            found |= {("", sp.node_port, e.ip) for e in external}
    return found
