"""The node agent's NetworkPolicy loop: Pods, Namespaces and NetworkPolicies from the API -> the node's
`ip netplane-policy` table (nftables.py), one transaction a sync with only what changed sent. The
whole table is written on the first sync (replacing what an earlier run left), after a failed sync,
and when a transaction this process did not make touched the namespace's ruleset since."""
from __future__ import annotations

import logging

from netplane.agent.policy import model, nftables
from netplane.agent.policy.state import NodePolicies
from netplane.agent.ruleset import Fragment, collector_held, diff, merge
from netplane.api.informer import Informers
from netplane.api.loop import Reconciler
from netplane.kernel import nft

log = logging.getLogger(__name__)


def cluster(pods: list[dict], namespaces: list[dict], policies: list[dict]) -> model.Cluster:
    """The objects of the API as model.py reads them."""
    return model.Cluster(tuple(p for p in map(model.pod_of, pods) if p is not None),
                         {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces},
                         tuple(sorted((model.policy_of(p) for p in policies), key=lambda p: p.key)))


class PolicyTable:
    """A node's `ip netplane-policy` table as its owner writes it: what it last wrote, and the
    namespace's generation right after, which tells whether anyone else touched the ruleset since."""

    def __init__(self, netns: str | None, kernel: nft.Kernel | None = None, name: str = "") -> None:
        self.netns, self.name = netns, name or (netns or "this namespace")
        self.kernel = kernel or nft.Kernel()  # or nftfake.Fake in tests
        self.applied: dict[str, Fragment] | None = None  # None: the kernel's state is not known
        self.generation = -1

    @collector_held
    async def write(self, wanted: dict[str, Fragment], state: NodePolicies | None = None) -> bool:
        """Make the table hold these fragments (state: what made them, which knows what it changed);
        True when a transaction was sent."""
        if self.applied is not None and await self.kernel.touched_by_others(self.netns, self.generation):
            log.info("policy/%s: the ruleset changed since the last sync: the policy table is written anew", self.name)
            self.applied = None
        if self.applied is None:
            tx = nftables.TABLE_OBJECTS.anew(merge(wanted.values()))
        else:
            changes = diff(self.applied, wanted, state)
            if not changes:
                return False
            tx = nftables.TABLE_OBJECTS.update(changes)
        self.applied = None  # until the kernel took it: a failed sync leads to a full one
        self.generation = await self.kernel.transact(self.netns, tx)
        self.applied = wanted
        return True

    async def remove(self) -> None:
        """Delete the table (a node agent that stops enforcing)."""
        self.applied = None
        await self.kernel.transact(self.netns, nftables.TABLE_OBJECTS.removal())


class PolicyEnforcer:
    """Pods, Namespaces and NetworkPolicies from the API -> the node's table, on every change."""

    def __init__(self, informers: Informers, node_name: str, netns: str | None, resync_seconds: float = 30.0) -> None:
        self.node_name = node_name
        self.table = PolicyTable(netns, name=node_name)
        self.state = NodePolicies(node_name)
        self.informers = [informers.get(plural) for plural in ("pods", "namespaces", "networkpolicies")]
        self.loop = Reconciler(f"policy/{node_name}", self.sync, resync=resync_seconds)
        for informer in self.informers:
            informer.add_handler(self.loop.trigger)

    async def sync(self) -> None:
        if not all(i.synced.is_set() for i in self.informers):
            return  # a partial view would isolate pods without the rules that allow their traffic
        pods, namespaces, policies = (list(i.cache.values()) for i in self.informers)
        await self.table.write(self.state.update(pods, namespaces, policies), self.state)
