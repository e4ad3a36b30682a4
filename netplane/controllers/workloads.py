"""What the workload controllers share: owner references, selectors, the pod template hash, the
order in which surplus pods go (upstream's ActivePods ranking), one object's failure kept from the
others', and a pod's deletion as a disruption."""
from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from netplane import names
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, Recorder
from netplane.api import objects
from netplane.api.loop import Reconciler

TEMPLATE_HASH_LABEL = "pod-template-hash"
RETRY_SECONDS = 5.0  # an object whose sync failed is tried again this long after
log = logging.getLogger(__name__)


def controller_ref(owner: dict) -> dict:
    meta = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion", "apps/v1"), "kind": owner["kind"], "name": meta["name"],
            "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}


def controller_uid(obj: dict, kind: str | None = None) -> str | None:
    """The uid of the object's controller (of that kind, when given), if it has one."""
    return next((r.get("uid") for r in obj["metadata"].get("ownerReferences") or []
                 if r.get("controller") and kind in (None, r.get("kind"))), None)


def by_controller(items: Iterable[dict], kind: str | None = None) -> dict[str | None, list[dict]]:
    """Objects by the uid of their controller (None: those without one of that kind)."""
    found: dict[str | None, list[dict]] = {}
    for obj in items:
        found.setdefault(controller_uid(obj, kind), []).append(obj)
    return found


async def sync_each(loop: Reconciler, owners: Iterable[dict], sync: Callable[[dict], Awaitable[None]]) -> None:
    """sync(owner) for each one; one that fails is logged and tried again later, the others go on."""
    for owner in owners:
        try:
            await sync(owner)
        except ApiError as err:
            meta = owner["metadata"]
            log.warning("%s %s/%s: %s", owner.get("kind", "object"), meta.get("namespace"), meta.get("name"), err)
            loop.wake_in(RETRY_SECONDS)


async def disrupt(client, pod: dict, reason: str, message: str) -> bool:
    """Mark the pod with the DisruptionTarget condition and delete it; False if it was gone."""
    meta = pod["metadata"]
    try:
        await objects.write_status(client, "pods", pod, {"conditions": objects.conditions_with(
            pod, objects.disruption_target(reason, message))})
        await client.delete("pods", meta["name"], meta["namespace"])
    except ApiError as err:
        if err.code != 404:
            raise
        return False
    return True


def owned_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences", []))


def selector_string(selector: dict | None) -> str:
    """The selector as a query string (`app=web,tier in (a,b)`), as status.selector shows it."""
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


def template_hash(template: dict) -> str:
    """A short, stable hash of a pod template (the `pod-template-hash` label's value)."""
    return names.short_hash(json.dumps(template, sort_keys=True), 10).lower()


def pod_from_template(owner: dict, template: dict, extra_labels: dict[str, str] | None = None,
                      node: str | None = None) -> dict:
    meta = template.get("metadata", {})
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": f"{owner['metadata']['name']}-",
            "namespace": owner["metadata"].get("namespace", "default"),
            "labels": {**meta.get("labels", {}), **(extra_labels or {})},
            "annotations": dict(meta.get("annotations", {})),
            "ownerReferences": [controller_ref(owner)],
        },
        "spec": copy.deepcopy(template.get("spec", {})),
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def active(pod: dict) -> bool:
    """Counts toward replicas: not terminating, not finished."""
    return "deletionTimestamp" not in pod["metadata"] and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def deletion_order(pods: list[dict]) -> list[dict]:
    """Surplus pods, first to go first: unscheduled, then pending, then not ready, then the newest."""
    def rank(pod: dict) -> tuple:
        status = pod.get("status", {})
        return (bool(pod["spec"].get("nodeName")), status.get("phase") == "Running", objects.ready(pod),
                _negated(pod["metadata"].get("creationTimestamp", "")), pod["metadata"]["name"])
    return sorted(pods, key=rank)


def _negated(timestamp: str) -> tuple:
    return tuple(-ord(c) for c in timestamp)


class Expectations:
    """Pods a controller created or deleted that its cache has not seen yet (upstream's
    ControllerExpectations): until the cache catches up, another pass would count wrong and create or
    delete twice, so the owner is skipped (for at most `timeout` seconds)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._pending: dict[str, tuple[float, set[tuple[str, str]], set[tuple[str, str]]]] = {}

    def expect(self, owner_uid: str, created: list[dict], deleted: list[dict]) -> None:
        key = lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])  # noqa: E731
        self._pending[owner_uid] = (time.monotonic(), {key(p) for p in created}, {key(p) for p in deleted})

    def satisfied(self, owner_uid: str, cache: dict) -> bool:
        entry = self._pending.get(owner_uid)
        if entry is None:
            return True
        since, adds, dels = entry
        seen_added = adds <= cache.keys()
        seen_deleted = all(k not in cache or "deletionTimestamp" in cache[k]["metadata"] for k in dels)
        if (seen_added and seen_deleted) or time.monotonic() - since > self.timeout:
            del self._pending[owner_uid]
            return True
        return False


async def make_and_remove(client, events: Recorder, owner: dict, made: list[dict], surplus: list[dict]) -> list[dict]:
    """Create the pods ``made`` and delete the ``surplus`` ones, each told in an Event about the
    owner as upstream's controllers tell it; the pods as created."""
    created = []
    for pod in made:
        created.append(await client.create("pods", pod))
        events.record(owner, NORMAL, "SuccessfulCreate", f"Created pod: {created[-1]['metadata']['name']}")
    for pod in surplus:
        await client.delete("pods", pod["metadata"]["name"], pod["metadata"]["namespace"])
        events.record(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
    return created


class Written:
    """The objects a controller last wrote, by uid: its informer's cache may not have them yet, and
    a pass that read the older copy would do again what the write already did."""

    def __init__(self) -> None:
        self._by_uid: dict[str, dict] = {}

    def newest(self, cached: dict) -> dict:
        """The cached object, or the one written here when the cache has not caught up."""
        mine = self._by_uid.get(cached["metadata"]["uid"])
        if mine is not None and int(mine["metadata"]["resourceVersion"]) > int(cached["metadata"]["resourceVersion"]):
            return mine
        return cached

    def remember(self, written: dict | None, fallback: dict) -> dict:
        """``written`` (the answer to a write, None when nothing was written) remembered; the object to go on with."""
        if written is None:
            return fallback
        self._by_uid[written["metadata"]["uid"]] = written
        return written

    def keep_only(self, uids: set[str]) -> None:
        self._by_uid = {uid: obj for uid, obj in self._by_uid.items() if uid in uids}
