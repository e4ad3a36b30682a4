"""The node lifecycle controller: a node whose agent stopped renewing its Lease (kube-node-lease/<node>)
for longer than the lease duration is marked NotReady (Ready=Unknown, as upstream), and its pods are
marked not ready, so that EndpointSlices, and with them the proxies, stop sending traffic there.

It keeps the taints a node's state calls for (TaintNodesByCondition, taint-based eviction): not-ready
or unreachable (NoSchedule and NoExecute, the latter with its timeAdded) while it is not Ready, and
unschedulable (NoSchedule) while it is cordoned; the taint eviction controller acts on the NoExecute ones."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from netplane import names
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.api.times import parse_time, time_text
from netplane.controllers.scheduling import taints as tt

MANAGED = (tt.NOT_READY, tt.UNREACHABLE, tt.UNSCHEDULABLE)



def lease_expired(lease: dict | None, now: datetime, grace: float) -> bool:
    if lease is None or not lease.get("spec", {}).get("renewTime"):
        return False  # never heard of: the node is still registering
    return (now - parse_time(lease["spec"]["renewTime"])).total_seconds() > grace


def unknown_conditions(node: dict, now: str) -> list[dict] | None:
    """The node's conditions with Ready=Unknown, or None when it already says so."""
    conditions = copy.deepcopy(node.get("status", {}).get("conditions", []))
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    if ready is not None and ready["status"] == "Unknown":
        return None
    if ready is None:
        ready = {"type": "Ready"}
        conditions.append(ready)
    ready.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                 lastTransitionTime=now)
    return conditions


def tainted(node: dict, now: str) -> list[dict] | None:
    """The node's taints with the managed ones as its state calls for them, or None when they already are."""
    have = node.get("spec", {}).get("taints") or []
    managed = [t for t in have if t.get("key") in MANAGED]
    wanted = tt.condition_taints(node)
    if len(managed) == len(wanted) and all(any(tt.same(t, w) for t in managed) for w in wanted):
        return None
    kept = [t for t in managed if any(tt.same(t, w) for w in wanted)]
    added = [w | ({"timeAdded": now} if w["effect"] == tt.NO_EXECUTE else {}) for w in wanted
             if not any(tt.same(t, w) for t in kept)]
    return [t for t in have if t.get("key") not in MANAGED] + kept + added


def not_ready_conditions(pod: dict, now: str) -> list[dict] | None:
    conditions = copy.deepcopy(pod.get("status", {}).get("conditions", []))
    changed = False
    for c in conditions:
        if c["type"] in ("Ready", "ContainersReady") and c["status"] == "True":
            c.update(status="False", reason="NodeNotReady", lastTransitionTime=now)
            changed = True
    return conditions if changed else None


class NodeLifecycleController:
    def __init__(self, client, nodes, leases, pods, grace: float) -> None:
        self.client, self.nodes, self.leases, self.pods, self.grace = client, nodes, leases, pods, grace
        self.loop = Reconciler("node-lifecycle", self.reconcile, resync=max(0.5, grace / 8))
        self.events = Recorder(client, "node-controller")
        self.registered: set[str] = set()
        nodes.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        now = datetime.now(timezone.utc)
        stamp = time_text(now)
        for node in list(self.nodes.cache.values()):
            name = node["metadata"]["name"]
            if name not in self.registered:  # once per node and run of the controller, as upstream's
                self.registered.add(name)
                self.events.record(node, NORMAL, "RegisteredNode", f"Node {name} event: Registered Node {name} "
                                                                   "in Controller")
            taints = tainted(node, stamp)
            if taints is not None:
                await self._taint(node, taints)
            if not lease_expired(self.leases.cache.get((names.LEASE_NAMESPACE, name)), now, self.grace):
                continue
            conditions = unknown_conditions(node, stamp)
            if conditions is not None:
                await write_status(self.client, "nodes", node, {"conditions": conditions})
                self.events.record(node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
            for pod in list(self.pods.cache.values()):
                if pod["spec"].get("nodeName") == name and (marked := not_ready_conditions(pod, stamp)):
                    await write_status(self.client, "pods", pod, {"conditions": marked})
                    self.events.record(pod, WARNING, "NodeNotReady", "Node is not ready")

    async def _taint(self, node: dict, taints: list[dict]) -> None:
        changed = copy.deepcopy(node)
        changed["spec"]["taints"] = taints
        if not taints:
            del changed["spec"]["taints"]
        try:
            await self.client.update("nodes", changed)
        except ApiError as err:
            if err.code not in (404, 409):  # gone, or changed meanwhile: the next pass sees it
                raise
