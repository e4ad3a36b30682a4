"""The node lifecycle controller: a node whose agent stopped renewing its Lease (kube-node-lease/<node>)
for longer than the lease duration is marked NotReady (Ready=Unknown, as upstream), and its pods are
marked not ready, so that EndpointSlices, and with them the proxies, stop sending traffic there."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from netplane import names
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.api.times import time_text



def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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
