"""The proxy modes as the proxier drives them: each turns the ServicePorts into its rules, sending a
whole ruleset on a full sync and only the changes otherwise, and can remove all it made."""
from __future__ import annotations

from typing import Protocol

from netplane.agent.proxy import iptables as proxy_iptables
from netplane.agent.proxy import nftables
from netplane.agent.proxy.model import ServicePort
from netplane.agent.ruleset import Fragment, FragmentCache, collector_held, diff, merge
from netplane.kernel import iptables, nft


class Mode(Protocol):
    name: str

    async def sync(self, ports: list[ServicePort], full: bool) -> bool:
        """Program the ports; True when anything was sent to the kernel."""

    async def tampered(self) -> bool:
        """Whether what the last sync wrote may have been changed since by someone else (a flushed
        or deleted table, chain, map or rule): the proxier then syncs in full."""

    async def remove(self) -> None:
        """Delete every rule of this mode (when a node switches to another mode)."""


class NftablesMode:
    name = "nftables"

    def __init__(self, netns: str | None, node: str, cluster_cidr: str, kernel: nft.Kernel | None = None) -> None:
        self.netns = netns
        self.kernel = kernel or nft.Kernel()  # or nftfake.Fake (tests), nft.Kernel(by_command=True) (the bench's peer)
        self.cache = FragmentCache(lambda sp: nftables.fragment(sp, node, cluster_cidr), nftables.HELD_BY_SEVERAL)
        self.base = nftables.base(cluster_cidr)
        self.applied: dict[str, Fragment] | None = None  # None: the kernel's state is not known
        self.generation = -1  # the namespace's nf_tables generation right after the last sync

    async def tampered(self) -> bool:
        # any transaction in the namespace moves the generation on (a trace's table too): one
        # netlink round trip, and a full rewrite only when one that was not this process's happened
        return self.applied is not None and await self.kernel.touched_by_others(self.netns, self.generation)

    @collector_held
    async def sync(self, ports: list[ServicePort], full: bool) -> bool:
        fragments = {"": self.base, **self.cache.fragments(ports)}
        if full or self.applied is None:
            existing = await self.kernel.table_objects(self.netns, nftables.TABLE)
            everything = merge(fragments.values())
            tx = nftables.declare(everything) if existing is None else nftables.replace(everything, *existing)
        else:
            changes = diff(self.applied, fragments, self.cache)
            if not changes:
                return False
            tx = nftables.update(changes)
        self.applied = None  # until the kernel took it: a failed sync leads to a full one
        self.generation = await self.kernel.transact(self.netns, tx)
        self.applied = fragments
        return True

    async def remove(self) -> None:
        self.applied = None
        await self.kernel.transact(self.netns, nftables.TABLE_OBJECTS.removal())


class IptablesMode:
    """Upstream's iptables mode with either backend: a full sync reads iptables-save once, writes
    every chain, deletes stale per-Service chains and adds the built-in chains' jumps that are
    missing; a partial sync rewrites the top-level chains and only the per-Service chains that changed."""

    name = "iptables"

    def __init__(self, netns: str | None, node: str, cluster_cidr: str, backend: str = "nft") -> None:
        if backend not in iptables.BACKENDS:
            raise ValueError(f"iptables backend {backend!r}: choose one of {', '.join(iptables.BACKENDS)}")
        self.netns, self.backend = netns, backend
        self.cache = FragmentCache(lambda sp: proxy_iptables.fragment(sp, node, cluster_cidr))
        self.applied: dict[str, Fragment] | None = None  # None: the kernel's state is not known
        self.generation = -1  # with the nft backend: the nf_tables generation right after the last sync
        self.counts: dict[str, int] = {}  # with the legacy backend: the rules per chain the last sync wrote

    async def tampered(self) -> bool:
        """With the nft backend the ruleset's generation tells (as in nftables mode); x_tables has
        none, so the legacy backend compares iptables-save's chains, rule counts and jumps with what
        the last sync wrote, as upstream's canary chain tells a flushed table."""
        if self.applied is None:
            return False
        if self.backend == "nft":
            return await nft.touched_by_others(self.netns, self.generation)
        return not proxy_iptables.intact(self.counts, await iptables.save(self.netns, self.backend))

    @collector_held
    async def sync(self, ports: list[ServicePort], full: bool) -> bool:
        fragments = self.cache.fragments(ports)
        if full or self.applied is None:
            if self.applied is None:  # a node that used the other backend before must not keep its rules
                await self._clear(*(b for b in iptables.BACKENDS if b != self.backend))
            saved = await iptables.save(self.netns, self.backend)
            script = proxy_iptables.full(fragments, saved.chains, saved.jumps)
        else:
            changes = diff(self.applied, fragments, self.cache)
            if not changes:
                return False
            script = proxy_iptables.update(fragments, changes)
        self.applied = None  # until the kernel took it: a failed sync leads to a full one
        await iptables.restore(self.netns, self.backend, script)
        if self.backend == "nft":
            self.generation = await nft.committed(self.netns)
        else:
            self.counts = proxy_iptables.rule_counts(fragments)
        self.applied = fragments
        return True

    async def remove(self) -> None:
        """Delete every KUBE-* chain and the jumps to them, in both backends."""
        self.applied = None
        await self._clear(*iptables.BACKENDS)

    async def _clear(self, *backends: str) -> None:
        for backend in backends:
            saved = await iptables.save(self.netns, backend)
            script = proxy_iptables.removal(saved.chains, saved.jumps)
            if script:
                await iptables.restore(self.netns, backend, script)
