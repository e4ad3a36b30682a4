"""The disruption controller: each PodDisruptionBudget's status, which the Eviction subresource
goes by: the pods it expects (its pods' controllers' replicas, or the pods themselves for a plain
minAvailable), how many must stay healthy, how many are, and so how many may be evicted now. Pods
an eviction took but whose deletion has not shown yet (disruptedPods) are not counted healthy, for
at most two minutes, as upstream."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from netplane.api import objects
from netplane.api.loop import Reconciler
from netplane.api.errors import ApiError
from netplane.api.times import parse_time, time_text

DELETION_TIMEOUT = timedelta(minutes=2)
RETRY_SECONDS = 0.2
SCALED_KINDS = {"ReplicaSet": "replicasets", "StatefulSet": "statefulsets"}


def _amount(value: int | str, total: int) -> int:
    """An int, or a percentage of total rounded up."""
    return math.ceil(int(value[:-1]) * total / 100) if isinstance(value, str) else int(value)


def budget_status(pdb: dict, pods: list[dict], scale: int, now: datetime) -> dict:
    """The budget's status, its pods being those its selector picks (live ones) and ``scale`` the
    replicas their controllers want."""
    spec, old = pdb.get("spec") or {}, pdb.get("status") or {}
    names = {p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"]}
    disrupted = {name: when for name, when in (old.get("disruptedPods") or {}).items()
                 if name in names and now - parse_time(when) < DELETION_TIMEOUT}
    healthy = sum(objects.ready(p) for p in pods if p["metadata"]["name"] in names and
                  p["metadata"]["name"] not in disrupted)
    if spec.get("minAvailable") is not None and not isinstance(spec["minAvailable"], str):
        expected, desired = len(pods), int(spec["minAvailable"])
    elif spec.get("minAvailable") is not None:
        expected = scale
        desired = _amount(spec["minAvailable"], expected)
    elif spec.get("maxUnavailable") is not None:
        expected = scale
        desired = max(0, expected - _amount(spec["maxUnavailable"], expected))
    else:  # neither: nothing to keep
        expected, desired = scale, 0
    allowed = max(0, healthy - desired)
    condition = {"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                 "reason": "SufficientPods" if allowed else "InsufficientPods", "message": "",
                 "observedGeneration": pdb["metadata"].get("generation", 1)}
    before = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
    condition["lastTransitionTime"] = before.get("lastTransitionTime") if before.get("status") == condition["status"] \
        else time_text(now)
    return {"observedGeneration": pdb["metadata"].get("generation", 1), "disruptionsAllowed": allowed,
            "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            **({"disruptedPods": disrupted} if disrupted else {}), "conditions": [condition]}


class DisruptionController:
    def __init__(self, client, budgets, pods, replicasets, statefulsets) -> None:
        self.client, self.budgets, self.pods = client, budgets, pods
        self.owners = {"replicasets": replicasets, "statefulsets": statefulsets}
        self.loop = Reconciler("disruption", self.reconcile)
        for informer in (budgets, pods, replicasets, statefulsets):
            informer.add_handler(self.loop.trigger)

    def _scale(self, pods: list[dict]) -> int:
        """The replicas the pods' controllers want (a pod with none counts as one)."""
        seen, total = set(), 0
        for pod in pods:
            ref = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            plural = SCALED_KINDS.get((ref or {}).get("kind", ""))
            owner = self.owners[plural].cache.get((pod["metadata"]["namespace"], ref["name"])) if plural else None
            if owner is None:
                total += 1
            elif owner["metadata"]["uid"] not in seen:
                seen.add(owner["metadata"]["uid"])
                total += int(owner["spec"].get("replicas", 1))
        return total

    async def reconcile(self) -> None:
        now = datetime.now(timezone.utc)
        pods = [p for p in self.pods.cache.values() if (p.get("status") or {}).get("phase") not in ("Succeeded",
                                                                                                      "Failed")]
        for pdb in list(self.budgets.cache.values()):
            selector = (pdb.get("spec") or {}).get("selector")
            namespace = pdb["metadata"]["namespace"]
            mine = [p for p in pods if p["metadata"]["namespace"] == namespace and
                    (selector == {} or objects.matches(selector, p["metadata"].get("labels") or {}))]
            status = budget_status(pdb, mine, self._scale(mine), now)
            if status.get("disruptedPods"):
                self.loop.wake_in(DELETION_TIMEOUT.total_seconds())
            if status == pdb.get("status"):
                continue
            try:  # at the version read: an eviction that took a disruption meanwhile is not overwritten
                await self.client.update_status("poddisruptionbudgets", {**pdb, "status": status})
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
                self.loop.wake_in(RETRY_SECONDS)
