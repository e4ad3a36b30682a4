"""The Eviction subresource (pods/NAME/eviction, what `kubectl drain` posts), as kube-apiserver's:
a pod is deleted unless the PodDisruptionBudget that selects it allows no more disruptions, which
is a 429 TooManyRequests that drain retries. An allowed eviction takes one disruption from the
budget's status (the disruption controller recomputes it) and marks the pod with the
DisruptionTarget condition before deleting it."""
from __future__ import annotations

from netplane.api import objects
from netplane.api.errors import ApiError
from netplane.api.objects import matches
from netplane.api.times import time_text
from netplane.api.writes import DeleteOptions, clone

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
CONFLICT_RETRIES = 5


def _too_many(cause: str) -> ApiError:
    return ApiError(429, "TooManyRequests", VIOLATION, {"causes": [{"reason": "DisruptionBudget", "message": cause}]})


def budget_of(store, pod: dict) -> dict | None:
    """The one PodDisruptionBudget selecting the pod (an error when there are several)."""
    namespace = pod["metadata"]["namespace"]
    labels = pod["metadata"].get("labels") or {}
    found = [b for b in store.list("poddisruptionbudgets", namespace)[0]
             if (b.get("spec") or {}).get("selector") == {} or matches((b.get("spec") or {}).get("selector"), labels)]
    if len(found) > 1:
        raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the eviction "
                                             "subresource does not support.")
    return found[0] if found else None


def _take_disruption(store, budget: dict, pod: dict, dry_run: bool) -> bool:
    """Whether the pod may go under its budget (taking one disruption when it must); 429 when not."""
    spec, status = budget.get("spec") or {}, budget.get("status") or {}
    name = budget["metadata"]["name"]
    if int(status.get("observedGeneration", 0)) < int(budget["metadata"].get("generation", 1)):
        raise _too_many(f"The disruption budget {name} is still being processed by the server.")
    healthy, desired = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
    if not objects.ready(pod) and (spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
                                   or (healthy >= desired and desired > 0)):
        return True  # an unready pod costs the budget nothing
    allowed = int(status.get("disruptionsAllowed", 0))
    if allowed < 0:
        raise ApiError(403, "Forbidden", "pdb disruptions allowed is negative")
    if allowed == 0:
        raise _too_many(f"The disruption budget {name} needs {desired} healthy pods and has {healthy} currently")
    if not dry_run:
        taken = clone(budget)
        taken["status"]["disruptionsAllowed"] = allowed - 1
        taken["status"].setdefault("disruptedPods", {})[pod["metadata"]["name"]] = time_text()
        store.update("poddisruptionbudgets", taken, subresource="status")
    return True


def evict(store, namespace: str, name: str, options: DeleteOptions, dry_run: bool) -> None:
    pod = store.get("pods", namespace, name)
    phase = (pod.get("status") or {}).get("phase")
    if "deletionTimestamp" not in pod["metadata"] and phase not in ("Pending", "Succeeded", "Failed"):
        for attempt in range(CONFLICT_RETRIES):  # another eviction took one meanwhile: read the budget again
            budget = budget_of(store, pod)
            try:
                if budget is not None:
                    _take_disruption(store, budget, pod, dry_run)
                break
            except ApiError as err:
                if err.code != 409 or attempt == CONFLICT_RETRIES - 1:
                    raise
        if not dry_run:
            marked = clone(pod)
            marked["status"]["conditions"] = objects.conditions_with(
                pod, objects.disruption_target("EvictionByEvictionAPI", "Eviction API: evicting"))
            store.update("pods", marked, subresource="status")
    store.delete("pods", namespace, name, options, dry_run=dry_run)
