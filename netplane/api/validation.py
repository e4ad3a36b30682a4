"""Field validation as kube-apiserver's (apimachinery's name and label rules, the core and apps
validation of Pods, Services and workloads), with upstream's field paths and messages (v1.32), so a
manifest that a cluster refuses is refused here the same way, and one it takes is taken.

``problems`` returns every error of an object, as upstream gathers them; ``check`` raises them as
one 422 Invalid. Only what a write can get wrong is checked; defaults are applied afterwards (a
Service port's protocol, targetPort), so the checks read them as their defaults.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from netplane.api import cron, quantity
from netplane.api.errors import ApiError
from netplane.api.objects import matches
from netplane.api.priority import HIGHEST_USER_PRIORITY, SYSTEM_CLASSES
from netplane.api.resources import Resource
from netplane.api.writes import JOB_UID_LABELS

ANNOTATIONS_MAX_BYTES = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB
PROTOCOLS = ("SCTP", "TCP", "UDP")
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet")

_REASONS = {"Invalid value": "FieldValueInvalid", "Required value": "FieldValueRequired",
            "Duplicate value": "FieldValueDuplicate", "Unsupported value": "FieldValueNotSupported",
            "Too long": "FieldValueTooLong", "Forbidden": "FieldValueForbidden", "Not found": "FieldValueNotFound"}


@dataclass(frozen=True)
class Problem:
    """One field error: ``spec.ports[1].name: Duplicate value: "http"``."""

    field: str
    type: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        parts = [self.type]
        if self.type in ("Invalid value", "Duplicate value", "Unsupported value", "Not found") and \
                self.value is not OMITTED:
            parts.append(_render(self.value))
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)


class Go(str):
    """A value as Go's %#v prints it, shown as it is (upstream prints some values that way)."""


OMITTED = Go("")  # a value upstream leaves out of the message (field.OmitValueType)


def go_map(found: dict) -> Go:
    return Go("map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(found.items())) + "}")


def _render(value: Any) -> str:
    if isinstance(value, Go):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def invalid(field: str, value: Any, detail: str) -> Problem:
    return Problem(field, "Invalid value", value, detail)


def required(field: str, detail: str = "") -> Problem:
    return Problem(field, "Required value", detail=detail)


def duplicate(field: str, value: Any) -> Problem:
    return Problem(field, "Duplicate value", value)


def error(res: Resource, name: str, problems: list[Problem]) -> ApiError:
    """The 422 Invalid Status of a list of problems, worded as upstream's NewInvalid."""
    bodies = list(dict.fromkeys(f"{p.field}: {p.body()}" for p in problems))
    summary = bodies[0] if len(bodies) == 1 else "[" + ", ".join(bodies) + "]"
    causes = [{"reason": _REASONS.get(p.type, "FieldValueInvalid"), "message": p.body(), "field": p.field}
              for p in problems]
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    group = {"group": res.group} if res.group else {}
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}',
                    {"name": name, **group, "kind": res.kind, "causes": causes})


# -- apimachinery's string rules: each returns the messages of what is wrong with a value

def _regex_error(message: str, regex: str, *examples: str) -> str:
    shown = "".join(f"{' or ' if i else ''}'{e}', " for i, e in enumerate(examples))
    return f"{message} (e.g. {shown}regex used for validation is '{regex}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def _length(value: str, n: int) -> list[str]:
    return [_max_len(n)] if len(value) > n else []


