"""The defaults kube-apiserver v1.32 gives a written object (pkg/apis/core/v1/defaults.go and
apps/v1/defaults.go, plus what its default admission plugins add: a pod's priority and its
not-ready/unreachable tolerations), applied in place, on create and on every update, so that what a
client reads back is what a cluster would show. Each default fills only what is missing, and a
malformed field is left for validation to name.
"""
from __future__ import annotations

from typing import Any

from netplane.api.resources import Resource

TOLERATION_SECONDS = 300  # DefaultTolerationSeconds admission: --default-not-ready/unreachable-toleration-seconds
NODE_PROBLEM_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _dict(parent: dict, key: str) -> dict | None:
    """parent[key] when it is an object, made empty when missing; None when it is something else."""
    value = parent.setdefault(key, {})
    return value if isinstance(value, dict) else None


def _objects(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _pull_policy(image: Any) -> str:
    """Always for an image without a tag or with ``latest`` (and no digest), else IfNotPresent."""
    if not isinstance(image, str) or "@" in image:
        return "IfNotPresent"
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        probe.setdefault(key, value)
    action = probe.get("httpGet")
    if isinstance(action, dict):
        action.setdefault("path", "/")
        action.setdefault("scheme", "HTTP")


def _container(c: dict) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("imagePullPolicy", _pull_policy(c.get("image")))
    c.setdefault("resources", {})
    for port in _objects(c.get("ports")):
        port.setdefault("protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(key))
    for env in _objects(c.get("env")):
        field_ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env.get("valueFrom"), dict) else None
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and its containers'."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _objects(spec.get(key)):
            _container(c)


def _admitted_pod(spec: dict) -> None:
    """What the Priority and DefaultTolerationSeconds admission plugins add to a new pod."""
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if not isinstance(tolerations, list):
        return
    for key in NODE_PROBLEM_TAINTS:
        if not any(_tolerates(t, key) for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": TOLERATION_SECONDS})


def _tolerates(toleration: Any, key: str) -> bool:
    """Whether a toleration covers the NoExecute taint `key` (its key, or an empty key with Exists)."""
    if not isinstance(toleration, dict) or toleration.get("effect") not in (None, "", "NoExecute"):
        return False
    return toleration.get("key") == key or (not toleration.get("key") and toleration.get("operator") == "Exists")


def qos_class(spec: dict) -> str:
    """The pod's QoS class, as the API server sets status.qosClass on create."""
    containers = _objects(spec.get("containers")) + _objects(spec.get("initContainers"))
    requests = [(c.get("resources") or {}).get("requests") or {} for c in containers]
    limits = [(c.get("resources") or {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(set(lim) >= {"cpu", "memory"} and all(req.get(k, lim[k]) == lim[k] for k in ("cpu", "memory"))
                     for req, lim in zip(requests, limits))
    return "Guaranteed" if guaranteed else "Burstable"


def _template(spec: dict) -> None:
    template = _dict(spec, "template")
    if template is not None:
        meta = template.get("metadata")
        if isinstance(meta, dict) and "creationTimestamp" in meta and meta["creationTimestamp"] is None:
            del meta["creationTimestamp"]  # Go clients send the zero time as null: the same template
        inner = _dict(template, "spec")
        if inner is not None:
            pod_spec(inner)


def _rolling(spec: dict, key: str, max_unavailable: int | str, max_surge: int | str) -> None:
    """A strategy of type RollingUpdate by default, with its rollingUpdate's defaults."""
    strategy = _dict(spec, key)
    if strategy is not None:
        strategy.setdefault("type", "RollingUpdate")
        rolling = _dict(strategy, "rollingUpdate") if strategy["type"] == "RollingUpdate" else None
        if rolling is not None:
            rolling.setdefault("maxUnavailable", max_unavailable)
            rolling.setdefault("maxSurge", max_surge)


def _deployment(spec: dict) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _rolling(spec, "strategy", "25%", "25%")
    _template(spec)


def _daemonset(spec: dict) -> None:
    spec.setdefault("revisionHistoryLimit", 10)
    _rolling(spec, "updateStrategy", 1, 0)
    _template(spec)


def _replicaset(spec: dict) -> None:
    spec.setdefault("replicas", 1)
    _template(spec)


def _stateful_set(spec: dict) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = _dict(spec, "updateStrategy")
    if strategy is not None:
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            strategy.setdefault("rollingUpdate", {})
        rolling = strategy.get("rollingUpdate")
        if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
            rolling.setdefault("partition", 0)
    retention = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    if retention is not None:
        retention.setdefault("whenDeleted", "Retain")
        retention.setdefault("whenScaled", "Retain")
    _template(spec)


def job_spec(spec: dict) -> None:
    """SetDefaults_Job's spec part: both completions and parallelism 1 when neither is given, a
    backoffLimit of 6, NonIndexed, not suspended, and the pod replacement policy."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    failure_policy = spec.get("podFailurePolicy")
    for rule in _objects((failure_policy or {}).get("rules") if isinstance(failure_policy, dict) else None):
        for pattern in _objects(rule.get("onPodConditions")):
            pattern.setdefault("status", "True")
    spec.setdefault("podReplacementPolicy", "Failed" if failure_policy else "TerminatingOrFailed")
    _template(spec)


def _cron_job(spec: dict) -> None:
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = _dict(spec, "jobTemplate")
    inner = _dict(job_template, "spec") if job_template is not None else None
    if inner is not None:
        _template(inner)


def _service(spec: dict) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        config = _dict(spec, "sessionAffinityConfig")
        client_ip = _dict(config, "clientIP") if config is not None else None
        if client_ip is not None:
            client_ip.setdefault("timeoutSeconds", 10800)
    for port in _objects(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _network_policy(spec: dict) -> None:
    """SetDefaults_NetworkPolicy: policyTypes from the rules present (Ingress always, Egress when
    there are egress rules); SetDefaults_NetworkPolicyPort: protocol TCP."""
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _pod(spec: dict) -> None:
    """SetDefaults_Pod (a pod's, not a template's): a container's requests default to its limits."""
    pod_spec(spec)
    for key in ("initContainers", "containers"):
        for c in _objects(spec.get(key)):
            resources = c.get("resources")
            limits = resources.get("limits") if isinstance(resources, dict) else None
            if isinstance(limits, dict) and limits:
                requests = _dict(resources, "requests")
                if requests is not None:
                    for name, value in limits.items():
                        requests.setdefault(name, value)


SPEC_DEFAULTS = {"Pod": _pod, "Deployment": _deployment, "ReplicaSet": _replicaset, "DaemonSet": _daemonset,
                 "StatefulSet": _stateful_set, "Job": job_spec, "CronJob": _cron_job, "Service": _service,
                 "NetworkPolicy": _network_policy}


def apply(res: Resource, obj: dict) -> None:
    """The defaults of every write (in place)."""
    meta = obj.get("metadata")
    if res.kind == "Namespace" and isinstance(meta, dict) and meta.get("name"):
        labels = _dict(meta, "labels")
        if labels is not None:  # NamespaceDefaultLabelName: always the namespace's own name
            labels["kubernetes.io/metadata.name"] = meta["name"]
        spec = _dict(obj, "spec")
        if spec is not None:
            spec.setdefault("finalizers", ["kubernetes"])
    if res.kind == "Secret":
        obj["type"] = obj.get("type") or "Opaque"
    if res.kind == "PriorityClass":
        obj["preemptionPolicy"] = obj.get("preemptionPolicy") or "PreemptLowerPriority"
    if res.kind == "Job" and isinstance(meta, dict) and not meta.get("labels"):
        template_labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
        if isinstance(template_labels, dict) and template_labels:  # SetDefaults_Job: the template's labels
            meta["labels"] = dict(template_labels)
    fill = SPEC_DEFAULTS.get(res.kind)
    spec = obj.get("spec")
    if fill is not None and isinstance(spec, dict):
        fill(spec)


def apply_on_create(res: Resource, obj: dict) -> None:
    """apply's, and what only a new object gets: a namespace's and a pod's phase, and a pod's
    priority and tolerations (admission's) and QoS class."""
    apply(res, obj)
    spec = obj.get("spec")
    status = _dict(obj, "status") if res.kind in ("Pod", "Namespace") else None
    if res.kind == "Namespace" and status is not None:
        status.setdefault("phase", "Active")
    if res.kind == "Pod" and isinstance(spec, dict):
        _admitted_pod(spec)
        if status is not None:
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", qos_class(spec))
