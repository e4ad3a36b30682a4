"""The scheduler: honours spec.nodeName, otherwise binds each pending pod (highest priority first,
then oldest) to the best node that passes its filters (netplane.controllers.scheduling.fit), or
tells why none does, in a FailedScheduling event and the pod's PodScheduled condition; a pod of a
higher priority may then preempt lower ones (scheduling.preemption) and is nominated for the node
they leave, which pods of a lower priority do not take meanwhile."""
from __future__ import annotations

import copy

from netplane.api import objects
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import conditions_with, write_status
from netplane.api.times import time_text
from netplane.controllers.scheduling import fit, preemption
from netplane.controllers.workloads import disrupt

SCHEDULER_NAME = "default-scheduler"


def node_ready(node: dict) -> bool:
    """Ready and not cordoned."""
    return objects.ready(node) and not node.get("spec", {}).get("unschedulable", False)


def running(pod: dict) -> bool:
    """Bound to a node and not finished: it holds its share of the node."""
    return bool(pod.get("spec", {}).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pending(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return not spec.get("nodeName") and "deletionTimestamp" not in pod["metadata"] and \
        spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME and not spec.get("schedulingGates")


def place(pod: dict, cluster: fit.Cluster, nominated: str | None = None) -> tuple[str | None, dict[str, fit.Verdict]]:
    """The node for the pod (the one it was nominated for, if that fits), or None and why each
    node would not do."""
    verdicts = {n["metadata"]["name"]: fit.verdict(pod, n, cluster) for n in cluster.nodes}
    feasible = [n for n in cluster.nodes if verdicts[n["metadata"]["name"]] is None]
    if nominated and any(n["metadata"]["name"] == nominated for n in feasible):
        return nominated, {}
    return fit.best(pod, feasible, cluster), {k: v for k, v in verdicts.items() if v is not None}


def holding(pod: dict, node: str) -> dict:
    """A pod nominated for a node, as if it were there: pods of a lower priority leave it its room."""
    held = copy.deepcopy(pod)
    held["spec"]["nodeName"] = node
    return held


class Scheduler:
    def __init__(self, client, nodes, pods, namespaces) -> None:
        self.client, self.nodes, self.pods, self.namespaces = client, nodes, pods, namespaces
        self.loop = Reconciler("scheduler", self.reconcile)
        self.events = Recorder(client, SCHEDULER_NAME)
        self.said: dict[str, str] = {}  # pod uid -> the FailedScheduling message it was last given
        self.nominations: dict[str, str] = {}  # pod uid -> the node it preempted pods on
        for informer in (nodes, pods, namespaces):
            informer.add_handler(self.loop.trigger)

    def cluster(self) -> fit.Cluster:
        labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in self.namespaces.cache.values()}
        return fit.Cluster(list(self.nodes.cache.values()), [p for p in self.pods.cache.values() if running(p)], labels)

    async def reconcile(self) -> None:
        waiting = [p for p in self.pods.cache.values() if pending(p)]
        waiting_uids = {p["metadata"]["uid"] for p in waiting}
        self.said = {uid: m for uid, m in self.said.items() if uid in waiting_uids}
        self.nominations = {uid: n for uid, n in self.nominations.items() if uid in waiting_uids}
        cluster = self.cluster()
        order = sorted(waiting, key=lambda p: (-int(p["spec"].get("priority") or 0),
                                               p["metadata"].get("creationTimestamp", "")))
        held = {p["metadata"]["uid"]: holding(p, node) for p in order if (node := self._nominated(p))}
        for pod in order:
            uid = pod["metadata"]["uid"]
            others = [h for other, h in held.items() if other != uid and preemption.priority(h) >= preemption.priority(pod)]
            view = fit.Cluster(cluster.nodes, cluster.pods + others, cluster.namespace_labels) if others else cluster
            node, verdicts = place(pod, view, self._nominated(pod))
            if node is None:
                await self._unschedulable(pod, view, verdicts)
                continue
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            cluster.add(await self.client.update("pods", bound))
            held.pop(uid, None)
            self.nominations.pop(uid, None)
            self.said.pop(uid, None)
            meta = pod["metadata"]
            self.events.record(pod, NORMAL, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                                         f"to {node}")

    def _nominated(self, pod: dict) -> str | None:
        """The node the pod was nominated for: by this scheduler (its write may not be cached yet) or
        as its status says."""
        return self.nominations.get(pod["metadata"]["uid"]) or (pod.get("status") or {}).get("nominatedNodeName")

    async def _unschedulable(self, pod: dict, view: fit.Cluster, verdicts: dict[str, fit.Verdict]) -> None:
        """Preempt if that helps, and say why the pod waits."""
        nominated = self._nominated(pod)
        waiting = nominated is not None and preemption.waiting_for_victims(pod, view, nominated)
        chosen = None if waiting else preemption.choose(pod, view, verdicts)
        if chosen is not None:
            pod = await self._preempt(pod, chosen)
        elif nominated is not None and not waiting:  # nothing to wait for there any more
            self.nominations.pop(pod["metadata"]["uid"], None)
            pod = await self._write_status(pod, {k: v for k, v in (pod.get("status") or {}).items()
                                                 if k != "nominatedNodeName"}, merge=False)
        message = fit.message(verdicts, len(view.nodes), "" if chosen is not None or waiting else None)
        if self.said.get(pod["metadata"]["uid"]) == message:
            return
        self.said[pod["metadata"]["uid"]] = message
        self.events.record(pod, WARNING, "FailedScheduling", message)
        condition = {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                     "lastTransitionTime": time_text(), "reason": "Unschedulable", "message": message}
        await self._write_status(pod, {"conditions": conditions_with(pod, condition)})

    async def _write_status(self, pod: dict, status: dict, merge: bool = True) -> dict:
        try:
            return await write_status(self.client, "pods", pod, status, merge) or pod
        except ApiError as err:
            if err.code != 404:  # deleted meanwhile
                raise
            return pod

    async def _preempt(self, pod: dict, chosen: preemption.Candidate) -> dict:
        """Remove the victims (each marked DisruptionTarget, as upstream) and nominate the node; the
        pod as nominated."""
        for victim in chosen.victims:
            await disrupt(self.client, victim, "PreemptionByScheduler",
                          f"{SCHEDULER_NAME}: preempting to accommodate a higher priority pod")
            self.events.record(victim, NORMAL, "Preempted",
                               f"Preempted by pod {pod['metadata']['uid']} on node {chosen.node}")
        self.nominations[pod["metadata"]["uid"]] = chosen.node
        return await self._write_status(pod, {"nominatedNodeName": chosen.node})
