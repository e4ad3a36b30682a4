"""The scheduler: honours spec.nodeName, otherwise spreads pods over Ready nodes (fewest pods first)."""
from __future__ import annotations

import copy

from netplane.api import objects
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler


def node_ready(node: dict) -> bool:
    """Ready and not cordoned."""
    return objects.ready(node) and not node.get("spec", {}).get("unschedulable", False)


def unschedulable_message(nodes: list[dict]) -> str:
    """Why no node fits, counted by reason, in the scheduler's words."""
    not_ready = sum(1 for n in nodes if not node_ready(n) and not n.get("spec", {}).get("unschedulable"))
    cordoned = sum(1 for n in nodes if n.get("spec", {}).get("unschedulable"))
    reasons = [f"{count} node(s) {words}" for count, words in (
        (not_ready, "had untolerated taint {node.kubernetes.io/not-ready: }"), (cordoned, "were unschedulable"))
        if count]
    total = len(nodes)
    return (f"0/{total} nodes are available: {', '.join(reasons) or 'no nodes registered'}. preemption: "
            f"0/{total} nodes are available: {total} Preemption is not helpful for scheduling.")


def choose_node(nodes: list[dict], pods: list[dict]) -> str | None:
    """The Ready node with the fewest pods bound to it (by name on a tie), or None."""
    load: dict[str, int] = {n["metadata"]["name"]: 0 for n in nodes if node_ready(n)}
    for pod in pods:
        bound = pod.get("spec", {}).get("nodeName")
        if bound in load:
            load[bound] += 1
    if not load:
        return None
    return min(sorted(load), key=lambda name: load[name])


class Scheduler:
    def __init__(self, client, nodes, pods) -> None:
        self.client, self.nodes, self.pods = client, nodes, pods
        self.loop = Reconciler("scheduler", self.reconcile)
        self.events = Recorder(client, "default-scheduler")
        self.said: dict[str, str] = {}  # pod uid -> the FailedScheduling message it was last given
        nodes.add_handler(self.loop.trigger)
        pods.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        pods = list(self.pods.cache.values())
        waiting = [p for p in pods if not p.get("spec", {}).get("nodeName") and "deletionTimestamp" not in p["metadata"]]
        waiting_uids = {p["metadata"]["uid"] for p in waiting}
        self.said = {uid: m for uid, m in self.said.items() if uid in waiting_uids}
        for pod in sorted(waiting, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            node = choose_node(list(self.nodes.cache.values()), pods)
            if node is None:  # no Ready node: a node event will trigger the next pass
                message = unschedulable_message(list(self.nodes.cache.values()))
                for left in waiting:
                    if self.said.get(left["metadata"]["uid"]) != message:
                        self.said[left["metadata"]["uid"]] = message
                        self.events.record(left, WARNING, "FailedScheduling", message)
                return
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            pods.append(await self.client.update("pods", bound))
            self.said.pop(pod["metadata"]["uid"], None)
            meta = pod["metadata"]
            self.events.record(pod, NORMAL, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                                         f"to {node}")
