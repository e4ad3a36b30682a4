"""Upstream's NetworkPolicy e2e model (test/e2e/network/netpol): namespaces x, y, z with pods a, b, c
each (label pod=<name>; every container port named serve-<port>-<protocol>), and its cases: the
policies a test creates and the reachability it expects, built as upstream builds it (all allowed,
then ExpectAllIngress / ExpectAllEgress / ExpectPeer / Expect calls in order). A pod reaching itself
is left out, as upstream ignores it (kubernetes#95879).
"""
from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
EVERY = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS)
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))


def port_name(port: int, protocol: str) -> str:
    return f"serve-{port}-{protocol.lower()}"


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                                                                  "labels": {"kubernetes.io/metadata.name": name}}}


def ns_is(name: str) -> dict:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def pods_labelled(**labels: str) -> dict:
    return {"matchLabels": labels}


def expression(key: str, operator: str, *values: str) -> dict:
    return {"matchExpressions": [{"key": key, "operator": operator, **({"values": list(values)} if values else {})}]}


def policy(ns: str, name: str, selector: dict | None = None, types: list[str] | None = None,
           ingress: list | None = None, egress: list | None = None) -> dict:
    spec: dict = {"podSelector": selector if selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


@dataclass
class Reachability:
    """Expected allowed connections (source, destination) between the model's pods."""

    allowed: dict[tuple[str, str], bool] = field(default_factory=lambda: {
        (s, d): True for s, d in itertools.product(EVERY, EVERY) if s != d})

    @staticmethod
    def _picks(pattern: str) -> list[str]:
        if pattern == "*":
            return list(EVERY)
        ns, pod = pattern.split("/")
        return [p for p in EVERY if p.split("/")[0] == ns and (pod == "*" or p.split("/")[1] == pod)]

    def peer(self, source: str, destination: str, value: bool) -> Reachability:
        for s, d in itertools.product(self._picks(source), self._picks(destination)):
            if s != d:
                self.allowed[(s, d)] = value
        return self

    def col(self, destination: str, value: bool) -> Reachability:
        """ExpectAllIngress: every source to the destination."""
        return self.peer("*", destination, value)

    def row(self, source: str, value: bool) -> Reachability:
        """ExpectAllEgress: the source to every destination."""
        return self.peer(source, "*", value)


def reach() -> Reachability:
    return Reachability()


@dataclass(frozen=True)
class Case:
    """An upstream test's policies (and labels it sets) and what it expects on each probe."""

    name: str
    policies: tuple[dict, ...] | Callable[[dict[str, str]], tuple[dict, ...]]  # or made from the pods' addresses
    probes: tuple[tuple[str, int, Reachability], ...]  # protocol, port, expected
    pod_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # "x/b" -> extra labels
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def objects(self, addresses: dict[str, str]) -> list[dict]:
        """The policies, given each pod's address ("x/b" -> "10.244.1.5"), as ipBlock tests need them."""
        return list(self.policies(addresses) if callable(self.policies) else self.policies)


def cidr_egress(name: str, cidr: str, *excepts: str) -> dict:
    """x/a's egress only to an ipBlock (upstream's allow-client-a-via-cidr-egress-rule)."""
    block = {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}
    return policy("x", name, pods_labelled(pod="a"), ["Egress"], egress=[{"to": [{"ipBlock": block}]}])


def wide(address: str, bits: int) -> str:
    """The address's network of `bits` bits, as upstream's except tests take a /4 around a pod."""
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


X_A = pods_labelled(pod="a")
FROM_Y_ON_81 = {"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"protocol": "TCP", "port": 81}]}
Y_ONLY_TO_X_A = reach().peer("x/*", "x/a", False).peer("y/*", "x/a", True).peer("z/*", "x/a", False)
EGRESS_TO_Y_A = [{"to": [{"namespaceSelector": ns_is("y"), "podSelector": X_A}]}]

CASES = [
    Case("default-deny-ingress", (policy("x", "deny-ingress", types=["Ingress"], ingress=[]),),
         (("TCP", 80, reach().peer("*", "x/*", False)),)),
    Case("default-deny-all", (policy("x", "deny-all", types=["Ingress", "Egress"], ingress=[], egress=[]),),
         (("TCP", 80, reach().peer("*", "x/*", False).peer("x/*", "*", False)),)),
    Case("allow from pods in the server's namespace by podSelector",
         (policy("x", "x-a-allows-x-b", X_A, ["Ingress"], [{"from": [{"podSelector": pods_labelled(pod="b")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("x/b", "x/a", True)),)),
    Case("allow ingress to a target over a deny-all",
         (policy("x", "deny-all", types=["Ingress"], ingress=[]),
          policy("x", "allow-all-to-a", X_A, ["Ingress"], [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}])),
         (("TCP", 80, reach().col("x/a", True).col("x/b", False).col("x/c", False)),)),
    Case("allow from pods in all namespaces",
         (policy("x", "allow-from-another-ns", X_A, ["Ingress"], [{"from": [{"namespaceSelector": {}}]}]),),
         (("TCP", 80, reach()),)),
    Case("allow only from a namespace by namespaceSelector",
         (policy("x", "allow-client-a-via-ns-selector", X_A, ["Ingress"], [{"from": [{"namespaceSelector": ns_is("y")}]}]),),
         (("TCP", 80, reach().peer("x/*", "x/a", False).peer("z/*", "x/a", False)),)),
    Case("podSelector with matchExpressions",
         (policy("x", "x-a-allows-x-b", X_A, ["Ingress"], [{"from": [{"podSelector": expression("pod", "In", "b")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("x/b", "x/a", True)),)),
    Case("namespaceSelector with matchExpressions",
         (policy("x", "allow-ns-y-match-selector", X_A, ["Ingress"],
                 [{"from": [{"namespaceSelector": expression("kubernetes.io/metadata.name", "In", "y")}]}]),),
         (("TCP", 80, reach().peer("x/*", "x/a", False).peer("z/*", "x/a", False)),)),
    Case("podSelector or namespaceSelector (two peers)",
         (policy("x", "allow-ns-y-match-selector", X_A, ["Ingress"], [{"from": [
             {"namespaceSelector": expression("kubernetes.io/metadata.name", "NotIn", "x")},
             {"podSelector": pods_labelled(pod="b")}]}]),),
         (("TCP", 80, reach().peer("x/c", "x/a", False)),)),
    Case("podSelector and namespaceSelector (one peer)",
         (policy("x", "allow-ns-y-podselector-and-nsselector", X_A, ["Ingress"], [{"from": [
             {"namespaceSelector": expression("kubernetes.io/metadata.name", "NotIn", "x"),
              "podSelector": pods_labelled(pod="b")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("y/b", "x/a", True).peer("z/b", "x/a", True)),)),
    Case("several pod and namespace selectors",
         (policy("x", "allow-ns-y-z-pod-b-c", X_A, ["Ingress"], [{"from": [
             {"namespaceSelector": expression("kubernetes.io/metadata.name", "NotIn", "x"),
              "podSelector": expression("pod", "In", "b", "c")}]}]),),
         (("TCP", 80, reach().peer("x/*", "x/a", False).peer("y/a", "x/a", False).peer("z/a", "x/a", False)),)),
    Case("any of several podSelectors",
         (policy("x", "allow-ns-x-pod-b-c", X_A, ["Ingress"], [{"from": [
             {"podSelector": pods_labelled(pod="b")}, {"podSelector": pods_labelled(pod="c")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("x/b", "x/a", True).peer("x/c", "x/a", True)),)),
    Case("a pod of another namespace by podSelector and namespaceSelector",
         (policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", X_A, ["Ingress"],
                 [{"from": [{"namespaceSelector": ns_is("y"), "podSelector": X_A}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("y/a", "x/a", True)),)),
    Case("ports: only 81 opens",
         (policy("x", "allow-client-a-via-ns-selector", X_A, ["Ingress"], [FROM_Y_ON_81]),),
         (("TCP", 81, Y_ONLY_TO_X_A), ("TCP", 80, reach().col("x/a", False)))),
    Case("stacked policies with overlapping podSelectors add up",
         (policy("x", "allow-client-a-via-ns-selector", X_A, ["Ingress"], [FROM_Y_ON_81]),
          policy("x", "allow-client-a-via-ns-selector-80", X_A, ["Ingress"],
                 [{**FROM_Y_ON_81, "ports": [{"protocol": "TCP", "port": 80}]}])),
         (("TCP", 81, Y_ONLY_TO_X_A), ("TCP", 80, Y_ONLY_TO_X_A))),
    Case("allow-all ingress", (policy("x", "allow-all", types=["Ingress"], ingress=[{}]),),
         (("TCP", 80, reach()), ("TCP", 81, reach()))),
    Case("ingress on one named port",
         (policy("x", "allow-all", types=["Ingress"], ingress=[{"ports": [{"port": "serve-81-tcp"}]}]),),
         (("TCP", 81, reach()), ("TCP", 80, reach().peer("*", "x/*", False)))),
    Case("ingress from a namespace on one named port",
         (policy("x", "allow-client-a-via-ns-selector-80", X_A, None, [
             {"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"protocol": "TCP", "port": "serve-80-tcp"}]}]),),
         (("TCP", 80, reach().peer("x/*", "x/a", False).peer("z/*", "x/a", False)),
          ("TCP", 81, reach().col("x/a", False)))),
    Case("egress on one named port",
         (policy("x", "allow-egress", types=["Egress"], egress=[{"ports": [{"port": "serve-80-tcp"}]}]),),
         (("TCP", 80, reach()), ("TCP", 81, reach().peer("x/*", "*", False)))),
    Case("deny ingress from pods of other namespaces",
         (policy("x", "deny-empty-policy", types=["Ingress"], ingress=[{"from": [{"podSelector": {}}]}]),),
         (("TCP", 80, reach().peer("y/*", "x/*", False).peer("z/*", "x/*", False)),)),
    Case("deny egress of one pod", (policy("x", "deny-egress-pod-a", X_A, ["Egress"], egress=[]),),
         (("TCP", 80, reach().row("x/a", False)),)),
    Case("deny egress of a namespace", (policy("x", "deny-egress-ns-x", types=["Egress"], egress=[]),),
         (("TCP", 80, reach().peer("x/*", "*", False)),)),
    Case("ingress and egress together",
         (policy("x", "allow-client-a-via-pod-selector", X_A, ["Egress", "Ingress"],
                 [{"from": [{"podSelector": pods_labelled(pod="b")}]}], [{"ports": [{"port": 80}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("x/b", "x/a", True)),
          ("TCP", 81, reach().col("x/a", False).row("x/a", False).peer("x/b", "x/a", True)))),
    Case("egress denied on the client although the server allows",
         (policy("x", "allow-to-ns-y-pod-a", X_A, ["Egress"], egress=EGRESS_TO_Y_A),
          policy("y", "allow-from-xa-on-ya-match-selector", X_A, ["Ingress"],
                 [{"from": [{"namespaceSelector": ns_is("x"), "podSelector": X_A}]}]),
          policy("y", "allow-from-xa-on-yb-match-selector", pods_labelled(pod="b"), ["Ingress"],
                 [{"from": [{"namespaceSelector": ns_is("x"), "podSelector": X_A}]}])),
         (("TCP", 80, reach().peer("x/a", "*", False).col("y/a", False).peer("x/a", "y/a", True).col("y/b", False)),)),
    Case("egress to a pod of another namespace",
         (policy("x", "allow-to-ns-y-pod-a", X_A, ["Egress"], egress=EGRESS_TO_Y_A),),
         (("TCP", 80, reach().row("x/a", False).peer("x/a", "y/a", True)),)),
    Case("ingress by protocol: TCP only",
         (policy("x", "allow-ingress-by-proto", X_A, None, [{"ports": [{"protocol": "TCP"}]}]),),
         (("TCP", 80, reach()), ("UDP", 80, reach().col("x/a", False)))),
    Case("an allow-all ingress policy takes precedence",
         (policy("x", "allow-ingress-port-80", types=["Ingress"], ingress=[{"ports": [{"port": 80}]}]),
          policy("x", "allow-ingress", types=["Ingress"], ingress=[{}])),
         (("TCP", 81, reach()),)),
    Case("an allow-all egress policy takes precedence",
         (policy("x", "allow-egress-port-80", types=["Egress"], egress=[{"ports": [{"port": 80}]}]),
          policy("x", "allow-egress", types=["Egress"], egress=[{}])),
         (("TCP", 81, reach()),)),
    Case("SCTP only does not open TCP",
         (policy("x", "deny-ingress", types=["Ingress"], ingress=[]),
          policy("x", "allow-only-sctp-ingress-on-port-81", X_A, None, [{"ports": [{"protocol": "SCTP", "port": 81}]}])),
         (("TCP", 81, reach().peer("*", "x/*", False)),)),
    Case("UDP only does not open TCP",
         (policy("x", "allow-only-udp-ingress-on-port-81", X_A, None, [{"ports": [{"protocol": "UDP", "port": 81}]}]),),
         (("TCP", 81, reach().col("x/a", False)), ("UDP", 81, reach()))),
    Case("egress to a namespace by matchExpressions NotIn",
         (policy("x", "allow-ns-y-match-selector-for-immutable-ns-label", X_A, ["Egress"], egress=[
             {"to": [{"namespaceSelector": expression("kubernetes.io/metadata.name", "NotIn", "y")}]}]),),
         (("TCP", 80, reach().peer("x/a", "y/*", False)),)),
    Case("a port range (endPort)",
         (policy("x", "allow-range", X_A, ["Ingress"], [
             {"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]),),
         (("TCP", 80, Y_ONLY_TO_X_A), ("TCP", 81, Y_ONLY_TO_X_A))),
    Case("ingress from an updated namespace (Exists)",
         (policy("x", "allow-client-a-via-ns-selector", X_A, None,
                 [{"from": [{"namespaceSelector": expression("ns2", "Exists")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("y/*", "x/a", True)),),
         namespace_labels={"y": {"ns2": "updated"}}),
    Case("egress to a server in a CIDR block",
         lambda ip: (cidr_egress("allow-client-a-via-cidr-egress-rule", f"{ip['y/b']}/32"),),
         (("TCP", 80, reach().row("x/a", False).peer("x/a", "y/b", True)),)),
    Case("the except clause of an egress CIDR block",
         lambda ip: (cidr_egress("allow-client-a-via-cidr-egress-rule", wide(ip["x/b"], 4), f"{ip['x/b']}/32"),),
         (("TCP", 80, reach().peer("x/a", "x/b", False)),)),
    Case("an IPv6 block admits nothing in an IPv4 cluster",
         (policy("x", "v6-only", X_A, ["Ingress"], [{"from": [{"ipBlock": {"cidr": "fd00::/64",
                                                                          "except": ["fd00::1/128"]}}]}]),),
         (("TCP", 80, reach().col("x/a", False)),)),
    Case("ingress from an updated pod",
         (policy("x", "allow-client-a-via-pod-selector", X_A, None,
                 [{"from": [{"podSelector": pods_labelled(pod="b", pod2="updated")}]}]),),
         (("TCP", 80, reach().col("x/a", False).peer("x/b", "x/a", True)),),
         pod_labels={"x/b": {"pod2": "updated"}}),
]
