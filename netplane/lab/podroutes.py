"""Routes to the pods from the lab's hosts that are no node: with controlPlane.mode hosts, each
control-plane host gets every node's podCIDR via that node's underlay address (as the route table
of a network that carries pod routes has them, or flannel's host-gw). So a pod's connection to the
``kubernetes`` Service, DNATed by its node to a server's address, is answered straight back to that
node, which un-DNATs it: in-cluster clients (cluster DNS, any operator) reach the API as on a
cluster whose control plane runs on its nodes."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from netplane import names
from netplane.api.informer import Informer, Informers
from netplane.api.loop import Reconciler
from netplane.kernel.links import index, netlink


def wanted(nodes: list[dict]) -> dict[str, str]:
    """podCIDR -> the node's InternalIP, for every node that has both."""
    out = {}
    for node in nodes:
        cidr = node.get("spec", {}).get("podCIDR")
        ip = next((a["address"] for a in node.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"),
                  None)
        if cidr and ip:
            out[cidr] = ip
    return out


def _routes(space: str, cluster_cidr: str, want: dict[str, str]) -> None:
    """Make the host's routes into the cluster CIDR exactly ``want``."""
    net = ipaddress.ip_network(cluster_cidr)
    with netlink(space) as ipr:
        eth0 = index(ipr, names.UNDERLAY_IF)
        for route in ipr.get_routes(family=socket.AF_INET):
            dst = route.get_attr("RTA_DST")
            if dst and ipaddress.ip_network(f"{dst}/{route['dst_len']}").subnet_of(net) and \
                    f"{dst}/{route['dst_len']}" not in want:
                ipr.route("del", dst=f"{dst}/{route['dst_len']}")
        for cidr, via in want.items():
            ipr.route("replace", dst=cidr, gateway=via, oif=eth0)


def components(informers: Informers, spaces: list[str], cluster_cidr: str) -> dict[str, Callable[[], Awaitable]]:
    """The reconciler that keeps the routes of ``spaces`` (the control-plane hosts' namespaces)."""
    nodes: Informer = informers.get("nodes")

    async def reconcile() -> None:
        want = wanted(list(nodes.cache.values()))
        for space in spaces:
            await asyncio.to_thread(_routes, space, cluster_cidr, want)

    loop = Reconciler("pod-routes", reconcile)
    nodes.add_handler(loop.trigger)
    return {loop.name: loop.run}
