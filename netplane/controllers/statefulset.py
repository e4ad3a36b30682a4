"""The StatefulSet controller, as kube-controller-manager's: pods with stable names ``<set>-<ordinal>``,
each with its own hostname and the Service's subdomain (``<pod>.<serviceName>.<namespace>.svc``
through a headless Service), created in order (ordinal N once 0..N-1 run and are Ready) and removed
in reverse order, or all at once with ``podManagementPolicy: Parallel``. A changed template is
rolled out from the highest ordinal down to ``partition``, one pod at a time, each revision of the
template kept as a ControllerRevision (``kubectl rollout history|undo``).

A ``volumeClaimTemplates`` entry gives each pod the claim ``<template>-<set>-<ordinal>``; the lab
serves no PersistentVolumeClaims, so such a pod stays Pending with the kubelet's FailedMount event.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from netplane import names
from netplane.api import objects
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.controllers.workloads import by_controller, controller_ref, sync_each

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
HASH_LABEL = "controller.kubernetes.io/hash"



@dataclass
class Plan:
    create: list[tuple[int, str]] = field(default_factory=list)  # (ordinal, revision name)
    delete: list[dict] = field(default_factory=list)
    status: dict = field(default_factory=dict)


def revision_data(sts: dict) -> dict:
    """What a ControllerRevision of the set holds: its pod template, to be put back as it is."""
    return {"spec": {"template": {**copy.deepcopy(sts["spec"]["template"]), "$patch": "replace"}}}


def revision_name(sts: dict) -> str:
    digest = names.short_hash(json.dumps(sts["spec"]["template"], sort_keys=True), 10).lower()
    return f"{sts['metadata']['name']}-{digest}"


def ordinal_of(sts: dict, pod: dict) -> int | None:
    prefix, _, number = pod["metadata"]["name"].rpartition("-")
    return int(number) if prefix == sts["metadata"]["name"] and number.isdigit() else None


def _healthy(pod: dict) -> bool:
    return "deletionTimestamp" not in pod["metadata"] and (pod.get("status") or {}).get("phase") == "Running" \
        and objects.ready(pod)


def plan(sts: dict, pods: list[dict], current: str, update: str) -> Plan:
    """One pass: which ordinals to create (from which revision), which pods to delete, the status."""
    spec = sts["spec"]
    replicas, start = int(spec.get("replicas", 1)), int((spec.get("ordinals") or {}).get("start", 0))
    parallel = spec.get("podManagementPolicy") == "Parallel"
    strategy = spec.get("updateStrategy") or {}
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0)) + start
    by_ordinal = {o: p for p in pods if (o := ordinal_of(sts, p)) is not None}
    wanted = range(start, start + replicas)
    condemned = sorted((p for o, p in by_ordinal.items() if o not in wanted), key=lambda p: -ordinal_of(sts, p))
    out = Plan()
    blocked = False
    for ordinal in wanted:
        pod = by_ordinal.get(ordinal)
        if pod is None:
            out.create.append((ordinal, current if ordinal < partition and current != update else update))
            blocked = blocked or not parallel
        elif (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded") and "deletionTimestamp" not in pod["metadata"]:
            out.delete.append(pod)  # made again on a later pass, once it is gone
            blocked = blocked or not parallel
        elif not parallel and not _healthy(pod):
            blocked = True
        if blocked:
            break
    if not blocked:
        if parallel:
            out.delete += [p for p in condemned if "deletionTimestamp" not in p["metadata"]]
        elif condemned and not any("deletionTimestamp" in p["metadata"] for p in condemned):
            out.delete.append(condemned[0])
        elif not condemned and strategy.get("type", "RollingUpdate") == "RollingUpdate":
            out.delete += _next_update(sts, by_ordinal, wanted, partition, update)
    out.status = _status(sts, pods, current, update)
    return out


def _next_update(sts: dict, by_ordinal: dict[int, dict], wanted: range, partition: int, update: str) -> list[dict]:
    """The pod a rolling update replaces next: the highest ordinal from ``partition`` up that runs an
    older revision, once every pod above it is healthy."""
    for ordinal in reversed(wanted):
        if ordinal < partition:
            break
        pod = by_ordinal.get(ordinal)
        if pod is None or not _healthy(pod):
            return []
        if pod["metadata"].get("labels", {}).get(REVISION_LABEL) != update:
            return [pod]
    return []


def _status(sts: dict, pods: list[dict], current: str, update: str) -> dict:
    live = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    ready = sum(_healthy(p) for p in live)
    revision = [p["metadata"].get("labels", {}).get(REVISION_LABEL) for p in live]
    updated = revision.count(update)
    want = int(sts["spec"].get("replicas", 1))
    if updated == want and ready == want:
        current = update
    return {"observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(live),
            "readyReplicas": ready, "availableReplicas": ready, "currentReplicas": revision.count(current),
            "updatedReplicas": updated, "currentRevision": current, "updateRevision": update, "collisionCount": 0}


def new_pod(sts: dict, ordinal: int, template: dict, revision: str) -> dict:
    name = f"{sts['metadata']['name']}-{ordinal}"
    meta = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["hostname"] = name
    if sts["spec"].get("serviceName"):
        spec["subdomain"] = sts["spec"]["serviceName"]
    claims = [c.get("metadata", {}).get("name", "") for c in sts["spec"].get("volumeClaimTemplates") or []]
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    spec["volumes"] = volumes + [{"name": claim, "persistentVolumeClaim": {
        "claimName": f"{claim}-{sts['metadata']['name']}-{ordinal}"}} for claim in claims]
    if not spec["volumes"]:
        del spec["volumes"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": sts["metadata"]["namespace"],
                     "labels": {**(meta.get("labels") or {}), POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
                                REVISION_LABEL: revision},
                     "annotations": dict(meta.get("annotations") or {}), "ownerReferences": [controller_ref(sts)]},
        "spec": spec,
    }


class StatefulSetController:
    def __init__(self, client, statefulsets, pods, revisions) -> None:
        self.client, self.statefulsets, self.pods, self.revisions = client, statefulsets, pods, revisions
        self.loop = Reconciler("statefulsets", self.reconcile)
        self.events = Recorder(client, "statefulset-controller")
        for informer in (statefulsets, pods, revisions):
            informer.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        pods, revisions = by_controller(self.pods.cache.values()), by_controller(self.revisions.cache.values())
        live = [s for s in self.statefulsets.cache.values() if "deletionTimestamp" not in s["metadata"]]
        await sync_each(self.loop, live, lambda sts: self._sync(sts, pods.get(sts["metadata"]["uid"], []),
                                                                 revisions.get(sts["metadata"]["uid"], [])))

    async def _sync(self, sts: dict, pods: list[dict], revisions: list[dict]) -> None:
        update = await self._revision(sts, revisions)
        current = (sts.get("status") or {}).get("currentRevision") or update
        p = plan(sts, pods, current, update)
        templates = {r["metadata"]["name"]: r["data"]["spec"]["template"] for r in revisions}
        templates[update] = sts["spec"]["template"]
        name = sts["metadata"]["name"]
        for ordinal, revision in p.create:
            template = {k: v for k, v in (templates.get(revision) or templates[update]).items() if k != "$patch"}
            pod = await self._create(new_pod(sts, ordinal, template, revision))
            if pod is not None:
                self.events.record(sts, NORMAL, "SuccessfulCreate",
                                   f"create Pod {pod['metadata']['name']} in StatefulSet {name} successful")
        for pod in p.delete:
            try:
                await self.client.delete("pods", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                         preconditions={"uid": pod["metadata"]["uid"]})
            except ApiError as err:
                if err.code not in (404, 409):  # gone already (the cache was behind)
                    raise
                continue
            self.events.record(sts, NORMAL, "SuccessfulDelete",
                               f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful")
        await write_status(self.client, "statefulsets", sts, p.status)
        running = {p["metadata"].get("labels", {}).get(REVISION_LABEL) for p in pods}
        await self._prune(sts, revisions, running | {update, current})

    async def _create(self, pod: dict) -> dict | None:
        try:
            return await self.client.create("pods", pod)
        except ApiError as err:
            if err.code != 409:  # the cache was behind: it exists
                raise
            return None

    async def _revision(self, sts: dict, revisions: list[dict]) -> str:
        """The name of the ControllerRevision of the set's template, made (or renumbered as the
        newest) when needed."""
        name = revision_name(sts)
        newest = max((int(r.get("revision", 0)) for r in revisions), default=0)
        existing = next((r for r in revisions if r["metadata"]["name"] == name), None)
        if existing is not None:
            if int(existing.get("revision", 0)) < newest:  # back to an older template: it is the newest again
                try:
                    await self.client.update("controllerrevisions", {**existing, "revision": newest + 1})
                except ApiError as err:
                    if err.code != 409:  # the cache was behind: the next pass sees the current one
                        raise
            return name
        labels = {**(sts["spec"]["template"].get("metadata", {}).get("labels") or {}),
                  HASH_LABEL: name.rsplit("-", 1)[1]}
        revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": name, "namespace": sts["metadata"]["namespace"], "labels": labels,
                                 "annotations": dict(sts["metadata"].get("annotations") or {}),
                                 "ownerReferences": [controller_ref(sts)]},
                    "data": revision_data(sts), "revision": newest + 1}
        try:
            await self.client.create("controllerrevisions", revision)
        except ApiError as err:
            if err.code != 409:
                raise
        return name

    async def _prune(self, sts: dict, revisions: list[dict], in_use: set[str]) -> None:
        """Revisions beyond revisionHistoryLimit that no pod runs, oldest first."""
        limit = int(sts["spec"].get("revisionHistoryLimit", 10))
        spare = sorted((r for r in revisions if r["metadata"]["name"] not in in_use), key=lambda r: r.get("revision", 0))
        for revision in spare[:max(0, len(spare) - limit)]:
            try:
                await self.client.delete("controllerrevisions", revision["metadata"]["name"],
                                         revision["metadata"]["namespace"])
            except ApiError as err:
                if err.code != 404:
                    raise
