"""Service defaults, validation and ClusterIP allocation, done when a Service is written, as the real
API server's service storage does (so `create` returns the ClusterIP at once)."""
from __future__ import annotations

import ipaddress
from collections.abc import Callable

from netplane.api import errors
from netplane.api.errors import ApiError

PROTOCOLS = ("TCP", "UDP", "SCTP")
TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def invalid(name: str, field: str, message: str) -> ApiError:
    return errors.invalid("Service", name, field, message)


def allocate(service_cidr: str, used: set[str], requested: str | None = None) -> str:
    """A free ClusterIP: the requested one if it is free and in range, else the lowest free one.

    The network address and .1 are skipped (.1 is the `kubernetes` Service's on a real cluster)."""
    net = ipaddress.ip_network(service_cidr)
    if requested:
        if ipaddress.ip_address(requested) not in net:
            raise ValueError(f"{requested} is not in the service range {service_cidr}")
        if requested in used:
            raise ValueError(f"{requested} is already allocated")
        return requested
    for address in net.hosts():
        if int(address) - int(net.network_address) < 2:
            continue
        if str(address) not in used:
            return str(address)
    raise ValueError(f"the service range {service_cidr} is full")


def _default_and_validate(service: dict) -> None:
    name = service["metadata"].get("name", "")
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] not in TYPES:
        raise invalid(name, "spec.type", f"unsupported value {spec['type']!r}: one of {', '.join(TYPES)}")
    ports = spec.get("ports", [])
    if not ports and spec["type"] != "ExternalName" and spec.get("clusterIP") != "None":
        raise invalid(name, "spec.ports", "Required value")
    seen = set()
    for i, port in enumerate(ports):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
        if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
            raise invalid(name, f"spec.ports[{i}].port", "must be between 1 and 65535")
        if port["protocol"] not in PROTOCOLS:
            raise invalid(name, f"spec.ports[{i}].protocol", f"one of {', '.join(PROTOCOLS)}")
        if len(ports) > 1 and not port.get("name"):
            raise invalid(name, f"spec.ports[{i}].name", "Required value when a Service has several ports")
        key = (port.get("name"), port["port"], port["protocol"])
        if key in seen:
            raise invalid(name, f"spec.ports[{i}]", "Duplicate value")
        seen.add(key)


def admitter(service_cidr: str) -> Callable:
    """The API server's admission hook for Services: defaults, validation, ClusterIP."""

    def admit(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
        if plural != "services":
            return obj
        _default_and_validate(obj)
        spec = obj["spec"]
        name = obj["metadata"].get("name", "")
        if old is not None:
            previous = old.get("spec", {}).get("clusterIP")
            if spec.get("clusterIP") in (None, "", previous):
                spec["clusterIP"], spec["clusterIPs"] = previous, old["spec"].get("clusterIPs", [previous])
                return obj
            raise invalid(name, "spec.clusterIP", "field is immutable")
        if spec["type"] == "ExternalName" or spec.get("clusterIP") == "None":
            return obj
        items, _ = store.list("services")
        used = {s.get("spec", {}).get("clusterIP") for s in items}
        try:
            ip = allocate(service_cidr, used, spec.get("clusterIP") or None)
        except ValueError as err:
            raise invalid(name, "spec.clusterIP", str(err)) from None
        spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        return obj

    return admit
