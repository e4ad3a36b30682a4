"""The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<template hash>`),
and a rolling update that moves replicas from the old ReplicaSets to the new one within maxSurge
and maxUnavailable (or Recreate: old ones to zero first), as upstream's deployment controller does.
The ReplicaSet controller makes the pods."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.controllers.workloads import TEMPLATE_HASH_LABEL, controller_ref, owned_by, template_hash

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# a Deployment's annotations a ReplicaSet does not take over (upstream's annotationsToSkip)
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
HISTORY_LIMIT = 10


@dataclass(frozen=True)
class RSView:
    name: str
    replicas: int  # spec
    current: int  # status.replicas
    ready: int
    revision: int


def view(rs: dict) -> RSView:
    status = rs.get("status", {})
    return RSView(rs["metadata"]["name"], int(rs["spec"].get("replicas", 0)), int(status.get("replicas", 0)),
                  int(status.get("readyReplicas", 0)), int(rs["metadata"].get("annotations", {}).get(REVISION, 0)))


def _scaled(value: int | str | None, replicas: int, default: str, round_up: bool) -> int:
    text = str(default if value is None else value)
    if text.endswith("%"):
        exact = replicas * int(text[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def surge_and_unavailable(deploy: dict) -> tuple[int, int]:
    replicas = int(deploy["spec"].get("replicas", 1))
    rolling = deploy["spec"].get("strategy", {}).get("rollingUpdate", {})
    surge = _scaled(rolling.get("maxSurge"), replicas, "25%", round_up=True)
    unavailable = _scaled(rolling.get("maxUnavailable"), replicas, "25%", round_up=False)
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


def rolling_targets(replicas: int, surge: int, unavailable: int, new: RSView, olds: list[RSView]) -> dict[str, int]:
    """spec.replicas of every ReplicaSet after one step of a rolling update."""
    targets = {rs.name: rs.replicas for rs in [new, *olds]}
    budget = max(0, new.ready + sum(o.ready for o in olds) - (replicas - unavailable))
    for old in sorted(olds, key=lambda o: o.revision):
        unready = max(0, old.replicas - old.ready)  # pods that are not ready cost no availability
        cut = unready + min(budget, old.replicas - unready)
        budget -= cut - unready
        targets[old.name] = old.replicas - cut
    room = replicas + surge - sum(targets.values())
    if new.replicas < replicas:
        targets[new.name] = new.replicas + max(0, min(room, replicas - new.replicas))
    elif new.replicas > replicas:
        targets[new.name] = replicas
    return targets


def recreate_targets(replicas: int, new: RSView, olds: list[RSView]) -> dict[str, int]:
    targets = {o.name: 0 for o in olds}
    targets[new.name] = replicas if all(o.current == 0 and o.replicas == 0 for o in olds) else new.replicas
    return targets


def replicaset_annotations(deploy: dict, rs_annotations: dict[str, str], revision: int) -> dict[str, str]:
    """The annotations of a Deployment's newest ReplicaSet: the Deployment's own (so that
    `kubernetes.io/change-cause` shows in `rollout history`), its revision and replica counts. A
    ReplicaSet that comes back (a rollback) keeps its earlier revisions in revision-history."""
    replicas = int(deploy["spec"].get("replicas", 1))
    found = dict(rs_annotations)
    earlier = found.get(REVISION)
    if earlier and earlier != str(revision):
        found[REVISION_HISTORY] = ",".join(filter(None, [found.get(REVISION_HISTORY), earlier]))
    copied = {k: v for k, v in deploy["metadata"].get("annotations", {}).items() if k not in NOT_COPIED}
    return found | copied | {REVISION: str(revision), DESIRED_REPLICAS: str(replicas),
                             MAX_REPLICAS: str(replicas + surge_and_unavailable(deploy)[0])}


def new_replicaset(deploy: dict, revision: int) -> dict:
    template = copy.deepcopy(deploy["spec"]["template"])
    digest = template_hash(deploy["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH_LABEL] = digest
    selector = copy.deepcopy(deploy["spec"]["selector"])
    selector.setdefault("matchLabels", {})[TEMPLATE_HASH_LABEL] = digest
    meta = deploy["metadata"]
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{meta['name']}-{digest}", "namespace": meta.get("namespace", "default"),
                     "labels": dict(template["metadata"]["labels"]),
                     "annotations": replicaset_annotations(deploy, {}, revision),
                     "ownerReferences": [controller_ref(deploy)]},
        "spec": {"replicas": 0, "selector": selector, "template": template},
    }


def deployment_status(deploy: dict, new: RSView, views: list[RSView], unavailable: int) -> dict:
    replicas = int(deploy["spec"].get("replicas", 1))
    ready = sum(v.ready for v in views)
    complete = new.replicas == replicas and new.ready == replicas and sum(v.current for v in views) == replicas
    available = ready >= replicas - unavailable
    return {
        "observedGeneration": deploy["metadata"].get("generation", 1),
        "replicas": sum(v.current for v in views),
        "updatedReplicas": new.current,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, replicas - ready),
        "conditions": [
            {"type": "Available", "status": str(available), "reason": "MinimumReplicasAvailable" if available
             else "MinimumReplicasUnavailable", "message": f"{ready} of {replicas} replicas available"},
            {"type": "Progressing", "status": "True",
             "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
             "message": f'ReplicaSet "{new.name}" ' + ("has successfully progressed." if complete else "is progressing.")},
        ],
    }


class DeploymentController:
    def __init__(self, client, deployments, replicasets) -> None:
        self.client, self.deployments, self.replicasets = client, deployments, replicasets
        self.loop = Reconciler("deployments", self.reconcile)
        self.events = Recorder(client, "deployment-controller")
        deployments.add_handler(self.loop.trigger)
        replicasets.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        for deploy in list(self.deployments.cache.values()):
            if "deletionTimestamp" not in deploy["metadata"]:
                await self.sync(deploy)

    async def sync(self, deploy: dict) -> None:
        owned = [rs for rs in self.replicasets.cache.values() if owned_by(rs, deploy)]
        digest = template_hash(deploy["spec"]["template"])
        new = next((rs for rs in owned if rs["metadata"]["labels"].get(TEMPLATE_HASH_LABEL) == digest), None)
        top = max((view(rs).revision for rs in owned), default=0)
        if new is None:
            try:
                new = await self.client.create("replicasets", new_replicaset(deploy, top + 1))
            except ApiError as err:
                if err.code != 409:
                    raise
                return  # made by an earlier pass; the informer brings it
            owned.append(new)
        else:  # an older template again (a rollback) becomes the newest revision
            revision = top + 1 if view(new).revision < top else view(new).revision
            wanted = replicaset_annotations(deploy, new["metadata"].get("annotations", {}), revision)
            if wanted != new["metadata"].get("annotations", {}):
                new = copy.deepcopy(new)
                new["metadata"]["annotations"] = wanted
                await self.client.update("replicasets", new)
                return
        if deploy["metadata"].get("annotations", {}).get(REVISION) != str(view(new).revision):
            marked = copy.deepcopy(deploy)
            marked["metadata"].setdefault("annotations", {})[REVISION] = str(view(new).revision)
            await self.client.update("deployments", marked)
            return
        olds = [view(rs) for rs in owned if rs is not new]
        replicas = int(deploy["spec"].get("replicas", 1))
        surge, unavailable = surge_and_unavailable(deploy)
        if deploy["spec"].get("strategy", {}).get("type") == "Recreate":
            targets = recreate_targets(replicas, view(new), olds)
        else:
            targets = rolling_targets(replicas, surge, unavailable, view(new), olds)
        for rs in owned:
            before, after = int(rs["spec"].get("replicas", 0)), targets[rs["metadata"]["name"]]
            if after != before:
                scaled = copy.deepcopy(rs)
                scaled["spec"]["replicas"] = after
                await self.client.update("replicasets", scaled)
                self.events.record(deploy, NORMAL, "ScalingReplicaSet", f"Scaled {'up' if after > before else 'down'} "
                                   f"replica set {rs['metadata']['name']} from {before} to {after}")
        await self._prune(deploy, [rs for rs in owned if rs is not new])
        status = deployment_status(deploy, view(new), [view(rs) for rs in owned], unavailable)
        await write_status(self.client, "deployments", deploy, status)

    async def _prune(self, deploy: dict, olds: list[dict]) -> None:
        """Keep revisionHistoryLimit empty old ReplicaSets (for rollbacks); delete the oldest beyond."""
        limit = int(deploy["spec"].get("revisionHistoryLimit", HISTORY_LIMIT))
        empty = sorted((rs for rs in olds if view(rs).replicas == 0 and view(rs).current == 0),
                       key=lambda rs: view(rs).revision)
        for rs in empty[:max(0, len(empty) - limit)]:
            await self.client.delete("replicasets", rs["metadata"]["name"], rs["metadata"]["namespace"])
