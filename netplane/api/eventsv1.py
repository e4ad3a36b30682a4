"""events.k8s.io/v1 Event: the Events stored as core/v1 ones, served in the newer group's words.

kube-apiserver keeps one Event type and converts at the edge: ``regarding`` is the core
``involvedObject``, ``note`` its ``message``, ``reportingController`` its ``reportingComponent``,
and the core series fields (``source``, ``firstTimestamp``, ``lastTimestamp``, ``count``) carry a
``deprecated`` prefix. An Event made through this group is checked more strictly than a core one
(``eventTime``, ``reportingController``, ``reportingInstance``, ``action`` and ``reason`` required,
the deprecated fields unset), as upstream's ValidateEventCreate does for this group.
"""
from __future__ import annotations

from netplane.api import validation
from netplane.api.resources import Resource, View, by_plural

RESOURCE = Resource("events.k8s.io", "v1", "Event", "events", True, ("ev",), False, type_name="EventsV1Event")
CORE_NAMES = {  # this group's field -> the core/v1 field
    "regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
    "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count",
}
_GROUP_NAMES = {core: ours for ours, core in CORE_NAMES.items()}
FIELD_LABELS = {  # this group's field selector labels -> the core ones
    **{f"regarding.{f}": f"involvedObject.{f}"
       for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": "reason", "reportingController": "reportingComponent", "type": "type",
}
LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128}
NOTE_LIMIT = 1024


def _renamed(obj: dict, names: dict[str, str], api_version: str) -> dict:
    out = {names.get(key, key): value for key, value in obj.items()}
    if "apiVersion" in obj or "kind" in obj:
        out["apiVersion"] = api_version
    return out


def to_core(event: dict) -> dict:
    return _renamed(event, CORE_NAMES, "v1")


def from_core(event: dict) -> dict:
    if event.get("kind") not in ("Event", None):  # a Status, for a delete that only marked
        return event
    return _renamed(event, _GROUP_NAMES, "events.k8s.io/v1")


def problems(event: dict) -> list[validation.Problem]:
    """What this group refuses in a new Event (in its own field names) beyond what core/v1 does."""
    out: list[validation.Problem] = []
    series = event.get("series")
    if isinstance(series, dict):
        if not isinstance(series.get("count"), int) or series["count"] < 2:
            out.append(validation.invalid("series.count", "", "should be at least 2"))
        if not series.get("lastObservedTime"):
            out.append(validation.required("series.lastObservedTime"))
    if not event.get("eventTime"):
        out.append(validation.required("eventTime"))
    if event.get("type") not in ("Normal", "Warning"):
        out.append(validation.invalid("type", "", f"has invalid value: {event.get('type') or ''}"))
    for field in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"):
        if event.get(field):
            out.append(validation.invalid(field, "", "needs to be unset"))
    if any((event.get("deprecatedSource") or {}).get(k) for k in ("component", "host")):
        out.append(validation.invalid("deprecatedSource", "", "needs to be unset"))
    namespace = (event.get("metadata") or {}).get("namespace")
    if not (event.get("regarding") or {}).get("namespace") and namespace not in ("default", "kube-system"):
        out.append(validation.invalid("regarding.namespace", "", "does not match event.namespace"))
    controller = event.get("reportingController") or ""
    if not controller:
        out.append(validation.required("reportingController"))
    out += [validation.invalid("reportingController", controller, m) for m in validation.qualified_name(controller)]
    for field, limit in LIMITS.items():
        value = event.get(field) or ""
        if not value:
            out.append(validation.required(field))
        elif len(value) > limit:
            out.append(validation.invalid(field, "", f"can have at most {limit} characters"))
    if len(event.get("note") or "") > NOTE_LIMIT:
        out.append(validation.invalid("note", "", f"can have at most {NOTE_LIMIT} characters"))
    return out


def check_create(event: dict) -> None:
    found = problems(event)
    if found:
        raise validation.error(RESOURCE, (event.get("metadata") or {}).get("name", ""), found)


VIEW = View(RESOURCE, by_plural("events"), to_core, from_core, FIELD_LABELS, check_create)
