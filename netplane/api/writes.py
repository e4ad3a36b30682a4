"""What the apiserver does to an object over its life, as pure functions of objects and options.

Kept apart from storage (store.py holds the SQL, the lock and the event log), so that a second
storage backend runs exactly the same rules:

- create: uid, creationTimestamp, ``generation: 1``; system fields a client sent are dropped;
- update: the system fields stay; ``generation`` goes up by one when anything but metadata and
  status changed; the status subresource changes only status;
- delete: preconditions (uid, resourceVersion); graceful deletion of a pod bound to a node
  (``deletionTimestamp`` = now + grace, the kubelet deletes it for good with grace 0 once its
  containers stopped); ``metadata.finalizers`` keep a deleting object until they are emptied;
- the ``autoscaling/v1 Scale`` view of a Deployment or ReplicaSet.
"""
from __future__ import annotations

import pickle
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from netplane.api import defaults
from netplane.api.errors import ApiError, bad_request, conflict, invalid
from netplane.api.resources import Resource
from netplane.api.times import time_text

POLICIES = ("Orphan", "Background", "Foreground")
FOREGROUND = "foregroundDeletion"  # the finalizer of an object deleted with propagationPolicy Foreground
# the kinds whose objects own others here (the garbage collector follows them); another kind has no
# dependents to wait for, so a foreground delete of it is a plain one
OWNER_KINDS = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "CronJob")
DEFAULT_POD_GRACE = 30
SCALABLE = frozenset({"deployments", "replicasets", "statefulsets"})
SCALE_API_VERSION = "autoscaling/v1"


def clone(obj: Any) -> Any:
    """A deep copy of an API object (plain JSON data), through pickle: about 3x faster than
    copy.deepcopy, and the store copies every object it takes in or hands out."""
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _system_fields_of(old: dict) -> dict:
    keep = ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
    return {k: old["metadata"][k] for k in keep if k in old["metadata"]}


# -- create and update


