"""Routes to the pods from the lab's hosts that are no node: with controlPlane.mode hosts, each
control-plane host gets every node's podCIDR via that node's underlay address (as the route table
of a network that carries pod routes has them, or flannel's host-gw). So a pod's connection to the
``kubernetes`` Service, DNATed by its node to a server's address, is answered straight back to that
node, which un-DNATs it: in-cluster clients (cluster DNS, any operator) reach the API as on a
cluster whose control plane runs on its nodes."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from netplane import names
from netplane.api.informer import Informer, Informers
from netplane.api.loop import Reconciler
from netplane.kernel import links


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


def components(informers: Informers, spaces: list[str], cluster_cidr: str) -> dict[str, Callable[[], Awaitable]]:
    """The reconciler that keeps the routes of ``spaces`` (the control-plane hosts' namespaces)."""
    nodes: Informer = informers.get("nodes")

    async def reconcile() -> None:
        want = wanted(list(nodes.cache.values()))
        for space in spaces:
            await asyncio.to_thread(links.keep_routes, space, cluster_cidr,
                                    {cidr: [via] for cidr, via in want.items()}, names.UNDERLAY_IF)

    loop = Reconciler("pod-routes", reconcile)
    nodes.add_handler(loop.trigger)
    return {loop.name: loop.run}
