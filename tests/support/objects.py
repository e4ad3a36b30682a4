"""Kubernetes objects tests build: the one Pod builder (API, controller and lab tests all use it)
and a sample of each kind the store serves."""
from __future__ import annotations


def pod(name: str, labels: dict | None = None, node: str | None = None, ns: str = "default",
        ports: list[dict] | None = None, status: dict | None = None, uid: str | None = None,
        meta: dict | None = None, **spec) -> dict:
    """A Pod of one container running the echo image; `meta` adds metadata fields (annotations), and
    `spec` adds or replaces Pod spec fields (containers)."""
    container = {"name": "echo", "image": "netplane/echo", **({"ports": ports} if ports else {})}
    meta = {"name": name, "namespace": ns, "labels": labels or {}, **({"uid": uid} if uid else {}), **(meta or {})}
    found = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
             "spec": {**({"nodeName": node} if node else {}), "containers": [container], **spec}}
    return found | ({"status": status} if status is not None else {})


SAMPLES = {
    "namespaces": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
    "nodes": {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}
    },
    "pods": pod("web-1", {"app": "web"}),
    "services": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]},
    },
    "endpointslices": {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"]}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    },
}
