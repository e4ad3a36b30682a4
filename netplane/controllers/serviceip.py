"""ClusterIP and NodePort allocation, done when a Service is written, as the real API server's
service storage does (so `create` returns the ClusterIP at once); the Service was defaulted
(api/defaults.py) and validated (api/validation.py) before."""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

from netplane.api import errors
from netplane.api.errors import ApiError

NODE_PORTS = (30000, 32767)


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


def allocate_node_port(used: set[int], requested: int | None = None) -> int:
    """A free NodePort: the requested one if it is free and in range, else a random free one."""
    low, high = NODE_PORTS
    if requested:
        if not low <= requested <= high:
            raise ValueError(f"provided port is not in the valid range. The range of valid ports is {low}-{high}")
        if requested in used:
            raise ValueError("provided port is already allocated")
        return requested
    free = sorted(set(range(low, high + 1)) - used)
    if not free:
        raise ValueError(f"the NodePort range {low}-{high} is full")
    return random.choice(free)


def _cluster_ip(spec: dict, old: dict | None, service_cidr: str, used: set[str], name: str) -> None:
    if old is not None and old.get("spec", {}).get("type") != "ExternalName":
        previous = old["spec"].get("clusterIP")
        if spec.get("clusterIP") not in (None, "", previous):
            raise invalid(name, "spec.clusterIP", "field is immutable")
        spec["clusterIP"], spec["clusterIPs"] = previous, old["spec"].get("clusterIPs", [previous])
        return
    if spec["type"] == "ExternalName":
        if not spec.get("externalName"):
            raise invalid(name, "spec.externalName", "Required value for a Service of type ExternalName")
        if spec.get("clusterIP") not in (None, ""):
            raise invalid(name, "spec.clusterIP", "must be empty for a Service of type ExternalName")
        return
    if spec.get("clusterIP") == "None":
        spec["clusterIPs"] = ["None"]
        return
    try:
        ip = allocate(service_cidr, used, spec.get("clusterIP") or None)
    except ValueError as err:
        raise invalid(name, "spec.clusterIP", str(err)) from None
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")


def _node_ports(spec: dict, old: dict | None, used: set[int], name: str) -> None:
    """NodePort and LoadBalancer Services get a NodePort per port, kept across updates."""
    kept = {(p["port"], p["protocol"]): p.get("nodePort") for p in (old or {}).get("spec", {}).get("ports", [])}
    for i, port in enumerate(spec.get("ports", [])):
        if spec["type"] not in ("NodePort", "LoadBalancer"):
            if port.get("nodePort"):
                raise invalid(name, f"spec.ports[{i}].nodePort", f"may not be used when `type` is '{spec['type']}'")
            continue
        mine = kept.get((port["port"], port["protocol"]))
        if port.get("nodePort") and port["nodePort"] == mine:
            continue
        try:
            port["nodePort"] = mine if not port.get("nodePort") and mine else \
                allocate_node_port(used, port.get("nodePort"))
        except ValueError as err:
            raise invalid(name, f"spec.ports[{i}].nodePort", f"Invalid value: {port.get('nodePort')}: {err}") from None
        used.add(port["nodePort"])


def admitter(service_cidr: str) -> Callable:
    """The API server's admission hook for Services: ClusterIP and NodePorts."""

    def admit(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
        if plural != "services" or verb == "update/status":
            return obj
        name = obj["metadata"].get("name", "")
        others = [s for s in store.list("services")[0]
                  if (s["metadata"].get("namespace"), s["metadata"]["name"]) != (obj["metadata"].get("namespace"), name)]
        _cluster_ip(obj["spec"], old, service_cidr, {s.get("spec", {}).get("clusterIP") for s in others}, name)
        _node_ports(obj["spec"], old, {p["nodePort"] for s in others for p in s.get("spec", {}).get("ports", [])
                                       if p.get("nodePort")}, name)
        return obj

    return admit
