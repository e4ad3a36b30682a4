"""Request bodies in Kubernetes protobuf, for the kubectl commands that send nothing else.

client-go's typed clients (kubectl ``create namespace|service|deployment``, ``drain``'s evictions) POST
``application/vnd.kubernetes.protobuf`` and, unlike for CBOR, do not fall back to JSON on a 415.
They accept JSON answers, so only *decoding* is needed, and only for what those generators write.

The wire format: the magic ``k8s\\x00``, then a ``runtime.Unknown`` (1: typeMeta {1: apiVersion,
2: kind}, 2: raw, 3: contentEncoding, 4: contentType) whose ``raw`` is the object's message. The
field numbers below are those of k8s.io/api's generated.proto files (the wire contract), for a
subset of each message; a field outside it is refused (400) rather than silently lost.

Decoding gives what Go's JSON encoder would: zero scalars are dropped (omitempty) except in
pointer fields (``replicas: 0`` stays), empty messages stay ``{}``, a zero Time is dropped.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, NamedTuple

from netplane.api.errors import ApiError, bad_request
from netplane.api.times import time_text

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class Field(NamedTuple):
    name: str
    type: str  # string bytes base64 int bool time intstr quantity, map:<value type>, or a message name
    repeated: bool = False
    keep_zero: bool = False  # a pointer in Go: present means set, even to 0, "" or false


def _f(name: str, type_: str = "string", repeated: bool = False, keep_zero: bool = False) -> Field:
    return Field(name, type_, repeated, keep_zero)


MESSAGES: Mapping[str, Mapping[int, Field]] = {
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "Unknown": {1: _f("typeMeta", "TypeMeta"), 2: _f("raw", "bytes"), 3: _f("contentEncoding"), 4: _f("contentType")},
    "ObjectMeta": {
        1: _f("name"), 2: _f("generateName"), 3: _f("namespace"), 4: _f("selfLink"), 5: _f("uid"),
        6: _f("resourceVersion"), 7: _f("generation", "int"), 8: _f("creationTimestamp", "time"),
        9: _f("deletionTimestamp", "time"), 10: _f("deletionGracePeriodSeconds", "int", keep_zero=True),
        11: _f("labels", "map:string"), 12: _f("annotations", "map:string"),
        13: _f("ownerReferences", "OwnerReference", True), 14: _f("finalizers", repeated=True),
    },
    "OwnerReference": {5: _f("apiVersion"), 1: _f("kind"), 3: _f("name"), 4: _f("uid"),
                       6: _f("controller", "bool", keep_zero=True),
                       7: _f("blockOwnerDeletion", "bool", keep_zero=True)},
    "LabelSelector": {1: _f("matchLabels", "map:string"), 2: _f("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: _f("key"), 2: _f("operator"), 3: _f("values", repeated=True)},
    # core/v1
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec"), 3: _f("status", "NamespaceStatus")},
    "NamespaceSpec": {1: _f("finalizers", repeated=True)},
    "NamespaceStatus": {1: _f("phase")},
    "Service": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "ServiceSpec"), 3: _f("status", "ServiceStatus")},
    "ServiceSpec": {
        1: _f("ports", "ServicePort", True), 2: _f("selector", "map:string"), 3: _f("clusterIP"),
        18: _f("clusterIPs", repeated=True), 4: _f("type"), 5: _f("externalIPs", repeated=True),
        7: _f("sessionAffinity"), 8: _f("loadBalancerIP"), 9: _f("loadBalancerSourceRanges", repeated=True),
        10: _f("externalName"), 11: _f("externalTrafficPolicy"), 12: _f("healthCheckNodePort", "int"),
        13: _f("publishNotReadyAddresses", "bool"), 19: _f("ipFamilies", repeated=True),
        17: _f("ipFamilyPolicy", keep_zero=True), 20: _f("allocateLoadBalancerNodePorts", "bool", keep_zero=True),
        21: _f("loadBalancerClass", keep_zero=True), 22: _f("internalTrafficPolicy", keep_zero=True),
        23: _f("trafficDistribution", keep_zero=True),
    },
    "ServicePort": {1: _f("name"), 2: _f("protocol"), 6: _f("appProtocol", keep_zero=True), 3: _f("port", "int"),
                    4: _f("targetPort", "intstr"), 5: _f("nodePort", "int")},
    "ServiceStatus": {1: _f("loadBalancer", "LoadBalancerStatus")},
    "LoadBalancerStatus": {1: _f("ingress", "LoadBalancerIngress", True)},
    "LoadBalancerIngress": {1: _f("ip"), 2: _f("hostname"), 3: _f("ipMode", keep_zero=True)},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", True), 20: _f("initContainers", "Container", True),
        3: _f("restartPolicy"), 4: _f("terminationGracePeriodSeconds", "int", keep_zero=True),
        5: _f("activeDeadlineSeconds", "int", keep_zero=True), 6: _f("dnsPolicy"),
        7: _f("nodeSelector", "map:string"), 8: _f("serviceAccountName"), 9: _f("serviceAccount"),
        21: _f("automountServiceAccountToken", "bool", keep_zero=True), 10: _f("nodeName"),
        11: _f("hostNetwork", "bool"), 12: _f("hostPID", "bool"), 13: _f("hostIPC", "bool"),
        16: _f("hostname"), 17: _f("subdomain"), 19: _f("schedulerName"), 24: _f("priorityClassName"),
        25: _f("priority", "int", keep_zero=True), 29: _f("runtimeClassName", keep_zero=True),
        30: _f("enableServiceLinks", "bool", keep_zero=True), 31: _f("preemptionPolicy", keep_zero=True),
    },
    "Container": {
        1: _f("name"), 2: _f("image"), 3: _f("command", repeated=True), 4: _f("args", repeated=True),
        5: _f("workingDir"), 6: _f("ports", "ContainerPort", True), 7: _f("env", "EnvVar", True),
        8: _f("resources", "ResourceRequirements"), 24: _f("restartPolicy", keep_zero=True),
        13: _f("terminationMessagePath"), 20: _f("terminationMessagePolicy"), 14: _f("imagePullPolicy"),
        16: _f("stdin", "bool"), 17: _f("stdinOnce", "bool"), 18: _f("tty", "bool"),
    },
    "ContainerPort": {1: _f("name"), 2: _f("hostPort", "int"), 3: _f("containerPort", "int", keep_zero=True),
                      4: _f("protocol"), 5: _f("hostIP")},
    "EnvVar": {1: _f("name"), 2: _f("value")},
    "ResourceRequirements": {1: _f("limits", "map:quantity"), 2: _f("requests", "map:quantity")},
    "ConfigMap": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:string"), 3: _f("binaryData", "map:base64"),
                  4: _f("immutable", "bool", keep_zero=True)},
    "Secret": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:base64"), 3: _f("type"),
               4: _f("stringData", "map:string"), 5: _f("immutable", "bool", keep_zero=True)},
    "ServiceAccount": {1: _f("metadata", "ObjectMeta"), 2: _f("secrets", "ObjectReference", True),
                       3: _f("imagePullSecrets", "LocalObjectReference", True),
                       4: _f("automountServiceAccountToken", "bool", keep_zero=True)},
    "ObjectReference": {1: _f("kind"), 2: _f("namespace"), 3: _f("name"), 4: _f("uid"), 5: _f("apiVersion"),
                        6: _f("resourceVersion"), 7: _f("fieldPath")},
    "LocalObjectReference": {1: _f("name")},
    # apps/v1
    "Deployment": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "DeploymentSpec"),
                   3: _f("status", "DeploymentStatus")},
    "DeploymentSpec": {
        1: _f("replicas", "int", keep_zero=True), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"),
        4: _f("strategy", "DeploymentStrategy"), 5: _f("minReadySeconds", "int"),
        6: _f("revisionHistoryLimit", "int", keep_zero=True), 7: _f("paused", "bool"),
        9: _f("progressDeadlineSeconds", "int", keep_zero=True),
    },
    "DeploymentStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: _f("maxUnavailable", "intstr"), 2: _f("maxSurge", "intstr")},
    "DeploymentStatus": {1: _f("observedGeneration", "int"), 2: _f("replicas", "int"), 3: _f("updatedReplicas", "int"),
                         7: _f("readyReplicas", "int"), 4: _f("availableReplicas", "int"),
                         5: _f("unavailableReplicas", "int"), 8: _f("collisionCount", "int", keep_zero=True)},
    # policy/v1 (kubectl drain) and meta/v1
    "Eviction": {1: _f("metadata", "ObjectMeta"), 2: _f("deleteOptions", "DeleteOptions")},
    "DeleteOptions": {1: _f("gracePeriodSeconds", "int", keep_zero=True), 2: _f("preconditions", "Preconditions"),
                      3: _f("orphanDependents", "bool", keep_zero=True), 4: _f("propagationPolicy"),
                      5: _f("dryRun", repeated=True)},
    "Preconditions": {1: _f("uid"), 2: _f("resourceVersion")},
    # authentication/v1: kubectl create token
    "TokenRequest": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "TokenRequestSpec"),
                     3: _f("status", "TokenRequestStatus")},
    "TokenRequestSpec": {1: _f("audiences", repeated=True), 4: _f("expirationSeconds", "int", keep_zero=True),
                         3: _f("boundObjectRef", "BoundObjectReference")},
    "BoundObjectReference": {1: _f("kind"), 2: _f("apiVersion"), 3: _f("name"), 4: _f("uid")},
    "TokenRequestStatus": {1: _f("token"), 2: _f("expirationTimestamp", "time")},
    # the small well-known types
    "Time": {1: _f("seconds", "int"), 2: _f("nanos", "int")},
    "IntOrString": {1: _f("type", "int"), 2: _f("intVal", "int"), 3: _f("strVal")},
    "Quantity": {1: _f("string")},
    "MapEntry:string": {1: _f("key"), 2: _f("value")},
    "MapEntry:quantity": {1: _f("key"), 2: _f("value", "quantity")},
    "MapEntry:base64": {1: _f("key"), 2: _f("value", "base64")},
}
ROOTS = {("v1", "Namespace"): "Namespace", ("v1", "Service"): "Service", ("v1", "ConfigMap"): "ConfigMap",
         ("v1", "Secret"): "Secret", ("v1", "ServiceAccount"): "ServiceAccount", ("apps/v1", "Deployment"): "Deployment",
         ("policy/v1", "Eviction"): "Eviction", ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest"}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise bad_request("truncated protobuf body")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _wire(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message: ints for varints, bytes else."""
    fields, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise bad_request(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(type_: str, wire: int, value: Any, where: str) -> Any:
    if type_ in ("int", "bool"):
        if wire != 0:
            raise bad_request(f"protobuf field {where}: expected a varint")
        return bool(value) if type_ == "bool" else _signed(value)
    if wire != 2:
        raise bad_request(f"protobuf field {where}: expected bytes")
    if type_ == "base64":  # a []byte, which JSON carries as base64
        return base64.b64encode(value).decode()
    if type_ in ("string", "bytes"):
        try:
            return value.decode() if type_ == "string" else value
        except UnicodeDecodeError:
            raise bad_request(f"protobuf field {where}: not UTF-8") from None
    if type_ == "time":
        seconds = decode_message("Time", value).get("seconds", 0)
        return None if not seconds else time_text(seconds)
    if type_ == "intstr":
        v = decode_message("IntOrString", value)
        return v.get("strVal", "") if v.get("type") == 1 else v.get("intVal", 0)
    if type_ == "quantity":
        return decode_message("Quantity", value).get("string", "")
    return decode_message(type_, value)


def _zero(value: Any) -> bool:
    return value is None or (value in ("", 0, False) and not isinstance(value, dict))


def decode_message(name: str, data: bytes) -> dict:
    fields = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in _wire(data):
        field = fields.get(number)
        if field is None:
            raise bad_request(f"protobuf field {number} of {name} is not supported by this server; send JSON instead")
        where = f"{name}.{field.name}"
        if field.type.startswith("map:"):
            entry = decode_message(f"MapEntry:{field.type[4:]}", value)
            out.setdefault(field.name, {})[entry.get("key", "")] = entry.get("value", "")
        elif field.repeated:
            out.setdefault(field.name, []).append(_scalar(field.type, wire, value, where))
        else:
            decoded = _scalar(field.type, wire, value, where)
            if field.keep_zero or not _zero(decoded) or isinstance(decoded, dict):
                out[field.name] = decoded
    return {k: v for k, v in out.items() if v is not None}


def decode(body: bytes) -> dict:
    """The object in a Kubernetes protobuf request body, as the JSON the API works with."""
    if not body.startswith(MAGIC):
        raise bad_request("a protobuf body must start with the Kubernetes magic number")
    unknown = decode_message("Unknown", body[len(MAGIC):])
    meta = unknown.get("typeMeta", {})
    api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
    if unknown.get("contentEncoding"):
        raise bad_request(f"unsupported protobuf content encoding {unknown['contentEncoding']!r}")
    root = ROOTS.get((api_version, kind))
    if root is None:
        supported = ", ".join(f"{v} {k}" for v, k in ROOTS)
        raise ApiError(415, "UnsupportedMediaType", f"protobuf bodies are only understood for {supported}, "
                                                    f"not {api_version} {kind}; send JSON or YAML")
    return {"apiVersion": api_version, "kind": kind, **decode_message(root, unknown.get("raw", b""))}
