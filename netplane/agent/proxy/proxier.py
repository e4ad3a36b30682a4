"""The proxy loop: Services and EndpointSlices from the API -> the node's netfilter, one transaction a
sync, in the lab's proxy mode. Like upstream, a sync sends only what changed, and everything is
rewritten on the first sync (adopting what a previous run left), after a failed sync, once a
`full_sync_seconds` period, and whenever the mode finds its rules changed behind its back (checked on
every sync, so within the resync period, 30 s by default, even when no Service changes)."""
from __future__ import annotations

import logging
import time

from netplane.agent.proxy import model
from netplane.agent.proxy.modes import IptablesMode, Mode, NftablesMode
from netplane.api.informer import Informers
from netplane.api.loop import Reconciler
from netplane.kernel import conntrack

log = logging.getLogger(__name__)
RESYNC_SECONDS = 30.0
FULL_SYNC_SECONDS = 3600.0
MODES = ("nftables", "iptables")


def make_mode(name: str, netns: str | None, node: str, cluster_cidr: str, iptables_backend: str = "nft") -> Mode:
    if name == "nftables":
        return NftablesMode(netns, node, cluster_cidr)
    if name == "iptables":
        return IptablesMode(netns, node, cluster_cidr, iptables_backend)
    raise ValueError(f"proxy mode {name!r}: choose one of {', '.join(MODES)}")


def other_modes(name: str, netns: str | None, node: str, cluster_cidr: str,
                iptables_backend: str = "nft") -> list[Mode]:
    """The modes whose rules a node in mode `name` must not keep (iptables mode removes its rules
    from both backends; its own first sync clears the backend it does not use)."""
    return [make_mode(m, netns, node, cluster_cidr, iptables_backend) for m in MODES if m != name]


class Proxier:
    def __init__(self, informers: Informers, node_name: str, netns: str | None, cluster_cidr: str,
                 mode: str = "nftables", full_sync_seconds: float = FULL_SYNC_SECONDS,
                 iptables_backend: str = "nft", resync_seconds: float = RESYNC_SECONDS) -> None:
        self.node_name, self.netns, self.cluster_cidr = node_name, netns, cluster_cidr
        self.iptables_backend = iptables_backend
        self.mode = make_mode(mode, netns, node_name, cluster_cidr, iptables_backend)
        self.full_sync_seconds = full_sync_seconds
        self.last_full: float | None = None  # None: the first sync is a full one
        self.tracker = model.ServiceTracker()
        self.services = informers.get("services")
        self.slices = informers.get("endpointslices")
        self.loop = Reconciler("proxy", self.sync, resync=resync_seconds)
        for informer, handler in ((self.services, self.tracker.on_service), (self.slices, self.tracker.on_slice)):
            informer.add_handler(handler)
            informer.add_handler(self.loop.trigger)
        self.udp: set[tuple[str, int, str]] = set()

    async def sync(self) -> None:
        if not (self.services.synced.is_set() and self.slices.synced.is_set()):
            return  # a partial view would drop rules of Services not listed yet
        ports = self.tracker.ports()
        full = self.last_full is None or time.monotonic() - self.last_full >= self.full_sync_seconds
        if not full and await self.mode.tampered():
            log.info("proxy/%s: the ruleset changed since the last sync (a flush or delete by hand, another "
                     "program's rules): a full sync rewrites the %s rules", self.node_name, self.mode.name)
            full = True
        if self.last_full is None:
            for other in other_modes(self.mode.name, self.netns, self.node_name, self.cluster_cidr,
                                     self.iptables_backend):
                await other.remove()
        started = time.monotonic()
        if not await self.mode.sync(ports, full):
            return
        if full:
            self.last_full = started
        udp = model.udp_destinations(ports, self.node_name)
        await conntrack.delete_udp(self.netns, self.udp - udp)  # after the rules: no new flow goes there
        self.udp = udp
