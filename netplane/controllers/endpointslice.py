"""The EndpointSlice controller: a Service's selector -> its pods' IPs and resolved target ports.

One slice per distinct set of resolved ports (a named targetPort may resolve differently per pod,
which is why upstream groups endpoints this way), named `<service>-<hash of the ports>` so that a
pass of the loop finds its own slices again. A Service with no endpoints keeps one empty slice.
"""
from __future__ import annotations

from netplane import names
from netplane.api import objects
from netplane.api.loop import Reconciler

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGER = "endpoint-controller"


def resolve_port(service_port: dict, pod: dict) -> int | None:
    """The pod port a Service port sends to: a number, or a containerPort found by name."""
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def _endpoint(pod: dict, zones: dict[str, str], service: str) -> dict:
    """A pod as an endpoint of the Service named ``service``: with its hostname when the pod's
    subdomain is that Service (its DNS name under a headless Service), as upstream's controller."""
    ready = objects.ready(pod)
    terminating = "deletionTimestamp" in pod["metadata"]
    meta = pod["metadata"]
    endpoint = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
        "nodeName": pod["spec"].get("nodeName"),
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid")},
    }
    if pod["spec"].get("nodeName") in zones:
        endpoint["zone"] = zones[pod["spec"]["nodeName"]]
    if pod["spec"].get("hostname") and pod["spec"].get("subdomain") == service:
        endpoint["hostname"] = pod["spec"]["hostname"]
    return endpoint


def node_zones(nodes: list[dict]) -> dict[str, str]:
    """Node name -> its topology.kubernetes.io/zone label, for nodes that have one."""
    return {n["metadata"]["name"]: n["metadata"]["labels"][ZONE_LABEL] for n in nodes
            if ZONE_LABEL in n["metadata"].get("labels", {})}


def _slice(service: dict, ports: tuple, endpoints: list[dict]) -> dict:
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{meta['name']}-{names.short_hash(repr(ports), 5).lower()}",
            "namespace": meta["namespace"],
            "labels": {names.SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta.get("uid"),
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": name, "protocol": protocol, "port": port} for name, protocol, port in ports],
    }


def desired_slices(service: dict, pods: list[dict], zones: dict[str, str] | None = None) -> list[dict]:
    """The slices a Service should have, given every pod of its namespace and the nodes' zones."""
    spec = service.get("spec", {})
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return []
    groups: dict[tuple, list[dict]] = {}
    namespace = service["metadata"]["namespace"]
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status", {})
        if (pod["metadata"].get("namespace") != namespace or not status.get("podIP")
                or status.get("phase") in ("Succeeded", "Failed")
                or not objects.selects(selector, pod["metadata"].get("labels", {}))):
            continue
        ports = []
        for sp in spec.get("ports", []):
            number = resolve_port(sp, pod)
            if number is not None:
                ports.append((sp.get("name", ""), sp.get("protocol", "TCP"), number))
        groups.setdefault(tuple(ports), []).append(_endpoint(pod, zones or {}, service["metadata"]["name"]))
    if not groups:
        return [_slice(service, (), [])]
    return [_slice(service, ports, endpoints) for ports, endpoints in groups.items()]


def endpoints_object(service: dict, slices: list[dict]) -> dict:
    """The v1 Endpoints of a Service, kept in step with its slices for tools that still read them."""
    subsets = []
    for s in slices:
        ready = [_address(e) for e in s["endpoints"] if e["conditions"]["ready"]]
        not_ready = [_address(e) for e in s["endpoints"] if not e["conditions"]["ready"]]
        if not (ready or not_ready):
            continue
        subset: dict = {"ports": [dict(p) for p in s["ports"]]}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets.append(subset)
    meta = service["metadata"]
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": {ENDPOINTS_MANAGED_BY_LABEL: ENDPOINTS_MANAGER}},
            "subsets": subsets}


def _address(endpoint: dict) -> dict:
    hostname = {"hostname": endpoint["hostname"]} if "hostname" in endpoint else {}
    return {"ip": endpoint["addresses"][0], **hostname, "nodeName": endpoint["nodeName"],
            "targetRef": endpoint["targetRef"]}


def _differs(want: dict, have: dict) -> bool:
    fields = [k for k in want if k not in ("metadata", "apiVersion", "kind")]
    return any(want[k] != have.get(k) for k in fields) or want["metadata"]["labels"] != have["metadata"].get("labels")


class EndpointSliceController:
    def __init__(self, client, services, pods, slices, endpoints, nodes) -> None:
        self.client, self.services, self.pods, self.slices = client, services, pods, slices
        self.endpoints, self.nodes = endpoints, nodes
        self.loop = Reconciler("endpointslices", self.reconcile)
        for informer in (services, pods, slices, endpoints, nodes):
            informer.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        pods = list(self.pods.cache.values())
        zones = node_zones(list(self.nodes.cache.values()))
        slices: dict[tuple[str, str], dict] = {}
        endpoints: dict[tuple[str, str], dict] = {}
        for service in self.services.cache.values():
            mine = desired_slices(service, pods, zones)
            slices.update(((s["metadata"]["namespace"], s["metadata"]["name"]), s) for s in mine)
            if mine:
                endpoints[(service["metadata"]["namespace"], service["metadata"]["name"])] = endpoints_object(service, mine)
        await self._converge("endpointslices", self.slices.cache, slices, MANAGED_BY_LABEL, MANAGED_BY)
        await self._converge("endpoints", self.endpoints.cache, endpoints, ENDPOINTS_MANAGED_BY_LABEL, ENDPOINTS_MANAGER)

    async def _converge(self, plural: str, cache: dict, wanted: dict, label: str, manager: str) -> None:
        """Create, update and delete this controller's objects of one kind until they are `wanted`."""
        ours = {k: v for k, v in cache.items() if v["metadata"].get("labels", {}).get(label) == manager}
        for key, want in wanted.items():
            have = cache.get(key)
            if have is None:
                await self.client.create(plural, want)
            elif _differs(want, have):
                want["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
                await self.client.update(plural, want)
        for (namespace, name) in ours.keys() - wanted.keys():
            await self.client.delete(plural, name, namespace)