_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_DNS1035 = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = f"({_QUALIFIED_NAME})?"
SUBDOMAIN_MESSAGE = _regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character", _SUBDOMAIN, "example.com")
LABEL_MESSAGE = _regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character", _LABEL, "my-name", "123-abc")
DNS1035_MESSAGE = _regex_error(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character", _DNS1035, "my-name", "abc-123")
_QUALIFIED_NAME_MESSAGE = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character", _QUALIFIED_NAME, "MyName", "my.name", "123-abc")
LABEL_VALUE_MESSAGE = _regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character", _LABEL_VALUE, "MyValue", "my_value", "12345")


def _matches(regex: str, value: str) -> bool:
    return re.fullmatch(regex, value) is not None


def dns1123_subdomain(value: str) -> list[str]:
    return _length(value, 253) + ([] if _matches(_SUBDOMAIN, value) else [SUBDOMAIN_MESSAGE])


def dns1123_label(value: str) -> list[str]:
    if _matches(_LABEL, value):
        return _length(value, 63)
    return _length(value, 63) + ["must not contain dots" if _matches(_SUBDOMAIN, value) else LABEL_MESSAGE]


def dns1035_label(value: str) -> list[str]:
    return _length(value, 63) + ([] if _matches(_DNS1035, value) else [DNS1035_MESSAGE])


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: ``[prefix/]name``, the prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    out = []
    if len(parts) == 2:
        prefix = parts[0]
        wrong = dns1123_subdomain(prefix) if prefix else ["must be non-empty"]
        out += [f"prefix part {m}" for m in wrong]
    name = parts[-1]
    if not name:
        return out + ["name part must be non-empty"]
    out += [f"name part {m}" for m in _length(name, 63)]
    return out + ([] if _matches(_QUALIFIED_NAME, name) else [f"name part {_QUALIFIED_NAME_MESSAGE}"])


def label_value(value: str) -> list[str]:
    return _length(value, 63) + ([] if _matches(_LABEL_VALUE, value) else [LABEL_VALUE_MESSAGE])


_CONFIG_KEY_MESSAGE = _regex_error("a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                                   "[-._a-zA-Z0-9]+", "key.name", "KEY_NAME", "key-name")


def config_key(value: str) -> list[str]:
    """IsConfigMapKey: a key of a ConfigMap's or Secret's data, which becomes a file name."""
    out = _length(value, 253) + ([] if _matches("[-._a-zA-Z0-9]+", value) else [_CONFIG_KEY_MESSAGE])
    if value in (".", ".."):
        out.append(f"must not be '{value}'")
    elif value.startswith(".."):
        out.append("must not start with '..'")
    return out


def port_name(value: str) -> list[str]:
    """IsValidPortName: an IANA service name."""
    out = _length(value, 15)
    if not _matches("[-a-z0-9]+", value):
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", value):
        out.append("must contain at least one letter (a-z)")
    if "--" in value:
        out.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def _port_number(field: str, value: Any) -> list[Problem]:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return []
    return [invalid(field, value, "must be between 1 and 65535, inclusive")]


def _each(field: str, value: str, rule) -> list[Problem]:
    return [invalid(field, value, message) for message in rule(value)]


# -- object metadata

NAME_RULES = {"Namespace": dns1123_label, "Service": dns1035_label}


def _metadata(res: Resource, meta: dict) -> list[Problem]:
    out = _each("metadata.name", meta.get("name", ""), NAME_RULES.get(res.kind, dns1123_subdomain))
    out += labels("metadata.labels", meta.get("labels"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        for key in annotations:
            out += [invalid("metadata.annotations", key, m) for m in qualified_name(str(key).lower())]
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
        if size > ANNOTATIONS_MAX_BYTES:
            out.append(Problem("metadata.annotations", "Too long",
                               detail=f"must have at most {ANNOTATIONS_MAX_BYTES} bytes"))
    return out


def labels(field: str, found: Any) -> list[Problem]:
    """ValidateLabels: each key a qualified name, each value a label value."""
    if not isinstance(found, dict):
        return []
    out = []
    for key, value in found.items():
        out += [invalid(field, key, m) for m in qualified_name(str(key))]
        out += [invalid(field, value, m) for m in label_value(str(value))] if isinstance(value, str) else \
            [invalid(field, value, "must be a string")]
    return out


# -- kinds

def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> list[Problem]:
    if value in allowed:
        return []
    return [Problem(field, "Unsupported value", value, "supported values: " + ", ".join(f'"{a}"' for a in allowed))]


def _service(spec: dict) -> list[Problem]:
    out = labels("spec.selector", spec.get("selector")) + _unsupported("spec.type", spec.get("type", "ClusterIP"),
                                                                        SERVICE_TYPES)
    ports = spec.get("ports") or []
    if not ports and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
        out.append(required("spec.ports"))
    names: set[str] = set()
    keys: set[tuple[Any, str]] = set()
    for at, port in _items("spec.ports", ports, out):
        if port.get("name"):
            out += _named(at, port["name"], dns1123_label, names)
        elif len(ports) > 1:
            out.append(required(f"{at}.name"))
        out += _port_number(f"{at}.port", port.get("port"))
        protocol = port.get("protocol", "TCP")
        out += _unsupported(f"{at}.protocol", protocol, PROTOCOLS)
        target = port.get("targetPort")
        if isinstance(target, str) and target:
            out += _each(f"{at}.targetPort", target, port_name)
        elif target not in (None, 0, ""):
            out += _port_number(f"{at}.targetPort", target)
        key = (port.get("port"), protocol)
        if key in keys:
            out.append(duplicate(at, _service_port_key(*key)))
        keys.add(key)
    return out


def _service_port_key(port: Any, protocol: str) -> Go:
    """Upstream's key for duplicate ports: a ServicePort of only these two fields, printed with %#v."""
    return Go(f'core.ServicePort{{Name:"", Protocol:"{protocol}", AppProtocol:(*string)(nil), Port:{port}, '
              'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}')


def _items(field: str, items: Any, out: list[Problem]) -> Iterator[tuple[str, dict]]:
    """(path, item) of each object in a list; what is not an object is reported in out."""
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            yield f"{field}[{i}]", item
        else:
            out.append(invalid(f"{field}[{i}]", item, "must be an object"))


def _named(at: str, name: str, rule, seen: set[str]) -> list[Problem]:
    """A list item's name checked by rule and against the names before it."""
    found = _each(f"{at}.name", name, rule) + ([duplicate(f"{at}.name", name)] if name in seen else [])
    seen.add(name)
    return found


INIT_ONLY = "may not be set for init containers without restartPolicy=Always"


EPHEMERAL_FORBIDDEN = ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe", "ports", "resizePolicy",
                       "restartPolicy")


def _containers(field: str, containers: Any, volumes: set[str], seen: set[str], init: bool = False,
                ephemeral: bool = False) -> list[Problem]:
    """A pod's containers, init or ephemeral containers (``seen``: the names taken so far, by any)."""
    out: list[Problem] = []
    for at, c in _items(field, containers, out):
        out += _named(at, c["name"], dns1123_label, seen) if c.get("name") else [required(f"{at}.name")]
        if not c.get("image"):
            out.append(required(f"{at}.image"))
        if ephemeral:
            out += [Problem(f"{at}.{key}", "Forbidden", detail="cannot be set for an Ephemeral Container")
                    for key in EPHEMERAL_FORBIDDEN if c.get(key)]
            if any((c.get("resources") or {}).values()):
                out.append(Problem(f"{at}.resources", "Forbidden", detail="cannot be set for an Ephemeral Container"))
        elif not init and "restartPolicy" in c:
            out.append(Problem(f"{at}.restartPolicy", "Forbidden", detail="may not be set for non-init containers"))
        elif init and "restartPolicy" in c:
            out += _unsupported(f"{at}.restartPolicy", c["restartPolicy"], ("Always",))
        elif init:  # a plain init container runs once to its end: nothing to hook or probe
            out += [Problem(f"{at}.{key}", "Forbidden", detail=INIT_ONLY)
                    for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe") if key in c]
        out += _container_ports(f"{at}.ports", c.get("ports") or [])
        out += _volume_mounts(f"{at}.volumeMounts", c.get("volumeMounts") or [], volumes)
        out += _resources(f"{at}.resources", c.get("resources"))
    return out


QUANTITY_RULE = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def _resources(field: str, resources: Any) -> list[Problem]:
    """Requests and limits: quantities, not negative, a request no more than its limit."""
    if not isinstance(resources, dict):
        return []
    out, read = [], {}
    for kind in ("limits", "requests"):
        for name, value in (resources.get(kind) or {}).items() if isinstance(resources.get(kind), dict) else ():
            try:
                read[kind, name] = quantity.parse(value)
            except ValueError:
                out.append(invalid(f"{field}.{kind}[{name}]", value, QUANTITY_RULE))
                continue
            if read[kind, name] < 0:
                out.append(invalid(f"{field}.{kind}[{name}]", value, "must be greater than or equal to 0"))
    for (kind, name), value in read.items():
        limit = read.get(("limits", name))
        if kind == "requests" and limit is not None and value > limit:
            out.append(invalid(f"{field}.requests", resources["requests"][name],
                               f"must be less than or equal to {name} limit of {resources['limits'][name]}"))
    return out


def _container_ports(field: str, ports: Any) -> list[Problem]:
    out: list[Problem] = []
    names: set[str] = set()
    for at, port in _items(field, ports, out):
        if port.get("name"):
            out += _named(at, port["name"], port_name, names)
        if not port.get("containerPort"):
            out.append(required(f"{at}.containerPort"))
        else:
            out += _port_number(f"{at}.containerPort", port["containerPort"])
        if port.get("hostPort"):
            out += _port_number(f"{at}.hostPort", port["hostPort"])
    return out


VOLUME_MODE_MESSAGE = "must be a number between 0 and 0777 (octal), both inclusive"


def _relative_path(field: str, path: Any) -> list[Problem]:
    """validateLocalDescendingPath: a path that stays below where it is put (a file of a volume,
    a subPath), so that no name reaches outside it."""
    out = []
    if str(path).startswith("/"):
        out.append(invalid(field, path, "must be a relative path"))
    if ".." in str(path).split("/"):
        out.append(invalid(field, path, "must not contain '..'"))
    return out


def _key_to_paths(field: str, source: dict) -> list[Problem]:
    """The items of a configMap, secret or downwardAPI source, and the modes."""
    out: list[Problem] = []
    mode = source.get("defaultMode")
    if mode is not None and not (isinstance(mode, int) and 0 <= mode <= 0o777):
        out.append(invalid(f"{field}.defaultMode", mode, VOLUME_MODE_MESSAGE))
    for at, item in _items(f"{field}.items", source.get("items") or [], out):
        if not item.get("path"):
            out.append(required(f"{at}.path"))
            continue
        out += _relative_path(f"{at}.path", item["path"])
        if str(item["path"]).startswith(".."):
            out.append(invalid(f"{at}.path", item["path"], "must not start with '..'"))
        if item.get("mode") is not None and not (isinstance(item["mode"], int) and 0 <= item["mode"] <= 0o777):
            out.append(invalid(f"{at}.mode", item["mode"], VOLUME_MODE_MESSAGE))
    return out


def _volumes(field: str, volumes: Any) -> tuple[list[Problem], set[str]]:
    """The pod's volumes (names, one source each, file paths) and the names they take."""
    out: list[Problem] = []
    seen: set[str] = set()
    for at, volume in _items(field, volumes, out):
        out += _named(at, volume["name"], dns1123_label, seen) if volume.get("name") else [required(f"{at}.name")]
        sources = [k for k in volume if k != "name"]
        if not sources:
            out.append(required(at, "must specify a volume type"))
        elif len(sources) > 1:
            out.append(Problem(f"{at}.{sources[1]}", "Forbidden", detail="may not specify more than 1 volume type"))
        for kind in ("configMap", "secret", "downwardAPI"):
            if isinstance(volume.get(kind), dict):
                out += _key_to_paths(f"{at}.{kind}", volume[kind])
        for i, part in enumerate((volume.get("projected") or {}).get("sources") or []):
            for kind in ("configMap", "secret", "downwardAPI"):
                if isinstance(part, dict) and isinstance(part.get(kind), dict):
                    out += _key_to_paths(f"{at}.projected.sources[{i}].{kind}", part[kind])
    return out, seen


def _volume_mounts(field: str, mounts: Any, volumes: set[str]) -> list[Problem]:
    out: list[Problem] = []
    paths: set[str] = set()
    for at, mount in _items(field, mounts, out):
        if not mount.get("name"):
            out.append(required(f"{at}.name"))
        elif mount["name"] not in volumes:
            out.append(Problem(f"{at}.name", "Not found", mount["name"]))
        if not mount.get("mountPath"):
            out.append(required(f"{at}.mountPath"))
        elif mount["mountPath"] in paths:
            out.append(invalid(f"{at}.mountPath", mount["mountPath"], "must be unique"))
        paths.add(mount.get("mountPath"))
        if mount.get("subPath"):
            out += _relative_path(f"{at}.subPath", mount["subPath"])
    return out


def _pod_spec(field: str, spec: Any) -> list[Problem]:
    if not isinstance(spec, dict):
        return [required(field)]
    out, volumes = _volumes(f"{field}.volumes", spec.get("volumes") or [])
    if not spec.get("containers"):
        out.append(required(f"{field}.containers"))
    taken: set[str] = set()
    out += _containers(f"{field}.containers", spec.get("containers") or [], volumes, taken)
    out += _containers(f"{field}.initContainers", spec.get("initContainers") or [], volumes, taken, init=True)
    targets = set(taken)
    ephemeral = spec.get("ephemeralContainers") or []
    out += _containers(f"{field}.ephemeralContainers", ephemeral, volumes, taken, ephemeral=True)
    for at, c in _items(f"{field}.ephemeralContainers", ephemeral, []):
        target = c.get("targetContainerName")
        if target and target not in targets:
            out.append(Problem(f"{at}.targetContainerName", "Not found", target))
    return out


def _ephemeral_kept(old: dict, new: dict) -> list[Problem]:
    """An ephemeral container, once added, is neither changed nor removed."""
    before = {c.get("name"): c for c in (old.get("spec") or {}).get("ephemeralContainers") or []}
    after = {c.get("name"): c for c in (new.get("spec") or {}).get("ephemeralContainers") or []}
    field = "spec.ephemeralContainers"
    return [Problem(field, "Forbidden", detail=f'existing ephemeral containers "{name}" may not be '
                                               f'{"removed" if name not in after else "changed"}')
            for name, c in before.items() if after.get(name) != c]


EMPTY_SELECTOR = Go("v1.LabelSelector{MatchLabels:map[string]string(nil), "
                    "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}")


def _workload(kind: str, spec: dict) -> list[Problem]:
    selector = spec.get("selector")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    out = []
    if not isinstance(selector, dict):
        out.append(required("spec.selector"))
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        owner = {"DaemonSet": "daemonset", "StatefulSet": "statefulset"}.get(kind, "deployment")  # so says a ReplicaSet's
        out.append(invalid("spec.selector", EMPTY_SELECTOR, f"empty selector is invalid for {owner}"))
    else:
        out += labels("spec.selector.matchLabels", selector.get("matchLabels"))
        if not matches(selector, template_labels):
            out.append(invalid("spec.template.metadata.labels", go_map(template_labels),
                               "`selector` does not match template `labels`"))
    out += labels("spec.template.metadata.labels", template_labels)
    return out + _pod_spec("spec.template.spec", template.get("spec"))


def _stateful_set(spec: dict) -> list[Problem]:
    out = _unsupported("spec.podManagementPolicy", spec.get("podManagementPolicy", "OrderedReady"),
                       ("OrderedReady", "Parallel"))
    strategy = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    out += _unsupported("spec.updateStrategy.type", strategy.get("type", "RollingUpdate"), ("OnDelete", "RollingUpdate"))
    partition = (strategy.get("rollingUpdate") or {}).get("partition")
    out += _not_negative("spec.updateStrategy.rollingUpdate.partition", partition)
    out += _not_negative("spec.replicas", spec.get("replicas"))
    restart = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") or "Always"
    return out + _unsupported("spec.template.spec.restartPolicy", restart, ("Always",))


STATEFUL_SET_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds")


def _stateful_set_update(spec: dict, old: dict) -> list[Problem]:
    """ValidateStatefulSetUpdate: only some of the spec may change."""
    if {k: v for k, v in spec.items() if k not in STATEFUL_SET_MUTABLE} == \
            {k: v for k, v in old.items() if k not in STATEFUL_SET_MUTABLE}:
        return []
    return [Problem("spec", "Forbidden", detail="updates to statefulset spec for fields other than 'replicas', "
                    "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden")]


MAX_DATA_BYTES = 1024 * 1024  # corev1.MaxSecretSize, which ConfigMaps share
SECRET_KEYS_REQUIRED = {  # a Secret type's data keys, all of them required
    "kubernetes.io/dockercfg": (".dockercfg",), "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",), "kubernetes.io/tls": ("tls.key", "tls.crt"),
}


def _data_size(data: Any, base64_values: bool) -> int:
    """The bytes a data map holds (base64 values decoded; the decoder let only valid ones through)."""
    if not isinstance(data, dict):
        return 0
    return sum(len(base64.b64decode(str(v))) if base64_values else len(str(v).encode()) for v in data.values())


def _data_keys(field: str, data: Any) -> list[Problem]:
    return [invalid(f"{field}[{key}]", key, m) for key in (data or {}) for m in config_key(str(key))]


def _config_map(obj: dict) -> list[Problem]:
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    out = _data_keys("data", data) + _data_keys("binaryData", binary)
    out += [invalid(f"binaryData[{key}]", key, "duplicate of key present in data") for key in binary if key in data]
    if _data_size(data, False) + _data_size(binary, True) > MAX_DATA_BYTES:
        out.append(Problem("", "Too long", detail=f"must have at most {MAX_DATA_BYTES} bytes"))
    return out


def _secret(obj: dict) -> list[Problem]:
    data, kind = obj.get("data") or {}, obj.get("type") or "Opaque"
    out = _data_keys("data", data)
    if _data_size(data, True) > MAX_DATA_BYTES:
        out.append(Problem("data", "Too long", detail=f"must have at most {MAX_DATA_BYTES} bytes"))
    if kind == "kubernetes.io/service-account-token":
        if not (obj["metadata"].get("annotations") or {}).get("kubernetes.io/service-account.name"):
            out.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        out += [required("data[username]"), required("data[password]")]
    out += [required(f"data[{key}]") for key in SECRET_KEYS_REQUIRED.get(kind, ()) if key not in data]
    return out


# -- NetworkPolicy (networking/validation: ValidateNetworkPolicySpec) and label selectors

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")


def forbidden(field: str, detail: str) -> Problem:
    return Problem(field, "Forbidden", detail=detail)


def label_selector(field: str, selector: Any) -> list[Problem]:
    """metav1 ValidateLabelSelector: matchLabels as labels, each expression's operator, key and values."""
    if not isinstance(selector, dict):
        return []
    out = labels(f"{field}.matchLabels", selector.get("matchLabels"))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        at = f"{field}.matchExpressions[{i}]"
        op, values = expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn") and not values:
            out.append(required(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and values:
            out.append(forbidden(f"{at}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        elif op not in SELECTOR_OPERATORS:
            out.append(invalid(f"{at}.operator", op, "not a valid selector operator"))
        out += _each(f"{at}.key", str(expr.get("key", "")), qualified_name)
        out += [invalid(f"{at}.values[{j}]", v, m) for j, v in enumerate(values) for m in label_value(str(v))]
    return out


def _policy_port(at: str, port: dict) -> list[Problem]:
    out = []
    if "protocol" in port:
        out += _unsupported(f"{at}.protocol", port["protocol"], ("TCP", "UDP", "SCTP"))
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            out.append(invalid(f"{at}.endPort", end, "may not be specified when `port` is not specified"))
    elif isinstance(number, int):
        out += _port_number(f"{at}.port", number)
        if end is not None:
            if end < number:
                out.append(invalid(f"{at}.endPort", number, "must be greater than or equal to `port`"))
            out += _port_number(f"{at}.endPort", end)
    else:
        if end is not None:
            out.append(invalid(f"{at}.endPort", end, "may not be specified when `port` is non-numeric"))
        out += _each(f"{at}.port", str(number), port_name)
    return out


def _ip_block(at: str, block: dict) -> list[Problem]:
    cidr = block.get("cidr") or ""
    if not cidr:
        return [required(f"{at}.cidr")]
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return [invalid(f"{at}.cidr", cidr, "not a valid CIDR")]
    out = []
    for i, excepted in enumerate(block.get("except") or []):
        try:
            inner = ipaddress.ip_network(excepted, strict=False)
        except ValueError:
            return out + [invalid(f"{at}.except[{i}]", excepted, "not a valid CIDR")]
        if inner.version != network.version or inner.network_address not in network \
                or network.prefixlen >= inner.prefixlen:
            out.append(invalid(f"{at}.except[{i}]", excepted, "must be a strict subset of `cidr`"))
    return out


def _policy_peer(at: str, peer: dict) -> list[Problem]:
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    out = label_selector(f"{at}.podSelector", peer.get("podSelector"))
    out += label_selector(f"{at}.namespaceSelector", peer.get("namespaceSelector"))
    if isinstance(peer.get("ipBlock"), dict):
        out += _ip_block(f"{at}.ipBlock", peer["ipBlock"])
    if not given:
        out.append(required(at, "must specify a peer"))
    elif len(given) > 1 and "ipBlock" in given:
        out.append(forbidden(at, "may not specify both ipBlock and another peer"))
    return out


def _network_policy(spec: dict) -> list[Problem]:
    out = label_selector("spec.podSelector", spec.get("podSelector"))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for at, rule in _items(f"spec.{direction}", spec.get(direction), out):
            for port_at, port in _items(f"{at}.ports", rule.get("ports"), out):
                out += _policy_port(port_at, port)
            for peer_at, peer in _items(f"{at}.{peers}", rule.get(peers), out):
                out += _policy_peer(peer_at, peer)
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        shown = Go("[]networking.PolicyType{" + ", ".join(f'"{t}"' for t in types) + "}")
        return out + [invalid("spec.policyTypes", shown, "may not specify more than two policyTypes")]
    for i, kind in enumerate(types):
        out += _unsupported(f"spec.policyTypes[{i}]", kind, POLICY_TYPES)
    return out


# -- Jobs and CronJobs (batch/validation)

JOB_RESTART_POLICIES = ("OnFailure", "Never")
FAILURE_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
CRON_JOB_NAME_MAX = 52  # a CronJob's Jobs add 11 characters (-<minutes since the epoch>)
MAX_INDEXED_PARALLELISM = 100000
JOB_NOT_IMPLEMENTED = (("backoffLimitPerIndex", "per-index back-off limits"),
                       ("maxFailedIndexes", "per-index back-off limits"), ("successPolicy", "success policies"))


def _not_negative(field: str, value: Any) -> list[Problem]:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid(field, value, "must be greater than or equal to 0")]
    return []


def _required_one_of(field: str, allowed: tuple[str, ...]) -> Problem:
    return required(field, "valid values: [" + " ".join(f'"{a}"' for a in allowed) + "]")


def _exit_codes(at: str, requirement: dict, containers: set[str]) -> list[Problem]:
    out = []
    operator = requirement.get("operator")
    if not operator:
        out.append(_required_one_of(f"{at}.operator", ("In", "NotIn")))
    else:
        out += _unsupported(f"{at}.operator", operator, ("In", "NotIn"))
    name = requirement.get("containerName")
    if name is not None and name not in containers:
        out.append(invalid(f"{at}.containerName", name,
                           "must be one of the container or initContainer names in the pod template"))
    values = requirement.get("values") or []
    if not values:
        out.append(invalid(f"{at}.values", values, "at least one value is required"))
    for i, value in enumerate(values):
        if value == 0 and operator == "In":
            out.append(invalid(f"{at}.values[{i}]", value, "must not be 0 for the In operator"))
        if i and value == values[i - 1]:
            out.append(duplicate(f"{at}.values[{i}]", value))
        elif i and value < values[i - 1]:
            out.append(invalid(f"{at}.values[{i}]", value, "must be ordered"))
    return out


def _pod_failure_policy(at: str, policy: dict, spec: dict, template_spec: dict) -> list[Problem]:
    out = []
    containers = {c.get("name") for key in ("containers", "initContainers") for c in template_spec.get(key) or []
                  if isinstance(c, dict)}
    for rule_at, rule in _items(f"{at}.rules", policy.get("rules"), out):
        action = rule.get("action")
        if not action:
            out.append(_required_one_of(f"{rule_at}.action", FAILURE_ACTIONS))
        elif action == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
            out.append(invalid(f"{rule_at}.action", action, "requires the backoffLimitPerIndex to be set"))
        else:
            out += _unsupported(f"{rule_at}.action", action, FAILURE_ACTIONS)
        codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions")
        if codes and conditions:
            out.append(invalid(rule_at, OMITTED, "specifying both OnExitCodes and OnPodConditions is not supported"))
        elif not codes and not conditions:
            out.append(invalid(rule_at, OMITTED, "specifying one of OnExitCodes and OnPodConditions is required"))
        if isinstance(codes, dict):
            out += _exit_codes(f"{rule_at}.onExitCodes", codes, containers)
        for pattern_at, pattern in _items(f"{rule_at}.onPodConditions", conditions, out):
            out += _each(f"{pattern_at}.type", str(pattern.get("type", "")), qualified_name)
            out += _unsupported(f"{pattern_at}.status", pattern.get("status", "True"), ("True", "False", "Unknown"))
    return out


def _job_spec(at: str, spec: dict, name: str) -> list[Problem]:
    """ValidateJobSpec, under ``at`` (a Job's spec, or a CronJob's jobTemplate.spec)."""
    out = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                "backoffLimitPerIndex", "maxFailedIndexes"):
        out += _not_negative(f"{at}.{key}", spec.get(key))
    mode = spec.get("completionMode", "NonIndexed")
    out += _unsupported(f"{at}.completionMode", mode, ("NonIndexed", "Indexed"))
    if mode == "Indexed":
        if spec.get("completions") is None:
            out.append(required(f"{at}.completions", "when completion mode is Indexed"))
        elif name and isinstance(spec["completions"], int) and dns1123_label(last := f"{name}-{spec['completions'] - 1}"):
            out.append(invalid("metadata.name", name, f"will not able to create pod with invalid DNS label: {last}"))
        if isinstance(spec.get("parallelism"), int) and spec["parallelism"] > MAX_INDEXED_PARALLELISM:
            out.append(invalid(f"{at}.parallelism", spec["parallelism"], f"must be less than or equal to "
                               f"{MAX_INDEXED_PARALLELISM} when completion mode is Indexed"))
    else:
        out += [invalid(f"{at}.{key}", spec[key], "requires indexed completion mode")
                for key in ("backoffLimitPerIndex", "maxFailedIndexes") if spec.get(key) is not None]
    out += [Problem(f"{at}.{key}", "Forbidden", detail=f"netplane's Job controller does not implement {what} yet")
            for key, what in JOB_NOT_IMPLEMENTED if spec.get(key) is not None]
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    template_spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    restart = template_spec.get("restartPolicy") or "Always"
    if restart == "Always":
        out.append(required(f"{at}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    else:
        out += _unsupported(f"{at}.template.spec.restartPolicy", restart, JOB_RESTART_POLICIES)
    if isinstance(spec.get("podFailurePolicy"), dict):
        if restart == "OnFailure":
            out.append(invalid(f"{at}.template.spec.restartPolicy", restart,
                               'only "Never" is supported when podFailurePolicy is specified'))
        out += _pod_failure_policy(f"{at}.podFailurePolicy", spec["podFailurePolicy"], spec, template_spec)
    labels_found = (template.get("metadata") or {}).get("labels") or {}
    out += labels(f"{at}.template.metadata.labels", labels_found)
    return out + _pod_spec(f"{at}.template.spec", template.get("spec"))


def _job(obj: dict, old: dict | None) -> list[Problem]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    out = _job_spec("spec", spec, obj["metadata"].get("name", ""))
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if spec.get("manualSelector") is True:
        if not isinstance(selector, dict):
            out.append(required("spec.selector"))
        else:
            out += label_selector("spec.selector", selector)
            if not matches(selector, template_labels):
                out.append(invalid("spec.template.metadata.labels", go_map(template_labels),
                                   "`selector` does not match template `labels`"))
    elif old is None and isinstance(selector, dict) and (selector.get("matchExpressions") or set(
            selector.get("matchLabels") or {}) - {JOB_UID_LABELS[0]}):
        out.append(invalid("spec.selector", selector, "`selector` not auto-generated"))
    if old is not None:
        out += _job_update(spec, old.get("spec") or {}, old.get("status") or {})
    return out


def generated_selector(res: Resource, obj: dict) -> None:
    """ValidateGeneratedSelector, once the Job's selector is made: it and the template pick the Job's uid."""
    spec = obj.get("spec") or {}
    if res.kind != "Job" or spec.get("manualSelector") is True:
        return
    uid, key = obj["metadata"]["uid"], JOB_UID_LABELS[0]
    selector = spec.get("selector") or {}
    if (selector.get("matchLabels") or {}).get(key) != uid or \
            ((spec.get("template") or {}).get("metadata") or {}).get("labels", {}).get(key) != uid:
        raise error(res, obj["metadata"].get("name", ""),
                    [invalid("spec.selector", selector, "`selector` not auto-generated")])


JOB_IMMUTABLE = ("selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy")


def _job_update(spec: dict, old: dict, status: dict) -> list[Problem]:
    out = [invalid(f"spec.{key}", spec.get(key), "field is immutable") for key in JOB_IMMUTABLE
           if spec.get(key) != old.get(key)]
    if spec.get("completions") != old.get("completions"):
        tandem = spec.get("completionMode") == "Indexed" and spec.get("completions") == spec.get("parallelism")
        if not tandem:
            out.append(invalid("spec.completions", spec.get("completions"),
                               "field is immutable" if spec.get("completionMode") != "Indexed"
                               else "can only be modified in tandem with spec.parallelism"))
    if spec.get("template") != old.get("template") and not (spec.get("suspend") and not status.get("startTime")):
        out.append(invalid("spec.template", Go("core.PodTemplateSpec{...}"), "field is immutable"))
    return out


def _time_zone(zone: Any) -> list[Problem]:
    if zone is None:
        return []
    if zone == "":
        return [invalid("spec.timeZone", zone, "timeZone must be nil or non-empty string")]
    if str(zone).lower() == "local":
        return [invalid("spec.timeZone", zone,
                        "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")]
    try:
        ZoneInfo(str(zone))
    except (ValueError, ZoneInfoNotFoundError):
        return [invalid("spec.timeZone", zone, f"unknown time zone {zone}")]
    return []


def _cron_job(obj: dict, old: dict | None) -> list[Problem]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    name = obj["metadata"].get("name", "")
    out = []
    if old is None and len(name) > CRON_JOB_NAME_MAX:
        out.append(invalid("metadata.name", name, f"must be no more than {CRON_JOB_NAME_MAX} characters"))
    schedule = spec.get("schedule") or ""
    if not schedule:
        out.append(required("spec.schedule"))
    else:
        try:
            cron.parse(schedule)
        except cron.ScheduleError as err:
            out.append(invalid("spec.schedule", schedule, str(err)))
        if "TZ" in schedule:
            out.append(invalid("spec.schedule", schedule,
                               "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
    if old is None or spec.get("timeZone") != (old.get("spec") or {}).get("timeZone"):
        out += _time_zone(spec.get("timeZone"))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        out += _not_negative(f"spec.{key}", spec.get(key))
    out += _unsupported("spec.concurrencyPolicy", spec.get("concurrencyPolicy", "Allow"), ("Allow", "Forbid", "Replace"))
    job_template = spec.get("jobTemplate") if isinstance(spec.get("jobTemplate"), dict) else {}
    job_spec = job_template.get("spec") if isinstance(job_template.get("spec"), dict) else {}
    at = "spec.jobTemplate.spec"
    if job_spec.get("selector") is not None:
        out.append(invalid(f"{at}.selector", job_spec["selector"], "`selector` will be auto-generated"))
    if job_spec.get("manualSelector") is True:
        out.append(Problem(f"{at}.manualSelector", "Unsupported value", True, "supported values: nil, false"))
    return out + _job_spec(at, job_spec, "")


# -- PodDisruptionBudgets (policy/validation)

PERCENT = re.compile(r"[0-9]+%")


def _int_or_percent(field: str, value: Any) -> list[Problem]:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent."""
    if isinstance(value, str):
        if not PERCENT.fullmatch(value):
            return [invalid(field, value, "a valid percent string must be a numeric string followed by an ending "
                                          "'%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]
        return [invalid(field, value, "must not be greater than 100%")] if int(value[:-1]) > 100 else []
    return _not_negative(field, value)


def _disruption_budget(spec: dict) -> list[Problem]:
    out = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        out.append(invalid("spec", Go("policy.PodDisruptionBudgetSpec{...}"),
                           "minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            out += _int_or_percent(f"spec.{key}", spec[key])
    out += label_selector("spec.selector", spec.get("selector"))
    if spec.get("unhealthyPodEvictionPolicy") is not None:
        out += _unsupported("spec.unhealthyPodEvictionPolicy", spec["unhealthyPodEvictionPolicy"],
                            ("AlwaysAllow", "IfHealthyBudget"))
    return out


def _priority_class(obj: dict, old: dict | None) -> list[Problem]:
    name, value = obj["metadata"].get("name", ""), obj.get("value")
    out = []
    if not isinstance(value, int) or isinstance(value, bool):
        out.append(required("value"))
    if name.startswith("system-") and SYSTEM_CLASSES.get(name) != value:
        out.append(invalid("metadata.name", name, "priority class names with 'system-' prefix are reserved"))
    elif isinstance(value, int) and value > HIGHEST_USER_PRIORITY and name not in SYSTEM_CLASSES:
        out.append(Problem("value", "Forbidden", detail="maximum allowed value of a user defined priority is "
                                                        f"{HIGHEST_USER_PRIORITY}"))
    out += _unsupported("preemptionPolicy", obj.get("preemptionPolicy") or "PreemptLowerPriority",
                        ("Never", "PreemptLowerPriority"))
    if old is not None and value != old.get("value"):
        out.append(Problem("value", "Forbidden", detail="may not be changed in an update."))
    return out


def _immutable_data(res: Resource, obj: dict, old: dict) -> list[Problem]:
    """What an update of a ConfigMap or Secret may not change."""
    detail = "field is immutable when `immutable` is set"
    out = []
    if res.kind == "Secret" and obj.get("type") != old.get("type"):
        out.append(invalid("type", obj.get("type"), "field is immutable"))
    if old.get("immutable"):
        if not obj.get("immutable"):
            out.append(Problem("immutable", "Forbidden", detail=detail))
        out += [Problem(key, "Forbidden", detail=detail) for key in ("data", "binaryData")
                if (obj.get(key) or {}) != (old.get(key) or {})]
    return out


def problems(res: Resource, obj: dict, old: dict | None = None) -> list[Problem]:
    """Everything wrong with an object that is about to be written (over ``old`` when an update),
    in upstream's order."""
    out = _metadata(res, obj.get("metadata") or {})
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if res.kind == "Service":
        out += _service(spec)
    elif res.kind == "Pod":
        out += _pod_spec("spec", obj.get("spec"))
    elif res.kind in WORKLOAD_KINDS:
        out += _workload(res.kind, spec)
    elif res.kind == "ConfigMap":
        out += _config_map(obj)
    elif res.kind == "Secret":
        out += _secret(obj)
    elif res.kind == "NetworkPolicy":
        out += _network_policy(spec)
    elif res.kind == "Job":
        out += _job(obj, old)
    elif res.kind == "CronJob":
        out += _cron_job(obj, old)
    elif res.kind == "PodDisruptionBudget":
        out += _disruption_budget(spec)
    elif res.kind == "PriorityClass":
        out += _priority_class(obj, old)
    if res.kind == "StatefulSet":
        out += _stateful_set(spec)
        if old is not None:
            out += _stateful_set_update(spec, old.get("spec") or {})
    if old is not None and res.kind in ("ConfigMap", "Secret"):
        out += _immutable_data(res, obj, old)
    if old is not None and res.kind == "Pod":
        out += _ephemeral_kept(old, obj)
    return out


def check(res: Resource, obj: dict, old: dict | None = None) -> None:
    """Raise every problem of the object (an update of ``old``) as one 422 Invalid."""
    found = problems(res, obj, old)
    if found:
        raise error(res, obj.get("metadata", {}).get("name", ""), found)
