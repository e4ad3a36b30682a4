"""The taint eviction controller (kube-controller-manager's taint-eviction-controller): a pod on a node
with a NoExecute taint it does not tolerate is deleted at once; one whose tolerations of the node's
NoExecute taints carry tolerationSeconds is deleted that long after the taint was added (so the
default 300 s tolerations of not-ready and unreachable move pods off a dead node in five minutes).
Each eviction marks the pod with the DisruptionTarget condition before deleting it, as upstream."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from netplane.api.events import NORMAL, Recorder
from netplane.api.loop import Reconciler
from netplane.api.times import parse_time, time_text
from netplane.controllers.scheduling import taints as tt
from netplane.controllers.workloads import disrupt


def eviction_time(pod: dict, node: dict, now: datetime) -> datetime | None:
    """When the pod must leave the node for its NoExecute taints (now at the latest), None if never;
    a taint counts from its timeAdded (the controller gives one that has none the time it first saw it)."""
    no_execute = [t for t in node.get("spec", {}).get("taints") or [] if t.get("effect") == tt.NO_EXECUTE]
    if not no_execute:
        return None
    if tt.untolerated(pod, no_execute, (tt.NO_EXECUTE,)):
        return now
    due = None
    for taint in no_execute:
        limits = [t["tolerationSeconds"] for t in pod.get("spec", {}).get("tolerations") or []
                  if tt.tolerates(t, taint) and t.get("tolerationSeconds") is not None]
        if limits:
            since = parse_time(taint["timeAdded"]) if taint.get("timeAdded") else now
            when = since + timedelta(seconds=max(min(limits), 0))
            due = when if due is None else min(due, when)
    return due


class TaintEvictionController:
    def __init__(self, client, nodes, pods) -> None:
        self.client, self.nodes, self.pods = client, nodes, pods
        self.loop = Reconciler("taint-eviction", self.reconcile)
        self.events = Recorder(client, "taint-eviction-controller")
        self.first_seen: dict[tuple, str] = {}  # (node, key, value) of a NoExecute taint without timeAdded -> when
        nodes.add_handler(self.loop.trigger)
        pods.add_handler(self.loop.trigger)

    def _stamped(self, nodes: list[dict], now: datetime) -> dict[str, dict]:
        """The nodes by name, each NoExecute taint without a timeAdded given the time it was first seen."""
        out, seen = {}, {}
        for node in nodes:
            name = node["metadata"]["name"]
            taints = []
            for taint in node.get("spec", {}).get("taints") or []:
                if taint.get("effect") == tt.NO_EXECUTE and not taint.get("timeAdded"):
                    key = (name, taint.get("key"), taint.get("value"))
                    seen[key] = self.first_seen.get(key) or time_text(now)
                    taint = {**taint, "timeAdded": seen[key]}
                taints.append(taint)
            out[name] = {**node, "spec": {**node.get("spec", {}), "taints": taints}}
        self.first_seen = seen
        return out

    async def reconcile(self) -> None:
        now = datetime.now(timezone.utc)
        nodes = self._stamped(list(self.nodes.cache.values()), now)
        for pod in list(self.pods.cache.values()):
            node = nodes.get(pod.get("spec", {}).get("nodeName") or "")
            if node is None or "deletionTimestamp" in pod["metadata"] or \
                    (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            due = eviction_time(pod, node, now)
            if due is None:
                continue
            if due > now:
                self.loop.wake_in((due - now).total_seconds())
                continue
            await self._evict(pod)

    async def _evict(self, pod: dict) -> None:
        meta = pod["metadata"]
        self.events.record(pod, NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {meta['namespace']}/"
                                                                 f"{meta['name']}")
        await disrupt(self.client, pod, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")
