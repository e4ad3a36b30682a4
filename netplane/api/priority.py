"""PriorityClasses and the Priority admission plugin: a new pod's spec.priority (and preemptionPolicy)
comes from its priorityClassName, or from the class marked globalDefault, else 0; a name that no
class has, a priority the pod gives itself and a second globalDefault class are refused, as
kube-apiserver refuses them. The API server makes the two system classes at start, as upstream's does."""
from __future__ import annotations

from netplane.api.serviceaccounts import forbidden, lookup

SYSTEM_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
HIGHEST_USER_PRIORITY = 1000000000  # scheduling.HighestUserDefinablePriority


def system_classes() -> list[dict]:
    return [{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
             "value": value, "description": "Used for system critical pods that must not be moved from their "
                                            "current node." if name == "system-node-critical" else
             "Used for system critical pods that must run in the cluster, but can be moved to another node if "
             "necessary."} for name, value in SYSTEM_CLASSES.items()]


def admit(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
    """The Priority admission plugin: a new pod's priority, and only one globalDefault class."""
    if plural == "priorityclasses" and verb in ("create", "update") and obj.get("globalDefault"):
        other = next((c for c in store.list("priorityclasses")[0] if c.get("globalDefault")
                      and c["metadata"]["name"] != obj["metadata"]["name"]), None)
        if other is not None:
            raise forbidden("priorityclasses.scheduling.k8s.io", obj["metadata"]["name"],
                            f"PriorityClass {other['metadata']['name']} is marked as default. Only one default can exist")
    if plural != "pods" or verb != "create":
        return obj
    spec, pod_name = obj["spec"], obj["metadata"].get("name", "")
    name = spec.get("priorityClassName")
    if name:
        found = lookup(store, "priorityclasses", None, name)
        if found is None:
            raise forbidden("pods", pod_name, f"no PriorityClass with name {name} was found")
    else:
        found = next((c for c in store.list("priorityclasses")[0] if c.get("globalDefault")), None)
        if found is not None:
            spec["priorityClassName"] = found["metadata"]["name"]
    computed = int(found.get("value", 0)) if found is not None else 0
    given = spec.get("priority")
    if given not in (None, 0) and given != computed:  # 0 is also what the defaults gave a pod without one
        raise forbidden("pods", pod_name, f"the integer value of priority ({given}) must not be provided in pod spec; "
                                          f"priority admission controller computed {computed} from the given "
                                          "PriorityClass name")
    spec["priority"] = computed
    if found is not None:
        spec["preemptionPolicy"] = found.get("preemptionPolicy") or "PreemptLowerPriority"
    return obj
