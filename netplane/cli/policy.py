"""`netplane policy explain` and `netplane policy table`: what the NetworkPolicies make of a connection,
answered from the API's objects alone (nothing is sent), in the words and layout people know from
upstream's netpol e2e output ("." allowed, "X" blocked)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netplane.agent.policy import model
from netplane.agent.policy.enforcer import cluster


class PolicyQueryError(ValueError):
    """A source or destination that names nothing the cluster has."""


@dataclass(frozen=True)
class Objects:
    """What a policy question reads: the cluster as model.py sees it, and each node's addresses."""

    cluster: model.Cluster
    node_addresses: dict[str, frozenset[str]]
    pod_nodes: dict[str, str]  # pod key -> its node

    @classmethod
    def listed(cls, pods: list[dict], namespaces: list[dict], policies: list[dict], nodes: list[dict]) -> Objects:
        found = cluster(pods, namespaces, policies)
        addresses = {n["metadata"]["name"]: frozenset(a["address"] for a in (n.get("status") or {}).get("addresses", [])
                                                      if a.get("type") == "InternalIP") for n in nodes}
        return cls(found, addresses, {p.key: p.node for p in found.pods})

    def address(self, what: str, namespace: str) -> str:
        """A pod (NAME or NAMESPACE/NAME), node/NAME or an IP address, as an address."""
        if what.startswith("node/"):
            found = self.node_addresses.get(what.removeprefix("node/"))
            if not found:
                raise PolicyQueryError(f"no node {what.removeprefix('node/')!r} with an InternalIP")
            return min(found)
        key = what if "/" in what else f"{namespace}/{what}"
        pod = next((p for p in self.cluster.pods if p.key == key), None)
        if pod is not None:
            return pod.ip
        try:
            return str(ipaddress.ip_address(what))
        except ValueError:
            raise PolicyQueryError(f"{what!r} is no pod with an address (NAME or NAMESPACE/NAME), node/NAME or "
                                   "IP address") from None

    def name(self, address: str) -> str:
        pod = self.cluster.pod_at(address)
        if pod is not None:
            return pod.key
        node = next((n for n, ips in self.node_addresses.items() if address in ips), None)
        return f"node/{node}" if node else address

    def verdict(self, source: str, destination: str, protocol: str, port: int) -> model.Verdict:
        pod = self.cluster.pod_at(destination)
        own = self.node_addresses.get(pod.node, frozenset()) if pod is not None else frozenset()
        return model.connection(self.cluster, source, destination, protocol, port, own)


def explain(objects: Objects, source: str, destination: str, protocol: str, port: int) -> dict:
    """One connection's verdict and why, per direction."""
    verdict = objects.verdict(source, destination, protocol, port)
    src, dst = objects.name(source), objects.name(destination)
    shown = f"{protocol} {port}"
    lines = []
    for j in verdict.judgements:
        pod, peer = (src, dst) if j.direction == model.EGRESS else (dst, src)
        lines.append(j.text(pod, peer, shown))
    if verdict.reason:
        lines.append(verdict.reason)
    if not verdict.judgements and not verdict.reason:
        lines.append("neither end is a pod: no NetworkPolicy applies")
    return {"source": src, "destination": dst, "protocol": protocol, "port": port, "allowed": verdict.allowed,
            "why": lines, "judgements": [{"direction": j.direction, "allowed": j.allowed, "isolatedBy": list(j.isolated_by),
                                          "allowedBy": list(j.allowed_by)} for j in verdict.judgements]}


def explain_text(answer: dict) -> str:
    head = (f"{answer['source']} -> {answer['destination']} {answer['protocol']} {answer['port']}: "
            f"{'allowed' if answer['allowed'] else 'dropped'}")
    return "\n".join([head, *(f"  {line}" for line in answer["why"])])


def truth_table(objects: Objects, namespaces: list[str], protocol: str, port: int) -> dict:
    """Every pod of these namespaces (all when none) to every other: allowed or not."""
    pods = sorted((p for p in objects.cluster.pods if not namespaces or p.namespace in namespaces), key=lambda p: p.key)
    keys = [p.key for p in pods]
    return {"protocol": protocol, "port": port, "pods": keys,
            "allowed": {s.key: {d.key: objects.verdict(s.ip, d.ip, protocol, port).allowed for d in pods if d is not s}
                        for s in pods}}


def table_text(table: dict) -> str:
    """Upstream's layout: sources down, destinations across, "." allowed, "X" blocked, "-" itself."""
    keys = table["pods"]
    width = max([len(k) for k in keys] + [1])
    rows = [" " * width + "  " + "  ".join(k.ljust(width) for k in keys)]
    for s in keys:
        cells = ["-" if s == d else ("." if table["allowed"][s][d] else "X") for d in keys]
        rows.append(s.ljust(width) + "  " + "  ".join(c.ljust(width) for c in cells))
    return "\n".join(r.rstrip() for r in rows) + f"\n({table['protocol']} {table['port']}: . allowed, X blocked)"
