"""The emulated cloud: what a cloud controller and a cloud load balancer do for LoadBalancer Services.

The controller gives each LoadBalancer Service an address from the lab's loadBalancerPool (or the
one it asks for in spec.loadBalancerIP) in status.loadBalancer.ingress. The load balancer itself is
a route in the underlay client's namespace: `<lb ip>/32` with one next hop per node that should get
the traffic (every Ready node; with externalTrafficPolicy Local only the nodes with a ready local
endpoint, as a cloud LB learns from the health-check NodePort). Packets keep the LB address as
their destination, and each node's proxy rules translate it, as on a cloud.
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

from netplane import names
from netplane.api.events import NORMAL, Recorder
from netplane.api.informer import Informer, Informers
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.controllers.scheduler import node_ready
from netplane.kernel import links


def allocate(pool: str, used: set[str], wanted: str | None) -> str | None:
    """The wanted address if free and in the pool, else the lowest free one; None when the pool is full."""
    net = ipaddress.ip_network(pool)
    if wanted and ipaddress.ip_address(wanted) in net and wanted not in used:
        return wanted
    return next((str(a) for a in net.hosts() if str(a) not in used), None)


def backends(service: dict, nodes: list[dict], slices: list[dict]) -> list[str]:
    """Underlay addresses of the nodes a load balancer sends this Service's traffic to."""
    ready = {n["metadata"]["name"]: next((a["address"] for a in n.get("status", {}).get("addresses", [])
                                          if a["type"] == "InternalIP"), None) for n in nodes if node_ready(n)}
    if service["spec"].get("externalTrafficPolicy") == "Local":
        meta = service["metadata"]
        local = {e.get("nodeName") for s in slices if s["metadata"].get("namespace") == meta["namespace"]
                 and s["metadata"].get("labels", {}).get(names.SERVICE_NAME_LABEL) == meta["name"]
                 for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready")}
        ready = {n: ip for n, ip in ready.items() if n in local}
    return sorted(ip for ip in ready.values() if ip)



class CloudController:
    def __init__(self, client, lab_name: str, pool: str, nodes: Informer, services: Informer, slices: Informer) -> None:
        self.client, self.pool = client, pool
        self.client_netns = names.client_netns(lab_name)
        self.nodes, self.services, self.slices = nodes, services, slices
        self.assigned: dict[tuple[str, str], str] = {}  # what it handed out, whatever the cache shows yet
        self.loop = Reconciler("cloud-controller", self.reconcile)
        self.events = Recorder(client, "service-controller")
        for informer in (nodes, services, slices):
            informer.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        balanced = [s for s in self.services.cache.values() if s.get("spec", {}).get("type") == "LoadBalancer"]
        keys = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in balanced}
        self.assigned = {k: ip for k, ip in self.assigned.items() if k in keys}
        used = {i.get("ip") for s in balanced for i in (s.get("status", {}).get("loadBalancer") or {}).get("ingress") or []}
        used |= set(self.assigned.values())
        routes: dict[str, list[str]] = {}
        for svc in balanced:
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
            ip = ingress[0].get("ip") if ingress else self.assigned.get(key) or \
                allocate(self.pool, used, svc["spec"].get("loadBalancerIP"))
            if ip is None:
                continue  # the pool is full: the Service stays <pending>, as on a cloud out of addresses
            used.add(ip)
            if not ingress and key not in self.assigned:
                self.events.record(svc, NORMAL, "EnsuringLoadBalancer", "Ensuring load balancer")
                await write_status(self.client, "services", svc,
                                   {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}})
                self.events.record(svc, NORMAL, "EnsuredLoadBalancer", "Ensured load balancer")
                self.assigned[key] = ip
            routes[ip] = backends(svc, list(self.nodes.cache.values()), list(self.slices.cache.values()))
        await asyncio.to_thread(links.keep_routes, self.client_netns, self.pool,
                                {f"{ip}/32": hops for ip, hops in routes.items()}, names.UNDERLAY_IF)


def components(informers: Informers, lab_name: str, pool: str) -> dict[str, Callable[[], Awaitable]]:
    """The emulated cloud as the lab's process runs it: its controller, by name, on informers its
    caller runs."""
    controller = CloudController(informers.client, lab_name, pool, *(informers.get(plural) for plural in (
        "nodes", "services", "endpointslices")))
    return {controller.loop.name: controller.loop.run}
