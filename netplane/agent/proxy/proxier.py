"""The proxy loop: Services and EndpointSlices from the API -> the node's netfilter, one transaction a sync."""
from __future__ import annotations

from netplane.agent.proxy import model, nftables
from netplane.api.informer import Informer
from netplane.api.loop import Reconciler
from netplane.kernel import conntrack, nft

RESYNC_SECONDS = 30.0


class Proxier:
    def __init__(self, client, node_name: str, netns: str | None, cluster_cidr: str) -> None:
        self.node_name, self.netns, self.cluster_cidr = node_name, netns, cluster_cidr
        self.services = Informer(client, "services")
        self.slices = Informer(client, "endpointslices")
        self.loop = Reconciler("proxy", self.sync, resync=RESYNC_SECONDS)
        self.services.add_handler(self.loop.trigger)
        self.slices.add_handler(self.loop.trigger)
        self.applied: str | None = None
        self.udp: set[tuple[str, int, str]] = set()

    def informers(self) -> list[Informer]:
        return [self.services, self.slices]

    async def sync(self) -> None:
        if not (self.services.synced.is_set() and self.slices.synced.is_set()):
            return  # a partial view would drop rules of Services not listed yet
        ports = model.service_ports(list(self.services.cache.values()), list(self.slices.cache.values()))
        script = nftables.render(ports, self.node_name, self.cluster_cidr)
        if script == self.applied:
            return
        await nft.apply(self.netns, script)
        self.applied = script
        udp = model.udp_destinations(ports, self.node_name)
        await conntrack.delete_udp(self.netns, self.udp - udp)  # after the rules: no new flow goes there
        self.udp = udp
