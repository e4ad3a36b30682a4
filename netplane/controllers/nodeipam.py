"""Node IPAM: one podCIDR per node from the clusterCIDR, as kube-controller-manager's range allocator."""
from __future__ import annotations

import copy

import ipaddress

from netplane.api.loop import Reconciler


def next_pod_cidr(cluster_cidr: str, used: set[str], prefixlen: int = 24) -> str:
    """The lowest /prefixlen subnet of cluster_cidr that no node uses."""
    for subnet in ipaddress.ip_network(cluster_cidr).subnets(new_prefix=prefixlen):
        if str(subnet) not in used:
            return str(subnet)
    raise RuntimeError(f"clusterCIDR {cluster_cidr} has no free /{prefixlen} left")


class NodeIPAM:
    """Remembers what it handed out, as the range allocator's CIDR set does: the informer's cache may
    not show its last write yet (with etcd the event comes back through a watch), and reading only the
    cache would give two nodes one podCIDR."""

    def __init__(self, client, nodes, cluster_cidr: str) -> None:
        self.client, self.nodes, self.cluster_cidr = client, nodes, cluster_cidr
        self.assigned: dict[str, str] = {}
        self.loop = Reconciler("node-ipam", self.reconcile)
        nodes.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        present = {n["metadata"]["name"] for n in self.nodes.cache.values()}
        self.assigned = {name: cidr for name, cidr in self.assigned.items() if name in present}
        used = {n["spec"]["podCIDR"] for n in self.nodes.cache.values() if n.get("spec", {}).get("podCIDR")}
        used |= set(self.assigned.values())
        for node in sorted(self.nodes.cache.values(), key=lambda n: n["metadata"]["name"]):
            name = node["metadata"]["name"]
            if node.get("spec", {}).get("podCIDR") or name in self.assigned:
                continue
            cidr = next_pod_cidr(self.cluster_cidr, used)
            used.add(cidr)
            node = copy.deepcopy(node)
            node.setdefault("spec", {}).update(podCIDR=cidr, podCIDRs=[cidr])
            await self.client.update("nodes", node)
            self.assigned[name] = cidr
