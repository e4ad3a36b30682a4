"""The ReplicaSet controller: keep spec.replicas pods of the template, owned by the ReplicaSet."""
from __future__ import annotations

from dataclasses import dataclass

from netplane.api.events import Recorder
from netplane.api.loop import Reconciler
from netplane.api import objects
from netplane.api.objects import write_status
from netplane.controllers.workloads import (Expectations, active, deletion_order, make_and_remove,
                                            owned_by, pod_from_template, selector_string)


@dataclass(frozen=True)
class Plan:
    create: int
    delete: list[dict]
    status: dict


def plan(rs: dict, pods: list[dict]) -> Plan:
    """How many pods to create, which to delete, and the status to report."""
    mine = [p for p in pods if owned_by(p, rs)]
    live = [p for p in mine if active(p)]
    want = int(rs.get("spec", {}).get("replicas", 1))
    ready = sum(objects.ready(p) for p in live)
    status = {
        "replicas": len(live),
        "fullyLabeledReplicas": len(live),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs["metadata"].get("generation", 1),
        "selector": selector_string(rs["spec"].get("selector")),
    }
    surplus = deletion_order(live)[:max(0, len(live) - want)]
    return Plan(max(0, want - len(live)), surplus, status)


class ReplicaSetController:
    def __init__(self, client, replicasets, pods) -> None:
        self.client, self.replicasets, self.pods = client, replicasets, pods
        self.loop = Reconciler("replicasets", self.reconcile)
        self.expectations = Expectations()
        self.events = Recorder(client, "replicaset-controller")
        replicasets.add_handler(self.loop.trigger)
        pods.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        pods = list(self.pods.cache.values())
        for rs in list(self.replicasets.cache.values()):
            uid = rs["metadata"]["uid"]
            if "deletionTimestamp" in rs["metadata"] or not self.expectations.satisfied(uid, self.pods.cache):
                continue
            p = plan(rs, pods)
            made = [pod_from_template(rs, rs["spec"].get("template", {})) for _ in range(p.create)]
            created = await make_and_remove(self.client, self.events, rs, made, p.delete)
            self.expectations.expect(uid, created, p.delete)
            await write_status(self.client, "replicasets", rs, p.status)