def prepare_create(res: Resource, obj: dict, now: datetime) -> None:
    """Sets the fields the server owns on a new object, and the defaults (in place)."""
    meta = obj["metadata"]
    for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        meta.pop(key, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = time_text(now)
    meta["generation"] = 1
    if res.kind == "Job":
        _job_selector(obj)
    defaults.apply_on_create(res, obj)


JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


def _job_selector(job: dict) -> None:
    """What the Job strategy does on create unless ``manualSelector``: the pod template is labelled
    with the Job's name and uid (the new keys and the legacy ones), and the selector picks the uid
    (validation.generated_selector checks that a selector the client gave does not pick another)."""
    spec = job.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return
    template = spec["template"] = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    meta = template["metadata"] = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    labels = meta["labels"] = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    uid, name = job["metadata"]["uid"], job["metadata"].get("name", "")
    for key in JOB_NAME_LABELS:
        labels.setdefault(key, name)
    for key in JOB_UID_LABELS:
        labels.setdefault(key, uid)
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    match = selector["matchLabels"] = selector.get("matchLabels") or {}
    match.setdefault(JOB_UID_LABELS[0], uid)
    spec["selector"] = selector


EPHEMERAL = "ephemeralcontainers"  # the pod subresource that adds ephemeral containers (kubectl debug)


def prepare_update(res: Resource, new: dict, old: dict, subresource: str | None) -> dict:
    """The object an update stores, before admission: system fields and the other half kept (of
    a pod's ephemeralcontainers, everything but its ephemeral containers)."""
    if subresource == "status":
        return {**clone(old), "status": new.get("status", {})}
    if subresource == EPHEMERAL:
        kept = clone(old)
        added = (new.get("spec") or {}).get("ephemeralContainers")
        kept["spec"].pop("ephemeralContainers", None)
        if added:
            kept["spec"]["ephemeralContainers"] = added
        defaults.pod_spec(kept["spec"])
        return kept
    meta = new["metadata"]
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        meta.pop(key, None)
    meta.update(_system_fields_of(old))
    new.pop("status", None)
    if res.has_status and "status" in old:
        new["status"] = clone(old["status"])
    defaults.apply(res, new)
    added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
    if old["metadata"].get("deletionTimestamp") and added:
        raise invalid(res.kind, meta.get("name", ""), "metadata.finalizers",
                      "Forbidden: no new finalizers can be added if the object is being deleted, "
                      f"found new finalizers {sorted(added)!r}")
    return new


def spec_changed(old: dict, new: dict) -> bool:
    """Whether anything but metadata and status differs (what ``generation`` counts)."""
    def body(o: dict) -> dict:
        return {k: v for k, v in o.items() if k not in ("metadata", "status")}

    return body(old) != body(new)


def after_admission(old: dict, new: dict) -> None:
    """Bumps ``generation`` (in place) when the update changed the object's spec."""
    if spec_changed(old, new):
        new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1


def finished_deleting(obj: dict) -> bool:
    """A deleting object whose finalizers are gone and whose grace period is over: remove it."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers") and \
        not meta.get("deletionGracePeriodSeconds")


# -- delete


@dataclass(frozen=True)
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    preconditions: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False  # kubectl sends it in the body: {"dryRun": ["All"]}

    @staticmethod
    def parse(body: Any, query: Mapping[str, str]) -> DeleteOptions:
        """DeleteOptions from a request's JSON body and/or query parameters (the query wins)."""
        if body in (None, b"", ""):
            body = {}
        if not isinstance(body, dict):
            raise bad_request("the DeleteOptions body must be a JSON object")
        kind = body.get("kind", "DeleteOptions")
        if kind != "DeleteOptions":
            raise bad_request(f"the body of a DELETE must be DeleteOptions, not {kind!r}")
        grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        if grace is not None:
            try:
                grace = int(grace)
            except (TypeError, ValueError):
                raise bad_request(f"gracePeriodSeconds must be an integer, not {grace!r}") from None
        policy = query.get("propagationPolicy", body.get("propagationPolicy"))
        orphan = query.get("orphanDependents", body.get("orphanDependents"))
        if orphan is not None:
            if policy is not None:
                raise invalid("DeleteOptions", "", "propagationPolicy",
                              "Invalid value: orphanDependents and propagationPolicy cannot both be set")
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        if policy is not None and policy not in POLICIES:
            raise invalid("DeleteOptions", "", "propagationPolicy",
                          f"Unsupported value: {policy!r}: supported values: {', '.join(POLICIES)}")
        pre = body.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if f"preconditions.{key}" in query:
                pre = {**pre, key: query[f"preconditions.{key}"]}
        if not isinstance(pre, dict):
            raise bad_request("preconditions must be an object with uid and/or resourceVersion")
        dry_run = body.get("dryRun") or []
        if not isinstance(dry_run, list) or any(v != "All" for v in dry_run):
            raise bad_request(f'dryRun: Unsupported value: {dry_run!r}: supported values: "All"')
        return DeleteOptions(grace, policy, {k: str(v) for k, v in pre.items() if v not in (None, "")},
                             bool(dry_run))


def check_preconditions(res: Resource, obj: dict, preconditions: Mapping[str, str]) -> None:
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion"):
        want = preconditions.get(key)
        if want is not None and want != meta.get(key):
            label = "UID" if key == "uid" else "ResourceVersion"
            details = conflict(res.plural, meta.get("name", ""), res.group).details
            raise ApiError(409, "Conflict", f"Precondition failed: {label} in precondition: {want}, "
                           f"{label} in object meta: {meta.get(key)}", details)


def pod_grace_period(pod: dict, requested: int | None) -> int:
    """How long a pod's containers get to stop: 0 for a pod no kubelet runs."""
    spec = pod.get("spec") or {}
    period = requested if requested is not None else spec.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE)
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    return 1 if period < 0 else period


