"""kubectl-shaped output: tables with kubectl's columns, Lists as JSON or YAML, jsonpath."""
from __future__ import annotations

import json
import re

import yaml

from netplane.api import tables
from netplane.api.resources import Resource


def table(res: Resource, items: list[dict], wide: bool, all_namespaces: bool) -> str:
    """The objects as kubectl prints them, from the same Table the API server serves."""
    data = tables.table(res, items, {}, include_object="None")
    shown = [i for i, c in enumerate(data["columnDefinitions"]) if wide or c["priority"] == 0]
    header = [data["columnDefinitions"][i]["name"].upper() for i in shown]
    rows = [[str(row["cells"][i]) for i in shown] for row in data["rows"]]
    if all_namespaces and res.namespaced:
        header = ["NAMESPACE", *header]
        rows = [[obj["metadata"].get("namespace", ""), *r] for obj, r in zip(items, rows)]
    return columns(header, rows)


def columns(header: list[str], rows: list[list[str]]) -> str:
    """Rows under a header in kubectl's aligned columns; nothing when there are no rows."""
    if not rows:
        return ""
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


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
