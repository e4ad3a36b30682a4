"""Server-side printing: the ``meta.k8s.io/v1 Table`` that ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints whatever columns
the server defines; ``-o wide`` shows the columns of priority 1 as well. The columns and cells here
are kubectl's usual ones (the apiserver's printers), computed as pure functions of the object and
the current time, so they are tested without a server.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from netplane.api import objects, times
from netplane.api.writes import selector_string
from netplane.api.resources import Resource

TABLE_VERSIONS = ("v1", "v1beta1")  # meta.k8s.io versions of Table kubectl may ask for


@dataclass(frozen=True)
class Column:
    name: str
    description: str
    type: str = "string"
    priority: int = 0
    format: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


Cells = Callable[[dict, datetime], list]

NAME = Column("Name", "Name must be unique within a namespace; the object's metadata.name.", format="name")
AGE = Column("Age", "The time since the object was created (metadata.creationTimestamp).")
NONE, UNSET, UNKNOWN = "<none>", "<unset>", "<unknown>"


# -- kubectl's time and list formatting


def human_duration(seconds: float) -> str:
    """kubectl's short durations: 45s, 3m20s, 25m, 5h30m, 30h, 3d4h, 200d, 2y30d, 10y."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y" if days % 365 == 0 else f"{days // 365}y{days % 365}d"
    return f"{days // 365}y"


def parse_time(text: str | None) -> datetime | None:
    """A timestamp, or None when there is none (or it cannot be read): a column shows <unknown>."""
    if not text:
        return None
    try:
        return times.parse_time(text)
    except ValueError:
        return None


def since(text: str | None, now: datetime) -> str:
    """The age of a timestamp as kubectl prints it; ``<unknown>`` when there is none."""
    when = parse_time(text)
    return UNKNOWN if when is None else human_duration((now - when).total_seconds())


def age(obj: dict, now: datetime) -> str:
    return since(obj.get("metadata", {}).get("creationTimestamp"), now)


def format_labels(labels: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


def format_selector(selector: dict | None) -> str:
    """A LabelSelector as text: ``app=web,tier in (a,b),!canary``; ``<none>`` when it selects nothing."""
    return selector_string(selector) or NONE


def first_of(values: Sequence[str], most: int = 3, empty: str = NONE) -> str:
    """``a,b,c + 2 more...``, as kubectl abbreviates endpoints."""
    if not values:
        return empty
    text = ",".join(values[:most])
    return text + (f" + {len(values) - most} more..." if len(values) > most else "")


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _template_spec(obj: dict) -> dict:
    return _spec(obj).get("template", {}).get("spec") or {}


def _containers_and_images(obj: dict) -> list:
    containers = _template_spec(obj).get("containers") or []
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            format_selector(_spec(obj).get("selector"))]


WORKLOAD_WIDE = [
    Column("Containers", "Names of the containers in the pod template.", priority=1),
    Column("Images", "Images of the containers in the pod template.", priority=1),
    Column("Selector", "The label selector of the pods.", priority=1),
]


# -- pods


def _exit(terminated: dict) -> str:
    return f"Signal:{terminated['signal']}" if terminated.get("signal") else f"ExitCode:{terminated.get('exitCode', 0)}"


def pod_status_reason(pod: dict) -> tuple[str, int, int, int, datetime | None]:
    """(STATUS, ready containers, total containers, restarts, last restart) as kubectl reads a pod."""
    spec, status = _spec(pod), _status(pod)
    init_specs = spec.get("initContainers") or []
    sidecars = {c.get("name") for c in init_specs if c.get("restartPolicy") == "Always"}
    total, ready, restarts = len(spec.get("containers") or []) + len(sidecars), 0, 0
    last_restart: datetime | None = None
    reason = status.get("reason") or status.get("phase") or "Pending"

    def note_restart(cs: dict) -> None:
        nonlocal last_restart
        finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        note_restart(cs)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if cs.get("name") in sidecars:
            if cs.get("started"):
                ready += 1 if cs.get("ready") else 0
                continue
        elif terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            reason = "Init:" + (terminated.get("reason") or _exit(terminated))
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing:
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            note_restart(cs)
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated:
                reason = _exit(terminated)
            elif cs.get("ready") and "running" in state:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if objects.ready(pod) else "NotReady"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, total, restarts, last_restart