def plan_delete(res: Resource, obj: dict, options: DeleteOptions, now: datetime) -> tuple[str, dict]:
    """("remove", obj) to delete at once, ("update", terminating obj) to mark it deleting,
    or ("none", obj) when a deletion is already under way and the request changes nothing."""
    meta = obj["metadata"]
    requested = options.grace_period_seconds
    if meta.get("deletionTimestamp"):
        current = meta.get("deletionGracePeriodSeconds")
        if requested is None or (current is not None and current <= max(requested, 0)):
            return "none", obj
        grace = max(requested, 0)
        new = _deleting(obj, now, grace, bump=False)
        return ("remove", obj) if finished_deleting(new) else ("update", new)
    grace = pod_grace_period(obj, requested) if res.kind == "Pod" else 0
    if options.propagation_policy == "Foreground" and res.kind in OWNER_KINDS:  # the collector removes it last
        marked = _deleting(obj, now, grace, bump=True)
        finalizers = marked["metadata"].setdefault("finalizers", [])
        if FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        return "update", marked
    if grace > 0 or meta.get("finalizers"):
        return "update", _deleting(obj, now, grace, bump=True)
    return "remove", obj


def _deleting(obj: dict, now: datetime, grace: int, bump: bool) -> dict:
    new = clone(obj)
    meta = new["metadata"]
    meta["deletionTimestamp"] = time_text(now + timedelta(seconds=grace))
    meta["deletionGracePeriodSeconds"] = grace
    if bump and meta.get("generation"):
        meta["generation"] += 1
    return new


def orphaned(dependent: dict, owner_uid: str) -> dict | None:
    """The dependent without its owner reference to ``owner_uid`` (None if it has none)."""
    refs = dependent["metadata"].get("ownerReferences") or []
    kept = [r for r in refs if r.get("uid") != owner_uid]
    if len(kept) == len(refs):
        return None
    new = clone(dependent)
    if kept:
        new["metadata"]["ownerReferences"] = kept
    else:
        new["metadata"].pop("ownerReferences")
    return new


# -- the scale subresource


def selector_string(selector: dict | None) -> str:
    """A LabelSelector in the text form of label selectors: ``app=web,tier in (a,b),!canary``."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), ",".join(sorted(expr.get("values") or []))
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op} ({values})"))
    return ",".join(terms)


def scale_of(obj: dict) -> dict:
    """The ``autoscaling/v1 Scale`` of a Deployment, ReplicaSet or StatefulSet."""
    meta = obj["metadata"]
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {
        "kind": "Scale",
        "apiVersion": SCALE_API_VERSION,
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string((obj.get("spec") or {}).get("selector")),
        },
    }


def apply_scale(res: Resource, obj: dict, scale: Any) -> dict:
    """The object with the Scale's ``spec.replicas``; a Scale for another object is refused."""
    if not isinstance(scale, dict) or not isinstance(scale.get("metadata", {}), dict):
        raise bad_request("the request body must be an autoscaling/v1 Scale")
    if scale.get("kind", "Scale") != "Scale" or scale.get("apiVersion", SCALE_API_VERSION) != SCALE_API_VERSION:
        raise bad_request(f"the body must be an {SCALE_API_VERSION} Scale, "
                          f"not ({scale.get('apiVersion')}, {scale.get('kind')})")
    name = obj["metadata"]["name"]
    meta = scale.get("metadata") or {}
    if meta.get("name") not in (None, "", name):
        raise bad_request(f"the name of the Scale ({meta['name']}) does not match the object's ({name})")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise invalid("Scale", name, "spec.replicas",
                      f"Invalid value: {replicas!r}: must be a non-negative integer")
    new = clone(obj)
    new.setdefault("spec", {})["replicas"] = replicas
    new["metadata"]["resourceVersion"] = meta.get("resourceVersion") or obj["metadata"]["resourceVersion"]
    return new


def scale_subresource_of(res: Resource) -> bool:
    return res.plural in SCALABLE


def error_for_subresource(res: Resource, subresource: str | None) -> ApiError | None:
    if subresource is None or (subresource == "status" and res.has_status) or \
            (subresource == "scale" and scale_subresource_of(res)) or \
            (subresource == EPHEMERAL and res.plural == "pods"):
        return None
    return ApiError(404, "NotFound", f"{res.plural} has no subresource {subresource!r}")
