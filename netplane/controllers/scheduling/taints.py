"""Taints and tolerations (core/v1 ToleratesTaint), and the taints the node lifecycle controller
keeps on nodes that are not Ready, unreachable or cordoned."""
from __future__ import annotations

from netplane.api import objects

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"


def tolerates(toleration: dict, taint: dict) -> bool:
    """Whether one toleration covers one taint: its effect (or every effect), its key (or every key,
    with Exists), its value (Equal, the default, or any, with Exists)."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(pod: dict, taints: list[dict], effects: tuple[str, ...]) -> list[dict]:
    """The taints of these effects that none of the pod's tolerations covers."""
    tolerations = pod.get("spec", {}).get("tolerations") or []
    return [t for t in taints if t.get("effect") in effects and not any(tolerates(tol, t) for tol in tolerations)]


def condition_taints(node: dict) -> list[dict]:
    """The taints a node's state calls for (TaintNodesByCondition and taint-based eviction):
    not-ready or unreachable while it is not Ready, unschedulable while it is cordoned."""
    ready = next((c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    wanted = []
    if ready is not None and ready.get("status") != "True":
        key = UNREACHABLE if ready.get("status") == "Unknown" else NOT_READY
        wanted += [{"key": key, "effect": NO_SCHEDULE}, {"key": key, "effect": NO_EXECUTE}]
    if node.get("spec", {}).get("unschedulable"):
        wanted.append({"key": UNSCHEDULABLE, "effect": NO_SCHEDULE})
    return wanted


def effective_taints(node: dict) -> list[dict]:
    """The node's taints, and those its state calls for that the controller has not written yet
    (a node that just registered, not Ready yet)."""
    taints = list(node.get("spec", {}).get("taints") or [])
    if not objects.ready(node) and not any(t.get("key") in (NOT_READY, UNREACHABLE) for t in taints):
        taints += [t for t in condition_taints(node) if t["key"] != UNSCHEDULABLE] or \
            [{"key": NOT_READY, "effect": NO_SCHEDULE}]
    return taints


def same(a: dict, b: dict) -> bool:
    return (a.get("key"), a.get("effect")) == (b.get("key"), b.get("effect"))