def _pod_cells(pod: dict, now: datetime) -> list:
    reason, ready, total, restarts, last_restart = pod_status_reason(pod)
    restart_text = str(restarts)
    if last_restart is not None:
        restart_text += f" ({human_duration((now - last_restart).total_seconds())} ago)"
    spec, status = _spec(pod), _status(pod)
    gates = spec.get("readinessGates") or []
    if gates:
        true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        gate_text = f"{sum(1 for g in gates if g.get('conditionType') in true)}/{len(gates)}"
    else:
        gate_text = NONE
    return [pod["metadata"].get("name", ""), f"{ready}/{total}", reason, restart_text, age(pod, now),
            status.get("podIP") or NONE, spec.get("nodeName") or NONE, status.get("nominatedNodeName") or NONE,
            gate_text]


POD_COLUMNS = [
    NAME,
    Column("Ready", "The number of ready containers out of all containers."),
    Column("Status", "The pod's state as kubectl summarises it: phase, or the reason of a container."),
    Column("Restarts", "The number of container restarts, and how long ago the last one was."),
    AGE,
    Column("IP", "The pod's IP address (status.podIP).", priority=1),
    Column("Node", "The node the pod is bound to (spec.nodeName).", priority=1),
    Column("Nominated Node", "The node the scheduler nominated for a preempting pod.", priority=1),
    Column("Readiness Gates", "Readiness gates that are true, out of all.", priority=1),
]


# -- services, endpoints, slices


def _external_ip(svc: dict, wide: bool = False) -> str:
    spec = _spec(svc)
    kind = spec.get("type", "ClusterIP")
    external = list(spec.get("externalIPs") or [])
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "ExternalName":
        return spec.get("externalName") or NONE
    balancer = _status(svc).get("loadBalancer") or {}
    ingress = [i.get("ip") or i.get("hostname") or "" for i in balancer.get("ingress") or []]
    text = ",".join(filter(None, ingress))
    if text and not wide and len(text) > 16:
        text = text[:13] + "..."
    return ",".join(filter(None, [*external, text])) or "<pending>"


def _service_ports(svc: dict) -> str:
    ports = []
    for p in _spec(svc).get("ports") or []:
        protocol = p.get("protocol", "TCP")
        node_port = f":{p['nodePort']}" if p.get("nodePort") else ""
        ports.append(f"{p.get('port')}{node_port}/{protocol}")
    return ",".join(ports) or NONE


def _service_cells(svc: dict, now: datetime) -> list:
    spec = _spec(svc)
    return [svc["metadata"].get("name", ""), spec.get("type", "ClusterIP"), spec.get("clusterIP") or NONE,
            _external_ip(svc), _service_ports(svc), age(svc, now), format_labels(spec.get("selector"))]


SERVICE_COLUMNS = [
    NAME,
    Column("Type", "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName."),
    Column("Cluster-IP", "The virtual IP of the service (spec.clusterIP)."),
    Column("External-IP", "External addresses: externalIPs, load-balancer ingress or the external name."),
    Column("Port(s)", "The ports of the service, with their node ports."),
    AGE,
    Column("Selector", "The label selector of the pods behind the service.", priority=1),
]


def _endpoints_cells(ep: dict, now: datetime) -> list:
    listed = []
    for subset in ep.get("subsets") or []:
        ips = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        listed += [f"{ip}:{p.get('port')}" for p in ports for ip in ips] if ports else ips
    return [ep["metadata"].get("name", ""), first_of(listed), age(ep, now)]


def _slice_cells(s: dict, now: datetime) -> list:
    ports = [str(p["port"]) if p.get("port") is not None else UNSET for p in s.get("ports") or []]
    addresses = [a for e in s.get("endpoints") or [] for a in e.get("addresses") or []]
    return [s["metadata"].get("name", ""), s.get("addressType", ""), first_of(ports, empty=UNSET),
            first_of(addresses, empty=UNSET), age(s, now)]


# -- nodes


