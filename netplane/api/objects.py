"""Small helpers on Kubernetes objects that controllers and agents share."""
from __future__ import annotations

from datetime import datetime, timezone

from netplane.api.lifecycle import clone

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # a MicroTime, as a Lease's acquireTime and renewTime
CONTAINER_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")  # a pod's


def container_statuses(pod: dict) -> list[dict]:
    """The statuses of all of a pod's containers: app, init and ephemeral."""
    status = pod.get("status") or {}
    return [s for key in CONTAINER_STATUS_LISTS for s in status.get(key) or []]


def now_text() -> str:
    """Now, as a MicroTime."""
    return datetime.now(timezone.utc).strftime(MICRO_TIME)


def age_seconds(stamp: str) -> float:
    """Seconds since a MicroTime."""
    return (datetime.now(timezone.utc) - datetime.strptime(stamp, MICRO_TIME).replace(tzinfo=timezone.utc)
            ).total_seconds()


def status_differs(obj: dict, status: dict) -> bool:
    """Whether writing `status` (merged over the current one) would change anything."""
    have = obj.get("status", {})
    return any(have.get(k) != v for k, v in status.items())


async def write_status(client, plural: str, obj: dict, status: dict, merge: bool = True) -> dict | None:
    """Write `status` through the status subresource (last writer wins: it is this writer's field),
    unless it changes nothing."""
    if not status_differs(obj, status) and (merge or obj.get("status") == status):
        return None
    fresh = clone(obj)
    fresh["metadata"].pop("resourceVersion", None)
    fresh["status"] = {**obj.get("status", {}), **status} if merge else status
    return await client.update_status(plural, fresh)


def matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; an empty one matches nothing."""
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True
