"""Small helpers on Kubernetes objects that controllers and agents share."""
from __future__ import annotations

from netplane.api.times import time_text
from netplane.api.writes import clone

CONTAINER_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")  # a pod's


def container_statuses(pod: dict) -> list[dict]:
    """The statuses of all of a pod's containers: app, init and ephemeral."""
    status = pod.get("status") or {}
    return [s for key in CONTAINER_STATUS_LISTS for s in status.get(key) or []]


DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"  # the annotation exec and logs honour
CONTAINER_ID_SCHEME = "netplane://"  # a container's ID is its process's pid behind this


def default_container(pod: dict) -> str:
    """The container exec and logs pick when none is named: the annotation's, else the first."""
    return (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER) or pod["spec"]["containers"][0]["name"]


def container_id(pid: int) -> str:
    return f"{CONTAINER_ID_SCHEME}{pid}"


def container_pid(status: dict) -> int:
    """The pid of a container from its status's containerID."""
    return int(status["containerID"].removeprefix(CONTAINER_ID_SCHEME))


def ready(obj: dict) -> bool:
    """Whether a pod's or a node's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


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


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A plain map selector (a Service's selector, a nodeSelector) against labels; an empty one matches all."""
    return all(labels.get(k) == v for k, v in selector.items())


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


def conditions_with(obj: dict, condition: dict) -> list[dict]:
    """The object's status conditions with ``condition`` in place of any of its type."""
    kept = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") != condition["type"]]
    return [*kept, condition]


def disruption_target(reason: str, message: str) -> dict:
    """The DisruptionTarget condition a pod gets before an eviction, preemption or taint deletes it."""
    return {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None, "lastTransitionTime": time_text(),
            "reason": reason, "message": message}
