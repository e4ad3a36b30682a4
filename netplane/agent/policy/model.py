"""What NetworkPolicies mean, independent of how a kernel enforces them: the API objects (Pods,
Namespaces, NetworkPolicies) read into values, and the judgement of one connection as the API
reference states it.

- A pod is isolated for a direction when a policy selecting it has that direction in policyTypes;
  an isolated pod's connections in that direction need a rule of one of those policies to allow them
  (policies add up: a union). A connection needs both the source's egress and the destination's
  ingress to allow it; replies of an allowed connection pass.
- A rule allows when one of its peers and one of its ports match (no peers: any peer; no ports: any
  port). A peer is pods (podSelector in the policy's namespace; namespaceSelector alone: every pod of
  those namespaces; both in one peer: those pods of those namespaces) or an ipBlock (its cidr but not
  its excepts), which is matched against pod addresses too.
- A port is a protocol with a number, a number range (endPort) or a name, which is resolved against
  the destination pod's container ports; a port without protocol is TCP.
- Traffic from the node a pod runs on to it is always allowed (kubelet probes); pods on the host
  network are never selected.
"""
from __future__ import annotations

import ipaddress
from functools import cached_property
from dataclasses import dataclass, field

from netplane.api.objects import matches

INGRESS, EGRESS = "Ingress", "Egress"


def selected(selector: dict, labels: dict[str, str]) -> bool:
    """A policy's LabelSelector as LabelSelectorAsSelector reads it: an empty one selects everything
    (api.objects.matches, for workloads, whose selectors may not be empty, selects nothing then)."""
    return not (selector.get("matchLabels") or selector.get("matchExpressions")) or matches(selector, labels)
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    node: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, str, int], ...] = ()  # container ports by name: (name, protocol, number)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((n for p, proto, n in self.ports if p == name and proto == protocol), None)


@dataclass(frozen=True)
class Port:
    protocol: str  # TCP, UDP, SCTP
    port: int | str | None = None  # None: every port of the protocol; a str: a container port's name
    end_port: int | None = None

    def matches(self, protocol: str, number: int, destination: Pod | None) -> bool:
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, str):
            return destination is not None and destination.named_port(self.port, protocol) == number
        return self.port <= number <= (self.end_port or self.port)


@dataclass(frozen=True)
class Peer:
    """Pods (by selectors) or an address block. A None selector is absent; {} selects everything."""

    pod_selector: dict | None = None
    namespace_selector: dict | None = None
    cidr: str | None = None
    excepts: tuple[str, ...] = ()

    def pod_matches(self, pod: Pod, policy_namespace: str, namespaces: dict[str, dict[str, str]]) -> bool:
        if self.cidr is not None:
            return self.address_matches(pod.ip)
        if self.namespace_selector is None:
            in_namespace = pod.namespace == policy_namespace
        else:
            in_namespace = selected(self.namespace_selector, namespaces.get(pod.namespace, {}))
        return in_namespace and (self.pod_selector is None or selected(self.pod_selector, pod.label_map()))

    def address_matches(self, address: str) -> bool:
        if self.cidr is None:
            return False
        ip = ipaddress.ip_address(address)
        return ip in ipaddress.ip_network(self.cidr, strict=False) and \
            not any(ip in ipaddress.ip_network(e, strict=False) for e in self.excepts)


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # none: every peer
    ports: tuple[Port, ...] = ()  # none: every port


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: dict = field(default_factory=dict)
    ingress: tuple[Rule, ...] | None = None  # None: the policy does not isolate ingress
    egress: tuple[Rule, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod) -> bool:
        return pod.namespace == self.namespace and selected(self.pod_selector, pod.label_map())

    def rules(self, direction: str) -> tuple[Rule, ...] | None:
        return self.ingress if direction == INGRESS else self.egress


# --- reading the API's objects --------------------------------------------------------------------

