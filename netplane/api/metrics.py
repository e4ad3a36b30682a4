"""The resource metrics API, ``metrics.k8s.io/v1beta1`` NodeMetrics and PodMetrics: what
metrics-server serves and ``kubectl top`` reads, made as metrics-server makes them from each node's
kubelet Summary (``/stats/summary``): CPU as the usage rate in nanocores, memory as the working
set. A node or pod whose CPU rate is not known yet (its kubelet has one sample so far) is left
out, as metrics-server leaves it out until it has two points."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from netplane.api.errors import ApiError
from netplane.api.kubelets import Kubelets
from netplane.api.times import time_text

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
WINDOW = "10s"  # the kubelet's housekeeping interval its rates are taken over (agent/stats.py)
RESOURCE_LIST = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
    "resources": [{"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
                   "verbs": ["get", "list"]},
                  {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
                   "verbs": ["get", "list"]}],
}

Lister = Callable[[str, str | None], list[dict]]  # (plural, namespace or None) -> objects
Select = Callable[[Mapping[str, str], str], Callable[[dict], bool]]  # (query, plural) -> its selectors' matcher


def cpu(nanocores: int) -> str:
    return f"{nanocores}n"


def memory(size: int) -> str:
    return f"{size // 1024}Ki" if size % 1024 == 0 else str(size)


def usage(stats: dict) -> dict | None:
    """{cpu, memory} of a Summary entry, or None while its CPU rate is not known."""
    rate = (stats.get("cpu") or {}).get("usageNanoCores")
    working_set = (stats.get("memory") or {}).get("workingSetBytes")
    if rate is None or working_set is None:
        return None
    return {"cpu": cpu(rate), "memory": memory(working_set)}


def _metadata(obj: dict) -> dict:
    meta = obj["metadata"]
    out = {"name": meta["name"], "creationTimestamp": time_text()}
    if "namespace" in meta:
        out["namespace"] = meta["namespace"]
    if meta.get("labels"):
        out["labels"] = meta["labels"]
    return out


def node_metrics(node: dict, summary: dict) -> dict | None:
    used = usage(summary.get("node") or {})
    if used is None:
        return None
    timestamp = (summary["node"].get("cpu") or {}).get("time", time_text())
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": _metadata(node),
            "timestamp": timestamp, "window": WINDOW, "usage": used}


def pod_metrics(pod: dict, stats: dict) -> dict | None:
    containers = []
    for c in stats.get("containers") or []:
        used = usage(c)
        if used is None:
            return None
        containers.append({"name": c["name"], "usage": used})
    if not containers:
        return None
    timestamp = next(((c.get("cpu") or {}).get("time") for c in stats["containers"]), time_text())
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": _metadata(pod),
            "timestamp": timestamp, "window": WINDOW, "containers": containers}


def _list(kind: str, items: list[dict]) -> web.Response:
    return web.json_response({"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items})


def routes(router: web.UrlDispatcher, lister: Lister, select: Select, kubelets: Kubelets) -> None:
    """The group's paths (its discovery document is RESOURCE_LIST)."""
    nodes_by_name: Callable[[], dict[str, dict]] = lambda: {n["metadata"]["name"]: n for n in lister("nodes", None)}

    async def summaries(node_names: set[str]) -> dict[str, dict]:
        """Each named node's Summary; a node whose kubelet cannot be reached is left out."""
        nodes = nodes_by_name()
        chosen = [nodes[n] for n in sorted(node_names) if n in nodes]
        found = await asyncio.gather(*(kubelets.get_json(n, "stats/summary") for n in chosen), return_exceptions=True)
        return {n["metadata"]["name"]: s for n, s in zip(chosen, found) if isinstance(s, dict)}

    async def node_items(wanted: list[dict]) -> list[dict]:
        found = await summaries({n["metadata"]["name"] for n in wanted})
        return [m for n in wanted if n["metadata"]["name"] in found
                for m in [node_metrics(n, found[n["metadata"]["name"]])] if m is not None]

    async def pod_items(pods: list[dict]) -> list[dict]:
        found = await summaries({p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")})
        stats = {(s["podRef"]["namespace"], s["podRef"]["name"], s["podRef"]["uid"]): s
                 for summary in found.values() for s in summary.get("pods") or []}
        out = []
        for pod in pods:
            meta = pod["metadata"]
            entry = stats.get((meta["namespace"], meta["name"], meta["uid"]))
            made = pod_metrics(pod, entry) if entry is not None else None
            if made is not None:
                out.append(made)
        return out

    async def list_nodes(request: web.Request) -> web.Response:
        match = select(request.query, "nodes")
        return _list("NodeMetrics", await node_items([n for n in nodes_by_name().values() if match(n)]))

    async def get_node(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        node = nodes_by_name().get(name)
        found = await node_items([node]) if node is not None else []
        if not found:
            raise ApiError(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found')
        return web.json_response(found[0])

    async def list_pods(request: web.Request) -> web.Response:
        match = select(request.query, "pods")
        pods = [p for p in lister("pods", request.match_info.get("namespace")) if match(p)]
        return _list("PodMetrics", await pod_items(pods))

    async def get_pod(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pods = [p for p in lister("pods", namespace) if p["metadata"]["name"] == name]
        found = await pod_items(pods)
        if not found:
            raise ApiError(404, "NotFound", f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found')
        return web.json_response(found[0])

    root = f"/apis/{GROUP_VERSION}"
    handlers: list[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]] = [
        (f"{root}/nodes", list_nodes), (f"{root}/nodes/{{name}}", get_node), (f"{root}/pods", list_pods),
        (f"{root}/namespaces/{{namespace}}/pods", list_pods), (f"{root}/namespaces/{{namespace}}/pods/{{name}}", get_pod)]
    for path, handler in handlers:
        router.add_get(path, handler)
