"""The DaemonSet controller: one pod of the template on every node its node affinity picks and whose
taints it tolerates (with the tolerations every daemon pod gets), bound to the node directly; pods
of an older template are replaced one node at a time."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from netplane.api.events import Recorder
from netplane.api.loop import Reconciler
from netplane.api import objects
from netplane.api.objects import write_status
from netplane.controllers.scheduling import fit
from netplane.controllers.scheduling import taints as tt
from netplane.controllers.workloads import (Expectations, active, make_and_remove, owned_by,
                                            pod_from_template, template_hash)

REVISION_LABEL = "controller-revision-hash"


@dataclass(frozen=True)
class Plan:
    create_on: list[str]
    delete: list[dict]
    status: dict


# what the DaemonSet controller adds to its pods' tolerations (util.AddOrUpdateDaemonPodTolerations)
DAEMON_TOLERATIONS = (
    *({"key": key, "operator": "Exists", "effect": tt.NO_EXECUTE} for key in (tt.NOT_READY, tt.UNREACHABLE)),
    *({"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": tt.NO_SCHEDULE}
      for key in ("disk-pressure", "memory-pressure", "pid-pressure", "unschedulable")),
)


def daemon_template(ds: dict) -> dict:
    """The DaemonSet's pod template with the tolerations every daemon pod gets."""
    template = copy.deepcopy(ds["spec"]["template"])
    spec = template.setdefault("spec", {})
    tolerations = spec.setdefault("tolerations", [])
    tolerations += [t for t in DAEMON_TOLERATIONS if t not in tolerations]
    return template


def eligible(ds: dict, node: dict, running: bool = False) -> bool:
    """Whether a daemon pod should run on the node: its node affinity fits and the node's taints are
    tolerated (a cordoned node's too: daemon pods tolerate that); one already ``running`` there stays
    unless a NoExecute taint is not tolerated (a node gone NotReady keeps its daemons)."""
    pod = daemon_template(ds)
    effects = (tt.NO_EXECUTE,) if running else (tt.NO_SCHEDULE, tt.NO_EXECUTE)
    return fit.node_affinity_fits(pod, node) and not tt.untolerated(pod, tt.effective_taints(node), effects)


def plan(ds: dict, nodes: list[dict], pods: list[dict]) -> Plan:
    digest = template_hash(ds["spec"]["template"])
    mine = [p for p in pods if owned_by(p, ds) and active(p)]
    by_node: dict[str, list[dict]] = {}
    for pod in mine:
        by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)
    wanted = sorted(n["metadata"]["name"] for n in nodes if eligible(ds, n, running=n["metadata"]["name"] in by_node))
    delete = [p for node, ps in by_node.items() if node not in wanted for p in ps]
    delete += [p for node in wanted for p in by_node.get(node, [])[1:]]  # more than one on a node
    current = {node: ps[0] for node, ps in by_node.items() if node in wanted and ps}
    outdated = [p for p in current.values() if p["metadata"].get("labels", {}).get(REVISION_LABEL) != digest]
    if outdated and all(objects.ready(p) for p in current.values() if p not in outdated):
        delete.append(sorted(outdated, key=lambda p: p["spec"]["nodeName"])[0])  # maxUnavailable 1
    ready = sum(objects.ready(p) for p in current.values())
    status = {
        "desiredNumberScheduled": len(wanted),
        "currentNumberScheduled": len(current),
        "numberMisscheduled": sum(len(ps) for node, ps in by_node.items() if node not in wanted),
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": len(wanted) - ready,
        "updatedNumberScheduled": len(current) - len(outdated),
        "observedGeneration": ds["metadata"].get("generation", 1),
    }
    return Plan([n for n in wanted if n not in current], delete, status)


class DaemonSetController:
    def __init__(self, client, daemonsets, nodes, pods) -> None:
        self.client, self.daemonsets, self.nodes, self.pods = client, daemonsets, nodes, pods
        self.loop = Reconciler("daemonsets", self.reconcile)
        self.expectations = Expectations()
        self.events = Recorder(client, "daemonset-controller")
        for informer in (daemonsets, nodes, pods):
            informer.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        nodes, pods = list(self.nodes.cache.values()), list(self.pods.cache.values())
        for ds in list(self.daemonsets.cache.values()):
            uid = ds["metadata"]["uid"]
            if "deletionTimestamp" in ds["metadata"] or not self.expectations.satisfied(uid, self.pods.cache):
                continue
            p = plan(ds, nodes, pods)
            labels = {REVISION_LABEL: template_hash(ds["spec"]["template"])}
            made = [pod_from_template(ds, daemon_template(ds), labels, node) for node in p.create_on]
            created = await make_and_remove(self.client, self.events, ds, made, p.delete)
            self.expectations.expect(uid, created, p.delete)
            await write_status(self.client, "daemonsets", ds, p.status)