def pod_of(obj: dict) -> Pod | None:
    """The pod as policy sees it; None when it has no address yet, is done, or is on the host network."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    ip = status.get("podIP")
    if not ip or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed") \
            or meta.get("deletionTimestamp") and status.get("phase") != "Running":
        return None
    ports = tuple((p["name"], p.get("protocol", "TCP"), int(p["containerPort"]))
                  for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name"))
    return Pod(meta.get("namespace", "default"), meta["name"], ip, spec.get("nodeName", ""),
               tuple(sorted((meta.get("labels") or {}).items())), ports)


def _port(found: dict) -> Port:
    port = found.get("port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    return Port(found.get("protocol") or "TCP", port, found.get("endPort"))


def _peer(found: dict) -> Peer:
    block = found.get("ipBlock")
    if block:
        return Peer(cidr=block["cidr"], excepts=tuple(block.get("except") or ()))
    return Peer(found.get("podSelector"), found.get("namespaceSelector"))


def _rules(found: list | None, peers_field: str) -> tuple[Rule, ...]:
    return tuple(Rule(tuple(_peer(p) for p in r.get(peers_field) or []), tuple(_port(p) for p in r.get("ports") or []))
                 for r in found or [])


def policy_types(spec: dict) -> list[str]:
    """spec.policyTypes, or as the API server defaults it: Ingress, and Egress when there are egress rules."""
    return spec.get("policyTypes") or [INGRESS, *([EGRESS] if spec.get("egress") else [])]


def policy_of(obj: dict) -> Policy:
    spec, meta = obj.get("spec") or {}, obj["metadata"]
    types = policy_types(spec)
    return Policy(meta.get("namespace", "default"), meta["name"], spec.get("podSelector") or {},
                  _rules(spec.get("ingress"), "from") if INGRESS in types else None,
                  _rules(spec.get("egress"), "to") if EGRESS in types else None)


# --- judging one connection -------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """The objects a judgement reads: pods (with addresses), namespaces' labels, policies."""

    pods: tuple[Pod, ...]
    namespaces: dict[str, dict[str, str]]
    policies: tuple[Policy, ...]

    @cached_property
    def _by_address(self) -> dict[str, Pod]:
        return {p.ip: p for p in reversed(self.pods)}  # the first pod of an address, as a search would find

    def pod_at(self, address: str) -> Pod | None:
        return self._by_address.get(address)

    def peer_matches(self, peer: Peer, policy: Policy, address: str) -> bool:
        pod = self.pod_at(address)
        return peer.pod_matches(pod, policy.namespace, self.namespaces) if pod is not None \
            else peer.address_matches(address)


@dataclass(frozen=True)
class Judgement:
    """One direction's verdict on a connection and the policies that made it."""

    direction: str
    allowed: bool
    isolated_by: tuple[str, ...] = ()  # the policies selecting the pod for this direction
    allowed_by: tuple[str, ...] = ()  # those of them with a rule that allows the connection

    def text(self, pod: str, peer: str, port: str) -> str:
        if not self.isolated_by:
            return f"{self.direction.lower()} of {pod}: not isolated (no policy selects it for {self.direction})"
        if self.allowed:
            return f"{self.direction.lower()} of {pod}: allowed by {', '.join(self.allowed_by)}"
        way = "from" if self.direction == INGRESS else "to"
        return (f"{self.direction.lower()} of {pod}: no policy selecting {pod} allows {way} {peer} on {port}; "
                f"policies selecting {pod}: {', '.join(self.isolated_by)}")


def judge(cluster: Cluster, pod: Pod, direction: str, peer_address: str, protocol: str, port: int,
          destination: Pod | None) -> Judgement:
    """Whether the pod's policies let a connection through in this direction (Ingress: from the peer;
    Egress: to it). destination resolves named ports."""
    isolating = [p for p in cluster.policies if p.rules(direction) is not None and p.selects(pod)]
    if not isolating:
        return Judgement(direction, True)
    allowing = [p.key for p in isolating if any(
        (not r.peers or any(cluster.peer_matches(peer, p, peer_address) for peer in r.peers))
        and (not r.ports or any(port_spec.matches(protocol, port, destination) for port_spec in r.ports))
        for r in p.rules(direction))]
    return Judgement(direction, bool(allowing), tuple(p.key for p in isolating), tuple(allowing))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    judgements: tuple[Judgement, ...]  # egress of the source (a pod), then ingress of the destination
    reason: str = ""  # when no policy applies at all (the node's own traffic)


def connection(cluster: Cluster, source: str, destination: str, protocol: str, port: int,
               source_node_ips: frozenset[str] = frozenset()) -> Verdict:
    """The fate of a new connection between two addresses (pods or not) by policy alone. Traffic from
    the destination pod's own node (source_node_ips: that node's addresses) is always allowed."""
    src, dst = cluster.pod_at(source), cluster.pod_at(destination)
    judgements = []
    if src is not None:
        judgements.append(judge(cluster, src, EGRESS, destination, protocol, port, dst))
    if dst is not None:
        if source in source_node_ips:
            return Verdict(all(j.allowed for j in judgements), tuple(judgements),
                           f"from {dst.key}'s own node: always allowed")
        judgements.append(judge(cluster, dst, INGRESS, source, protocol, port, dst))
    return Verdict(all(j.allowed for j in judgements), tuple(judgements))
