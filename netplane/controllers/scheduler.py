"""The scheduler: honours spec.nodeName, otherwise spreads pods over Ready nodes (fewest pods first)."""
from __future__ import annotations

import copy

from netplane.api.loop import Reconciler


def node_ready(node: dict) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and not node.get("spec", {}).get("unschedulable", False)


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
        nodes.add_handler(self.loop.trigger)
        pods.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        pods = list(self.pods.cache.values())
        waiting = [p for p in pods if not p.get("spec", {}).get("nodeName") and "deletionTimestamp" not in p["metadata"]]
        for pod in sorted(waiting, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            node = choose_node(list(self.nodes.cache.values()), pods)
            if node is None:
                return  # no Ready node yet: a node event will trigger the next pass
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            pods.append(await self.client.update("pods", bound))
