"""kubectl-shaped output: tables with kubectl's columns, and Lists as JSON or YAML."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone

import yaml

from netplane.api.resources import Resource


def age(obj: dict) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = max(0, int((datetime.now(timezone.utc) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _condition(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in obj.get("status", {}).get("conditions", []))


def _pod_row(pod: dict, wide: bool) -> list[str]:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    containers = pod["spec"].get("containers", [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    status = pod.get("status", {}).get("phase", "Pending")
    if "deletionTimestamp" in pod["metadata"]:
        status = "Terminating"
    row = [pod["metadata"]["name"], f"{ready}/{len(containers)}", status, str(restarts), age(pod)]
    if wide:
        row += [pod.get("status", {}).get("podIP") or "<none>", pod["spec"].get("nodeName") or "<none>"]
    return row


def _ports(svc: dict) -> str:
    return ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in svc["spec"].get("ports", [])) or "<none>"


def _service_row(svc: dict, wide: bool) -> list[str]:
    spec = svc["spec"]
    ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    external = ",".join(i.get("ip", "") for i in ingress) or ",".join(spec.get("externalIPs", [])) or "<none>"
    row = [svc["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external,
           _ports(svc), age(svc)]
    if wide:
        row.append(",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>")
    return row


def _node_row(node: dict, wide: bool) -> list[str]:
    ready = "Ready" if _condition(node, "Ready") else "NotReady"
    info = node.get("status", {}).get("nodeInfo", {})
    row = [node["metadata"]["name"], ready, "<none>", age(node), info.get("kubeletVersion", "")]
    if wide:
        ips = [a["address"] for a in node.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"]
        row += [",".join(ips) or "<none>", node.get("spec", {}).get("podCIDR") or "<none>"]
    return row


def _slice_row(s: dict, wide: bool) -> list[str]:
    ports = ",".join(str(p["port"]) for p in s.get("ports") or []) or "<unset>"
    addresses = [a for e in s.get("endpoints") or [] for a in e.get("addresses", [])]
    shown = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [s["metadata"]["name"], s.get("addressType", ""), ports, shown or "<unset>", age(s)]


def _namespace_row(ns: dict, wide: bool) -> list[str]:
    return [ns["metadata"]["name"], ns.get("status", {}).get("phase", "Active"), age(ns)]


COLUMNS: dict[str, tuple[list[str], list[str], Callable[[dict, bool], list[str]]]] = {
    "pods": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"], _pod_row),
    "services": (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"], _service_row),
    "nodes": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["INTERNAL-IP", "POD-CIDR"], _node_row),
    "endpointslices": (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], [], _slice_row),
    "namespaces": (["NAME", "STATUS", "AGE"], [], _namespace_row),
}


def table(res: Resource, items: list[dict], wide: bool, all_namespaces: bool) -> str:
    base, extra, row = COLUMNS[res.plural]
    header = base + (extra if wide else [])
    rows = [row(obj, wide) for obj in items]
    if all_namespaces and res.namespaced:
        header = ["NAMESPACE", *header]
        rows = [[obj["metadata"].get("namespace", ""), *r] for obj, r in zip(items, rows)]
    if not rows:
        return ""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def as_list(res: Resource, items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def jsonpath(data: object, template: str) -> str:
    """kubectl's `-o jsonpath=` for the common shapes: `{.a.b}`, `{.items[0].x}`, `{.items[*].x}`,
    with literal text between expressions; several matches are joined by spaces."""
    out = []
    for literal, expr in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        out.append(literal)
        if expr:
            out.append(" ".join(_text(v) for v in _walk([data], expr.strip().lstrip("$"))))
    return "".join(out)


def _walk(values: list, expr: str) -> list:
    for step in re.findall(r"\.([^.\[]+)|\[(\*|\d+)\]", expr):
        key, index = step
        found = []
        for value in values:
            if key and isinstance(value, dict) and key in value:
                found.append(value[key])
            elif index == "*" and isinstance(value, list):
                found.extend(value)
            elif index and index != "*" and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
        values = found
    return values


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def dump(data: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=4)
    return yaml.safe_dump(data, sort_keys=False).rstrip()
