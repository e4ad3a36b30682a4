"""What to trace and where to look: SRC and DEST resolved through the lab's API, the namespaces to
watch taken from the lab (its nodes, its underlay, pod namespaces by name).

SRC is a pod (`[pod/]NAME`), a node (`node/NAME`) or the underlay client (`underlay/client`, a
host outside the cluster). DEST is a pod name, `svc/NAME[:PORT]` (PORT a number
or a port name; by default the Service's first port of the probe's protocol) or an address
`IP[:PORT]`: a pod's, a ClusterIP, a node's (with a NodePort: that Service), a Service's external or
load-balancer IP, or any other. For a Service every endpoint pod of its EndpointSlices is watched,
since kube-proxy picks one at random.
"""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from netplane import names
from netplane.agent.policy import model
from netplane.agent.policy.enforcer import cluster as policy_cluster
from netplane.agent.proxy.model import ServicePort, service_ports
from netplane.kernel import netns
from netplane.trace.hops import UNDERLAY
from netplane.trace.probe import PROTOCOLS

DEFAULT_PORT = 8080  # the echo server's HTTP/UDP port in the demo app
SERVICE_PREFIXES = ("svc/", "service/", "services/")
POD_PREFIXES = ("pod/", "po/", "pods/")
NODE_PREFIXES = ("node/", "nodes/", "no/")
CLIENT_NAMES = ("underlay/client",)


