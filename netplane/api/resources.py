"""The resources the embedded API server serves, and where they live on the wire."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core (legacy) group
    version: str
    kind: str
    plural: str
    namespaced: bool
    aliases: tuple[str, ...]
    has_status: bool
    type_name: str = ""  # its schema's name when the kind alone is taken (another group's Event)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def schema_key(self) -> str:
        return self.type_name or self.kind


@dataclass(frozen=True)
class View:
    """A resource served in another group's words whose objects are stored as ``stored``'s: converted
    on the way in and out, its field selector labels mapped to the stored ones, and a new object
    checked by ``check_create`` (in the view's words) before the stored kind's own validation."""

    served: Resource
    stored: Resource
    to_stored: Callable[[dict], dict]
    from_stored: Callable[[dict], dict]
    field_labels: Mapping[str, str]
    check_create: Callable[[dict], None]


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), True),
    Resource("", "v1", "Node", "nodes", False, ("no",), True),
    Resource("", "v1", "Pod", "pods", True, ("po",), True),
    Resource("", "v1", "Service", "services", True, ("svc",), True),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",), False),
    Resource("", "v1", "Event", "events", True, ("ev",), False),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",), False),
    Resource("", "v1", "Secret", "secrets", True, (), False),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), False),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, ("endpointslice",), False),
    Resource("apps", "v1", "Deployment", "deployments", True, ("deploy",), True),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), True),
    Resource("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), True),
    Resource("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), True),
    Resource("apps", "v1", "ControllerRevision", "controllerrevisions", True, (), False),
    Resource("batch", "v1", "Job", "jobs", True, (), True),
    Resource("batch", "v1", "CronJob", "cronjobs", True, ("cj",), True),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True, (), False),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",), False),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), True),
    Resource("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",), False),
)

_BY_PLURAL = {r.plural: r for r in RESOURCES}
_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_WORD = {w: r for r in RESOURCES for w in (r.plural, r.singular, *r.aliases)}


def _supported() -> str:
    return ", ".join(f"{r.plural} ({', '.join(r.aliases)})" for r in RESOURCES)


def by_plural(plural: str) -> Resource:
    try:
        return _BY_PLURAL[plural]
    except KeyError:
        raise KeyError(f"unknown resource {plural!r}; supported: {_supported()}") from None


def by_kind(kind: str) -> Resource:
    try:
        return _BY_KIND[kind]
    except KeyError:
        kinds = ", ".join(r.kind for r in RESOURCES)
        raise KeyError(f"unknown kind {kind!r}; supported: {kinds}") from None


def lookup(word: str) -> Resource:
    """A resource by plural, lower-case singular or alias, as kubectl accepts them."""
    try:
        return _BY_WORD[word.lower()]
    except KeyError:
        raise KeyError(f"unknown resource type {word!r}; supported: {_supported()}") from None


def api_version(res: Resource) -> str:
    return f"{res.group}/{res.version}" if res.group else res.version


def group_path(res: Resource) -> str:
    """The root of the resource's API group: ``/api/v1`` or ``/apis/<group>/<version>``."""
    return f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"


def base_path(res: Resource, namespace: str | None = None) -> str:
    """The collection path; without a namespace a namespaced resource's all-namespaces list."""
    if res.namespaced and namespace:
        return f"{group_path(res)}/namespaces/{namespace}/{res.plural}"
    return f"{group_path(res)}/{res.plural}"
