"""The controller manager, as kube-controller-manager runs it: every controller's loop by name, on
informers its caller runs; and what the API server does around them at its start (the system
namespaces) and on every write (admission: Service addresses, pods' ServiceAccounts)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from netplane import names
from netplane.api import priority, serviceaccounts
from netplane.api.client import Client
from netplane.api.errors import ApiError
from netplane.api.informer import Informers
from netplane.controllers.cronjob import CronJobController
from netplane.controllers.daemonset import DaemonSetController
from netplane.controllers.deployment import DeploymentController
from netplane.controllers.disruption import DisruptionController
from netplane.controllers.endpointslice import EndpointSliceController
from netplane.controllers.eventttl import EventTTL
from netplane.controllers.gc import GarbageCollector
from netplane.controllers.job import JobController
from netplane.controllers.nodeipam import NodeIPAM
from netplane.controllers.nodelifecycle import NodeLifecycleController
from netplane.controllers.replicaset import ReplicaSetController
from netplane.controllers.scheduler import Scheduler
from netplane.controllers.serviceaccount import RootCAPublisher, ServiceAccountsController
from netplane.controllers.serviceip import admitter
from netplane.controllers.statefulset import StatefulSetController
from netplane.controllers.tainteviction import TaintEvictionController


def loops(informers: Informers, cluster_cidr: str, lease_seconds: int,
          ca_pem: str) -> dict[str, Callable[[], Awaitable]]:
    """The controller manager: every controller's loop, by name, on informers its caller runs;
    ``ca_pem`` is the API server's CA, published in every namespace."""
    client = informers.client
    inf = {plural: informers.get(plural) for plural in (
        "nodes", "pods", "services", "endpointslices", "endpoints", "replicasets", "deployments", "daemonsets",
        "namespaces", "serviceaccounts", "configmaps", "jobs", "cronjobs", "statefulsets",
        "controllerrevisions", "poddisruptionbudgets")}
    inf["leases"] = informers.get("leases", names.LEASE_NAMESPACE)
    loops = [
        NodeIPAM(client, inf["nodes"], cluster_cidr).loop,
        Scheduler(client, inf["nodes"], inf["pods"], inf["namespaces"]).loop,
        EndpointSliceController(client, inf["services"], inf["pods"], inf["endpointslices"], inf["endpoints"],
                                inf["nodes"]).loop,
        ReplicaSetController(client, inf["replicasets"], inf["pods"]).loop,
        DeploymentController(client, inf["deployments"], inf["replicasets"]).loop,
        DaemonSetController(client, inf["daemonsets"], inf["nodes"], inf["pods"]).loop,
        StatefulSetController(client, inf["statefulsets"], inf["pods"], inf["controllerrevisions"]).loop,
        JobController(client, inf["jobs"], inf["pods"]).loop,
        CronJobController(client, inf["cronjobs"], inf["jobs"]).loop,
        NodeLifecycleController(client, inf["nodes"], inf["leases"], inf["pods"], lease_seconds).loop,
        TaintEvictionController(client, inf["nodes"], inf["pods"]).loop,
        DisruptionController(client, inf["poddisruptionbudgets"], inf["pods"], inf["replicasets"],
                             inf["statefulsets"]).loop,
        ServiceAccountsController(client, inf["namespaces"], inf["serviceaccounts"]).loop,
        RootCAPublisher(client, inf["namespaces"], inf["configmaps"], ca_pem).loop,
        GarbageCollector(client, {"ReplicaSet": inf["replicasets"], "Deployment": inf["deployments"],
                                  "DaemonSet": inf["daemonsets"], "Job": inf["jobs"], "CronJob": inf["cronjobs"],
                                  "StatefulSet": inf["statefulsets"]},
                         [inf["pods"], inf["replicasets"], inf["jobs"], inf["controllerrevisions"]]).loop,
        EventTTL(client).loop,
    ]
    return {loop.name: loop.run for loop in loops}


def admission(service_cidr: str) -> Callable:
    """The API server's admission: Services get their IPs and NodePorts, pods their ServiceAccount."""
    services = admitter(service_cidr)

    def admit(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
        obj = services(verb, plural, obj, old, store)
        return priority.admit(verb, plural, serviceaccounts.admit_pod(verb, plural, obj, old, store), old, store)

    return admit


async def system_objects(client: Client) -> None:
    """What the real API server makes at start: the namespaces kube-public and kube-node-lease (the
    nodes' Leases), and the system PriorityClasses."""
    made = [("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            for name in ("kube-public", names.LEASE_NAMESPACE)]
    for plural, obj in [*made, *(("priorityclasses", c) for c in priority.system_classes())]:
        try:
            await client.create(plural, obj)
        except ApiError as err:
            if err.code != 409:
                raise