def _node_cells(node: dict, now: datetime) -> list:
    status, meta = _status(node), node.get("metadata", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    states = ["Unknown" if ready is None else "Ready" if ready.get("status") == "True" else "NotReady"]
    if _spec(node).get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = meta.get("labels") or {}
    prefix = "node-role.kubernetes.io/"
    roles = sorted({k[len(prefix):] for k in labels if k.startswith(prefix) and k[len(prefix):]}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        return next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == kind), None) or NONE

    return [meta.get("name", ""), ",".join(states), ",".join(roles) or NONE, age(node, now),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or UNKNOWN, info.get("kernelVersion") or UNKNOWN,
            info.get("containerRuntimeVersion") or UNKNOWN]


NODE_COLUMNS = [
    NAME,
    Column("Status", "Ready, NotReady or Unknown, and SchedulingDisabled for a cordoned node."),
    Column("Roles", "The node's roles, from its node-role.kubernetes.io/<role> labels."),
    AGE,
    Column("Version", "The kubelet's version (status.nodeInfo.kubeletVersion)."),
    Column("Internal-IP", "The node's InternalIP address.", priority=1),
    Column("External-IP", "The node's ExternalIP address.", priority=1),
    Column("OS-Image", "The operating system image of the node.", priority=1),
    Column("Kernel-Version", "The node's kernel version.", priority=1),
    Column("Container-Runtime", "The container runtime and its version.", priority=1),
]


# -- workloads


def _deployment_cells(d: dict, now: datetime) -> list:
    status, want = _status(d), _spec(d).get("replicas", 1)
    return [d["metadata"].get("name", ""), f"{status.get('readyReplicas', 0)}/{want}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(d, now),
            *_containers_and_images(d)]


def _replicaset_cells(rs: dict, now: datetime) -> list:
    status = _status(rs)
    return [rs["metadata"].get("name", ""), _spec(rs).get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(rs, now), *_containers_and_images(rs)]


def _daemonset_cells(ds: dict, now: datetime) -> list:
    s = _status(ds)
    return [ds["metadata"].get("name", ""), s.get("desiredNumberScheduled", 0), s.get("currentNumberScheduled", 0),
            s.get("numberReady", 0), s.get("updatedNumberScheduled", 0), s.get("numberAvailable", 0),
            format_labels(_template_spec(ds).get("nodeSelector")), age(ds, now), *_containers_and_images(ds)]


def _statefulset_cells(sts: dict, now: datetime) -> list:
    return [sts["metadata"].get("name", ""), f"{_status(sts).get('readyReplicas', 0)}/{_spec(sts).get('replicas', 1)}",
            age(sts, now), *_containers_and_images(sts)[:2]]


