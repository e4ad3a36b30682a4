"""Preemption (the DefaultPreemption plugin): when no node fits a pod, lower-priority pods may be
removed to make room. On each node where removing pods could help, the victims are the fewest
lower-priority pods (the highest of them spared first) whose removal lets the pod fit; the node
chosen is the one whose victims matter least (their highest priority, then their sum, then their
number). A pod that never preempts (preemptionPolicy Never) waits, as one whose earlier victims are
still terminating on its nominated node does (the scheduler asks waiting_for_victims first)."""
from __future__ import annotations

from dataclasses import dataclass

from netplane.controllers.scheduling import fit


@dataclass(frozen=True)
class Candidate:
    node: str
    victims: tuple[dict, ...]


def priority(pod: dict) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def _without(cluster: fit.Cluster, gone: list[dict]) -> fit.Cluster:
    uids = {p["metadata"]["uid"] for p in gone}
    return fit.Cluster(cluster.nodes, [p for p in cluster.pods if p["metadata"]["uid"] not in uids],
                       cluster.namespace_labels)


def victims_on(pod: dict, node: dict, cluster: fit.Cluster) -> list[dict] | None:
    """The pods to remove from the node so that the pod fits there, None if removing them all would not do."""
    lower = [p for p in cluster.on(node["metadata"]["name"]) if priority(p) < priority(pod)
             and "deletionTimestamp" not in p["metadata"]]
    if not lower or fit.verdict(pod, node, _without(cluster, lower)) is not None:
        return None
    victims = list(lower)
    for candidate in sorted(lower, key=priority, reverse=True):  # spare the highest first, if it can stay
        spared = [v for v in victims if v is not candidate]
        if fit.verdict(pod, node, _without(cluster, spared)) is None:
            victims = spared
    return victims


def waiting_for_victims(pod: dict, cluster: fit.Cluster, nominated: str) -> bool:
    """Whether lower-priority pods are still leaving the node the pod was nominated for."""
    return any("deletionTimestamp" in p["metadata"] and priority(p) < priority(pod) for p in cluster.on(nominated))


def choose(pod: dict, cluster: fit.Cluster, verdicts: dict[str, fit.Verdict]) -> Candidate | None:
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return None
    found = []
    for node in cluster.nodes:
        name = node["metadata"]["name"]
        if name in verdicts and verdicts[name].preemptible:
            victims = victims_on(pod, node, cluster)
            if victims:
                found.append(Candidate(name, tuple(victims)))
    if not found:
        return None
    return min(found, key=lambda c: (max(priority(v) for v in c.victims), sum(priority(v) for v in c.victims),
                                     len(c.victims), c.node))