class TraceError(ValueError):
    """A trace that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Dest:
    kind: str               # pod | service | ip
    name: str
    port: str | None = None  # a Service port's number or name
    namespace: str | None = None  # a Service's, when not the trace's (svc/NS/NAME or svc/NAME.NS)


def parse_dest(text: str) -> Dest:
    if text.startswith(SERVICE_PREFIXES):
        rest = text.split("/", 1)[1]
        name, _, port = rest.partition(":")
        namespace, _, name = name.rpartition("/")
        if not namespace and "." in name:  # as a DNS name says it: kube-dns.kube-system
            name, namespace = name.split(".", 1)
        if not name or not namespace and "/" in rest.partition(":")[0]:
            raise TraceError(f"{text!r}: give a Service name, as svc/NAME[:PORT], svc/NAMESPACE/NAME[:PORT] "
                             "or svc/NAME.NAMESPACE[:PORT]")
        return Dest("service", name, port or None, namespace or None)
    if text.startswith(POD_PREFIXES):
        return Dest("pod", text.split("/", 1)[1])
    address, colon, port = text.partition(":")
    try:
        ip = str(ipaddress.IPv4Address(address))
    except ValueError:
        return Dest("pod", text)
    if colon and not port.isdigit():
        raise TraceError(f"{text!r}: the port after the address must be a number")
    return Dest("ip", ip, port or None)


@dataclass(frozen=True)
class Place:
    """A namespace to capture in, and the node it belongs to (or "underlay")."""

    netns: str
    node: str


@dataclass(frozen=True)
class Target:
    title: str
    proto: str
    src_ip: str
    source: Place                   # the source pod's namespace
    dst_ip: str
    dport: int | None
    destinations: tuple[str, ...]   # namespaces where the request counts as delivered
    watch: tuple[Place, ...]
    node_netns: tuple[Place, ...]   # the nodes' namespaces (for their conntrack)
    switches: tuple[Place, ...] = ()  # the namespaces that hold bridges: the nodes and the underlay
    services: tuple[ServicePort, ...] = ()  # the lab's Service ports, to name the rules the probe hits
    policies: model.Cluster | None = None  # the lab's pods, namespaces and NetworkPolicies, to say why one drops


def service_port(svc: dict, spec: str | None, proto: str | None) -> dict:
    """The Service port DEST names (by number or name), or its first port of the protocol."""
    ports = svc.get("spec", {}).get("ports") or []
    name = svc["metadata"]["name"]
    listing = ", ".join(f"{p.get('name') or '-'} {p['port']}/{p.get('protocol', 'TCP')}" for p in ports) or "none"
    if spec is not None:
        found = [p for p in ports if str(p["port"]) == spec or p.get("name") == spec]
        if not found:
            raise TraceError(f"service {name!r} has no port {spec!r} (ports: {listing})")
        port = found[0]
        if proto not in (None, port.get("protocol", "TCP").lower()):
            raise TraceError(f"port {spec} of service {name!r} is {port.get('protocol', 'TCP')}, not {proto}")
        return port
    want = proto or "tcp"
    found = [p for p in ports if p.get("protocol", "TCP").lower() == want]
    if not found:
        raise TraceError(f"service {name!r} has no {want.upper()} port (ports: {listing})")
    return found[0]


def slice_endpoints(slices: list[dict], port: dict) -> list[dict]:
    """Ready endpoints of a Service port, as {"ip", "port", "pod", "namespace", "node"}."""
    found = []
    want = (port.get("name") or "", port.get("protocol", "TCP"))
    for s in slices:
        ports = [p for p in s.get("ports") or [] if ((p.get("name") or ""), p.get("protocol", "TCP")) == want]
        if not ports or ports[0].get("port") is None:
            continue
        for ep in s.get("endpoints") or []:
            if not ep.get("conditions", {}).get("ready", True):
                continue
            ref = ep.get("targetRef") or {}
            for address in ep.get("addresses", []):
                found.append({"ip": address, "port": int(ports[0]["port"]), "node": ep.get("nodeName", ""),
                              "pod": ref.get("name") if ref.get("kind") == "Pod" else None,
                              "namespace": ref.get("namespace") or s["metadata"].get("namespace", "default")})
    return found


def _service_addresses(svc: dict) -> set[str]:
    """The addresses a Service answers on besides NodePorts: ClusterIP, external and load-balancer IPs."""
    spec = svc.get("spec", {})
    ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    return ({spec.get("clusterIP")} | set(spec.get("externalIPs") or ()) | {i["ip"] for i in ingress if i.get("ip")}) - {None}


def _unique(places: list[Place]) -> tuple[Place, ...]:
    seen: dict[str, Place] = {}
    for p in places:
        seen.setdefault(p.netns, p)
    return tuple(seen.values())


class Resolver:
    """Resolves SRC and DEST with an API client for one lab."""

    def __init__(self, client, lab) -> None:
        self.client, self.lab = client, lab
        self.prefix = names.lab_prefix(lab.name)

    def pod_place(self, pod: dict) -> Place:
        meta = pod["metadata"]
        return Place(names.pod_netns(self.prefix, meta.get("namespace", "default"), meta["name"]),
                     pod.get("spec", {}).get("nodeName") or "")

    async def source(self, name: str, namespace: str) -> tuple[str, str, Place]:
        """(label, address, namespace) of SRC: a pod, node/NAME or the underlay client."""
        if name in CLIENT_NAMES:
            return "underlay/client", self.lab.client_ip, Place(names.client_netns(self.lab.name), UNDERLAY)
        if name.startswith(NODE_PREFIXES):
            node = name.split("/", 1)[1]
            if node not in self.lab.nodes:
                raise TraceError(f"no node {node!r} in lab {self.lab.name} (nodes: {', '.join(self.lab.nodes)})")
            return f"node/{node}", self.lab.node_ip(node), Place(names.node_netns(self.lab.name, node), node)
        pod = await self.client.get("pods", name.split("/", 1)[1] if name.startswith(POD_PREFIXES) else name,
                                    namespace)
        place = self.pod_place(pod)
        ip = pod.get("status", {}).get("podIP")
        if not ip or not netns.exists(place.netns):
            raise TraceError(f"pod {namespace}/{pod['metadata']['name']} has no network yet (is it Running?)")
        return f"{namespace}/{pod['metadata']['name']}", ip, place

    async def destination(self, dest: Dest, namespace: str, proto: str | None, port: int | None
                          ) -> tuple[str, str, str, int | None, list[Place]]:
        """(label, protocol, IP and port to send to, the places where the request counts as delivered)."""
        if dest.kind == "service":
            svc = await self.client.get("services", dest.name, dest.namespace or namespace)
            return await self._service(svc, dest.port if dest.port is not None else
                                       (str(port) if port is not None and proto != "icmp" else None), proto)
        proto = proto or "tcp"
        if dest.port is not None:
            port = int(dest.port)
        dport = None if proto == "icmp" else (port or DEFAULT_PORT)
        if dest.kind == "pod":
            pod = await self.client.get("pods", dest.name, namespace)
            ip = pod.get("status", {}).get("podIP")
            if not ip:
                raise TraceError(f"pod {namespace}/{dest.name} has no IP yet (is it Running?)")
            return f"pod/{dest.name}", proto, ip, dport, [self.pod_place(pod)]
        return await self._address(dest.name, proto, dport)

    async def _service(self, svc: dict, spec: str | None, proto: str | None, address: str | None = None):
        """A Service port's label, protocol, address (its ClusterIP unless another of its own) and endpoints."""
        ip = address or svc.get("spec", {}).get("clusterIP")
        name = svc["metadata"]["name"]
        if not ip or ip == "None":
            raise TraceError(f"service {name!r} has no ClusterIP (headless); trace one of its pods instead")
        if proto == "icmp":
            port, dport = {"name": None, "protocol": "TCP"}, None
            ports = svc.get("spec", {}).get("ports") or []
            port = ports[0] if ports else port
        else:
            port = service_port(svc, spec, proto)
            proto, dport = port.get("protocol", "TCP").lower(), int(port["port"])
        slices = (await self.client.list("endpointslices", svc["metadata"].get("namespace", "default"),
                                         label_selector=f"{names.SERVICE_NAME_LABEL}={name}"))["items"]
        places = [Place(names.pod_netns(self.prefix, ep["namespace"], ep["pod"]), ep["node"])
                  for ep in slice_endpoints(slices, port) if ep["pod"]]
        label = f"svc/{name}" + (f":{port.get('name') or port['port']}" if dport is not None else "")
        return label, proto, ip, dport, places

    async def _address(self, ip: str, proto: str, dport: int | None):
        pods = [p for p in (await self.client.list("pods"))["items"] if p.get("status", {}).get("podIP") == ip]
        if pods:
            return f"pod/{pods[0]['metadata']['name']}", proto, ip, dport, [self.pod_place(p) for p in pods]
        all_services = (await self.client.list("services"))["items"]
        services = [s for s in all_services if ip in _service_addresses(s)]
        if services:
            return await self._service(services[0], str(dport) if dport is not None else None, proto, ip)
        nodes = [n for n in self.lab.nodes if self.lab.node_ip(n) == ip]
        by_node_port = [(s, p) for s in all_services for p in s.get("spec", {}).get("ports") or []
                        if nodes and dport is not None and p.get("nodePort") == dport
                        and p.get("protocol", "TCP").lower() == proto]
        if by_node_port:
            svc, p = by_node_port[0]
            label, proto, _, _, places = await self._service(svc, str(p["port"]), proto)
            return f"{label} nodePort on node/{nodes[0]}", proto, ip, dport, places
        return (f"node/{nodes[0]}" if nodes else ip), proto, ip, dport, [
            Place(names.node_netns(self.lab.name, n), n) for n in nodes]

    async def target(self, source: str, dest_text: str, namespace: str, proto: str | None,
                     port: int | None) -> Target:
        if proto is not None and proto not in PROTOCOLS:
            raise TraceError(f"protocol {proto!r}: choose one of {', '.join(PROTOCOLS)}")
        src_label, src_ip, src = await self.source(source, namespace)
        label, proto, dst_ip, dport, dests = await self.destination(parse_dest(dest_text), namespace, proto, port)
        dests = [d for d in dests if netns.exists(d.netns)]
        nodes = [Place(names.node_netns(self.lab.name, n), n) for n in self.lab.nodes]
        underlay = Place(names.underlay_netns(self.lab.name), UNDERLAY)
        where = f"{dst_ip}:{dport}" if dport is not None else dst_ip
        title = f"{src_label} ({src_ip}) -> {label} ({where}) {proto}"
        services, slices, pods, spaces, policies = await asyncio.gather(*(self.client.list(plural) for plural in (
            "services", "endpointslices", "pods", "namespaces", "networkpolicies")))
        return Target(title, proto, src_ip, src, dst_ip, dport, tuple(d.netns for d in dests),
                      _unique([src, *nodes, underlay, *dests]), tuple(nodes), (*nodes, underlay),
                      tuple(service_ports(services["items"], slices["items"])),
                      policy_cluster(pods["items"], spaces["items"], policies["items"]))