def _revision_cells(revision: dict, now: datetime) -> list:
    owner = next((r for r in revision["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
    controller = f"{owner['kind'].lower()}.{owner['apiVersion'].split('/')[0]}/{owner['name']}" if owner else NONE
    return [revision["metadata"].get("name", ""), controller, revision.get("revision", 0), age(revision, now)]


JOB_STATES = ("Complete", "Failed", "Terminating", "Suspended", "FailureTarget")


def job_state(job: dict) -> str:
    """What kubectl's STATUS column says of a Job."""
    true = {c.get("type") for c in _status(job).get("conditions") or [] if c.get("status") == "True"}
    if "deletionTimestamp" in job.get("metadata", {}):
        true.add("Terminating")
    return next((state for state in JOB_STATES if state in true), "Running")


def _job_cells(job: dict, now: datetime) -> list:
    status, spec = _status(job), _spec(job)
    succeeded, parallelism = status.get("succeeded", 0), spec.get("parallelism") or 0
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    else:
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    took = "" if start is None else human_duration(((end or now) - start).total_seconds())
    return [job["metadata"].get("name", ""), job_state(job), completions, took, age(job, now),
            *_containers_and_images(job)]


def _cronjob_cells(cj: dict, now: datetime) -> list:
    spec, status = _spec(cj), _status(cj)
    last = since(status.get("lastScheduleTime"), now) if status.get("lastScheduleTime") else NONE
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return [cj["metadata"].get("name", ""), spec.get("schedule", ""), spec.get("timeZone") or NONE,
            str(bool(spec.get("suspend"))), len(status.get("active") or []), last, age(cj, now),
            *_containers_and_images({"spec": job_spec})]


def _int_column(name: str, description: str) -> Column:
    return Column(name, description, type="integer")


# -- events, leases, namespaces, the rest


def _event_source(event: dict) -> str:
    source = event.get("source") or {}
    component, host = source.get("component", ""), source.get("host", "")
    if not component:
        component, host = event.get("reportingComponent", ""), event.get("reportingInstance", "")
    return f"{component}, {host}" if host else component


def _event_cells(event: dict, now: datetime) -> list:
    first = since(event.get("firstTimestamp") or event.get("eventTime"), now)
    last = since(event["lastTimestamp"], now) if event.get("lastTimestamp") else first
    count = event.get("count") or 1
    if event.get("series"):
        last, count = since(event["series"].get("lastObservedTime"), now), event["series"].get("count", count)
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [last, event.get("type", ""), event.get("reason", ""), target, involved.get("fieldPath", ""),
            _event_source(event), str(event.get("message", "")).strip(), first, count,
            event["metadata"].get("name", "")]


EVENT_COLUMNS = [
    Column("Last Seen", "The time since the event was last seen."),
    Column("Type", "Normal or Warning."),
    Column("Reason", "A short, machine-understandable reason for the event."),
    Column("Object", "The object the event is about, as kind/name."),
    Column("Subobject", "The part of the object (a container) the event is about.", priority=1),
    Column("Source", "The component that reported the event.", priority=1),
    Column("Message", "A human-readable description of the event."),
    Column("First Seen", "The time since the event was first seen.", priority=1),
    Column("Count", "How many times the event occurred.", type="integer", priority=1),
    Column("Name", "The event's own name.", priority=1),
]


def _name_age(obj: dict, now: datetime) -> list:
    return [obj.get("metadata", {}).get("name", ""), age(obj, now)]


PRINTERS: dict[str, tuple[list[Column], Cells]] = {
    "pods": (POD_COLUMNS, _pod_cells),
    "services": (SERVICE_COLUMNS, _service_cells),
    "nodes": (NODE_COLUMNS, _node_cells),
    "endpoints": ([NAME, Column("Endpoints", "The first addresses and ports of the endpoints."), AGE],
                  _endpoints_cells),
    "endpointslices": ([NAME, Column("AddressType", "IPv4, IPv6 or FQDN."),
                        Column("Ports", "The ports of the slice."),
                        Column("Endpoints", "The first addresses of the slice's endpoints."), AGE], _slice_cells),
    "deployments": ([NAME, Column("Ready", "Ready replicas out of the desired ones."),
                     _int_column("Up-to-date", "Replicas running the current pod template."),
                     _int_column("Available", "Replicas available to users."), AGE, *WORKLOAD_WIDE],
                    _deployment_cells),
    "replicasets": ([NAME, _int_column("Desired", "The number of replicas wanted (spec.replicas)."),
                     _int_column("Current", "The number of replicas that exist."),
                     _int_column("Ready", "The number of ready replicas."), AGE, *WORKLOAD_WIDE],
                    _replicaset_cells),
    "daemonsets": ([NAME, _int_column("Desired", "Nodes that should run the daemon pod."),
                    _int_column("Current", "Nodes that run the daemon pod."),
                    _int_column("Ready", "Nodes whose daemon pod is ready."),
                    _int_column("Up-to-date", "Nodes that run the current pod template."),
                    _int_column("Available", "Nodes whose daemon pod is available."),
                    Column("Node Selector", "The node selector of the pod template."), AGE, *WORKLOAD_WIDE],
                   _daemonset_cells),
    "statefulsets": ([NAME, Column("Ready", "Ready replicas out of the desired ones."), AGE, *WORKLOAD_WIDE[:2]],
                     _statefulset_cells),
    "poddisruptionbudgets": ([NAME, Column("Min Available", "The pods that must stay available."),
                              Column("Max Unavailable", "The pods that may be unavailable."),
                              _int_column("Allowed Disruptions", "How many pods may be evicted now."), AGE],
                             lambda pdb, now: [pdb["metadata"].get("name", ""),
                                               str(_spec(pdb).get("minAvailable", "N/A")),
                                               str(_spec(pdb).get("maxUnavailable", "N/A")),
                                               _status(pdb).get("disruptionsAllowed", 0), age(pdb, now)]),
    "priorityclasses": ([NAME, _int_column("Value", "The priority of the pods of this class."),
                         Column("Global-Default", "Whether pods without a class get this one.", type="boolean"), AGE,
                         Column("PreemptionPolicy", "Whether pods of this class preempt lower ones.")],
                        lambda pc, now: [pc["metadata"].get("name", ""), pc.get("value", 0),
                                         str(bool(pc.get("globalDefault"))).lower(), age(pc, now),
                                         pc.get("preemptionPolicy", "PreemptLowerPriority")]),
    "controllerrevisions": ([NAME, Column("Controller", "The controller of the revision, as kind/name."),
                             _int_column("Revision", "The revision's number."), AGE], _revision_cells),
    "jobs": ([NAME, Column("Status", "Status of the job."),
              Column("Completions", "The number of pods which reached phase Succeeded."),
              Column("Duration", "Time required to complete the job."), AGE, *WORKLOAD_WIDE], _job_cells),
    "cronjobs": ([NAME, Column("Schedule", "The schedule in Cron format."),
                  Column("Timezone", "The time zone name for the given schedule."),
                  Column("Suspend", "Whether subsequent executions are suspended.", type="boolean"),
                  _int_column("Active", "The number of running jobs."),
                  Column("Last Schedule", "When the job was last scheduled."), AGE, *WORKLOAD_WIDE], _cronjob_cells),
    "namespaces": ([NAME, Column("Status", "The phase of the namespace: Active or Terminating."), AGE],
                   lambda ns, now: [ns["metadata"].get("name", ""), _status(ns).get("phase", "Active"), age(ns, now)]),
    "events": (EVENT_COLUMNS, _event_cells),
    "configmaps": ([NAME, Column("Data", "The number of keys in data and binaryData."), AGE],
                   lambda cm, now: [cm["metadata"].get("name", ""),
                                    len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), age(cm, now)]),
    "secrets": ([NAME, Column("Type", "The secret's type: Opaque, kubernetes.io/tls, ..."),
                 Column("Data", "The number of keys in data."), AGE],
                lambda secret, now: [secret["metadata"].get("name", ""), secret.get("type", ""),
                                     len(secret.get("data") or {}), age(secret, now)]),
    "serviceaccounts": ([NAME, Column("Secrets", "The number of secrets the account lists."), AGE],
                        lambda sa, now: [sa["metadata"].get("name", ""), len(sa.get("secrets") or []), age(sa, now)]),
    "leases": ([NAME, Column("Holder", "The holder of the lease (spec.holderIdentity)."), AGE],
               lambda lease, now: [lease["metadata"].get("name", ""), _spec(lease).get("holderIdentity", ""),
                                   age(lease, now)]),
    "networkpolicies": ([NAME, Column("Pod-Selector", "Selects the pods to which this NetworkPolicy object applies."),
                         AGE],
                        lambda policy, now: [policy["metadata"].get("name", ""),
                                             selector_string(_spec(policy).get("podSelector")) or "<none>", age(policy, now)]),
}


def printer(res: Resource) -> tuple[list[Column], Cells]:
    return PRINTERS.get(res.plural, ([NAME, AGE], _name_age))


# -- the Table


INCLUDE_OBJECT = ("None", "Metadata", "Object")


def partial_metadata(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(
    res: Resource,
    objects: list[dict],
    list_meta: dict,
    include_object: str = "Metadata",
    now: datetime | None = None,
    headers: bool = True,
    version: str = "v1",
) -> dict:
    """A ``Table`` of the objects; ``include_object`` is TableOptions' None, Metadata or Object."""
    now = now or datetime.now(timezone.utc)
    columns, cells = printer(res)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": list_meta,
        "columnDefinitions": [c.definition() for c in columns] if headers else [],
        "rows": rows,
    }
