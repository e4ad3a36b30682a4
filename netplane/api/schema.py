"""The shape of every kind the API server serves: one field model for three users.

- strategic merge patch (patch.py) reads the list merge keys and patch strategies from it;
- server-side field validation (``fieldValidation=Strict|Warn|Ignore``) finds unknown fields with it;
- the OpenAPI v3 documents kubectl downloads (openapi.py) are generated from it.

The model is *closed* where it lists every field the real v1 type has (ObjectMeta, PodSpec,
Container, ServiceSpec, the workload specs, ...) and *open* where it does not try (statuses,
probes, affinity, volume sources, ...). An unknown field is only ever reported inside a closed
object, so a gap in this model lets a field through; it never rejects a valid object.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Node:
    """One schema node: type is object, array, map, string, integer, number, boolean, int-or-string
    or any. An object's ``fields`` are its known fields; ``open`` objects accept others as well."""

    type: str
    fields: Mapping[str, Node] = field(default_factory=lambda: MappingProxyType({}))
    open: bool = False
    item: Node | None = None  # array items, map values
    merge_key: str | None = None  # strategic merge: lists of objects merged by this field
    strategy: str | None = None  # strategic merge: "merge", "retainKeys", "merge,retainKeys"
    format: str | None = None
    map_keys: tuple[str, ...] = ()  # a keyed list's key fields when more than its merge key (server-side apply)

    def child(self, name: str) -> Node:
        """The node of a field of this object (``ANY`` when unknown)."""
        return self.fields.get(name, ANY)


ANY = Node("any")
STR = Node("string")
INT = Node("integer")
BOOL = Node("boolean")
NUM = Node("number")
TIME = Node("string", format="date-time")
INT_OR_STR = Node("int-or-string")
QUANTITY = Node("int-or-string", format="quantity")
STR_MAP = Node("map", item=STR)
STR_LIST = Node("array", item=STR)


def obj(**fields: Node) -> Node:
    """A closed object: exactly these fields."""
    return Node("object", MappingProxyType(fields))


def open_obj(**fields: Node) -> Node:
    """An object with these known fields and any others."""
    return Node("object", MappingProxyType(fields), open=True)


def arr(item: Node, merge_key: str | None = None, strategy: str | None = None, keys: tuple[str, ...] = ()) -> Node:
    if merge_key and not strategy:
        strategy = "merge"
    return Node("array", item=item, merge_key=merge_key, strategy=strategy, map_keys=keys)


def with_strategy(node: Node, strategy: str) -> Node:
    return Node(node.type, node.fields, node.open, node.item, node.merge_key, strategy, node.format, node.map_keys)


# -- shared types

OWNER_REFERENCE = obj(apiVersion=STR, kind=STR, name=STR, uid=STR, controller=BOOL, blockOwnerDeletion=BOOL)
OBJECT_REFERENCE = obj(kind=STR, namespace=STR, name=STR, uid=STR, apiVersion=STR, resourceVersion=STR, fieldPath=STR)
OBJECT_META = obj(
    name=STR, generateName=STR, namespace=STR, selfLink=STR, uid=STR, resourceVersion=STR,
    generation=INT, creationTimestamp=TIME, deletionTimestamp=TIME, deletionGracePeriodSeconds=INT,
    labels=STR_MAP, annotations=STR_MAP,
    ownerReferences=arr(OWNER_REFERENCE, "uid"),
    finalizers=arr(STR, strategy="merge"),
    managedFields=arr(ANY),
)
LABEL_SELECTOR = obj(
    matchLabels=STR_MAP,
    matchExpressions=arr(obj(key=STR, operator=STR, values=STR_LIST)),
)
CONDITIONS = arr(open_obj(type=STR, status=STR, reason=STR, message=STR), "type")

_CONTAINER_FIELDS = dict(
    name=STR, image=STR, command=STR_LIST, args=STR_LIST, workingDir=STR,
    ports=arr(obj(name=STR, hostPort=INT, containerPort=INT, protocol=STR, hostIP=STR), "containerPort",
              keys=("containerPort", "protocol")),
    envFrom=arr(ANY),
    env=arr(obj(name=STR, value=STR, valueFrom=ANY), "name"),
    resources=ANY, resizePolicy=arr(ANY), restartPolicy=STR,
    volumeMounts=arr(obj(name=STR, readOnly=BOOL, recursiveReadOnly=STR, mountPath=STR, subPath=STR,
                         mountPropagation=STR, subPathExpr=STR), "mountPath"),
    volumeDevices=arr(obj(name=STR, devicePath=STR), "devicePath"),
    livenessProbe=ANY, readinessProbe=ANY, startupProbe=ANY, lifecycle=ANY,
    terminationMessagePath=STR, terminationMessagePolicy=STR, imagePullPolicy=STR, securityContext=ANY,
    stdin=BOOL, stdinOnce=BOOL, tty=BOOL,
)
CONTAINER = obj(**_CONTAINER_FIELDS)
EPHEMERAL_CONTAINER = obj(**_CONTAINER_FIELDS, targetContainerName=STR)
_VOLUME_SOURCES = (
    "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs "
    "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile configMap "
    "vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume scaleIO storageos "
    "csi ephemeral image"
).split()
VOLUME = obj(name=STR, **{source: ANY for source in _VOLUME_SOURCES})
POD_SPEC = obj(
    volumes=arr(VOLUME, "name", "merge,retainKeys"),
    initContainers=arr(CONTAINER, "name"),
    containers=arr(CONTAINER, "name"),
    ephemeralContainers=arr(EPHEMERAL_CONTAINER, "name"),
    restartPolicy=STR, terminationGracePeriodSeconds=INT, activeDeadlineSeconds=INT, dnsPolicy=STR,
    nodeSelector=STR_MAP, serviceAccountName=STR, serviceAccount=STR, automountServiceAccountToken=BOOL,
    nodeName=STR, hostNetwork=BOOL, hostPID=BOOL, hostIPC=BOOL, shareProcessNamespace=BOOL,
    securityContext=ANY, imagePullSecrets=arr(obj(name=STR)), hostname=STR, subdomain=STR,
    affinity=ANY, schedulerName=STR, tolerations=arr(ANY),
    hostAliases=arr(obj(ip=STR, hostnames=STR_LIST), "ip"),
    priorityClassName=STR, priority=INT, dnsConfig=ANY, readinessGates=arr(obj(conditionType=STR)),
    runtimeClassName=STR, enableServiceLinks=BOOL, preemptionPolicy=STR, overhead=Node("map", item=QUANTITY),
    topologySpreadConstraints=arr(ANY, "topologyKey"), setHostnameAsFQDN=BOOL, os=obj(name=STR),
    hostUsers=BOOL, schedulingGates=arr(obj(name=STR), "name"), resourceClaims=arr(ANY, "name"),
    resources=ANY,
)
POD_TEMPLATE = obj(metadata=OBJECT_META, spec=POD_SPEC)
POD_STATUS = open_obj(
    conditions=CONDITIONS, podIPs=arr(open_obj(ip=STR), "ip"), hostIPs=arr(open_obj(ip=STR), "ip"),
    resourceClaimStatuses=arr(ANY, "name"),
)
SERVICE_SPEC = obj(
    ports=arr(obj(name=STR, protocol=STR, appProtocol=STR, port=INT, targetPort=INT_OR_STR, nodePort=INT), "port",
              keys=("port", "protocol")),
    selector=STR_MAP, clusterIP=STR, clusterIPs=STR_LIST, type=STR, externalIPs=STR_LIST,
    sessionAffinity=STR, loadBalancerIP=STR, loadBalancerSourceRanges=STR_LIST, externalName=STR,
    externalTrafficPolicy=STR, healthCheckNodePort=INT, publishNotReadyAddresses=BOOL,
    sessionAffinityConfig=ANY, ipFamilies=STR_LIST, ipFamilyPolicy=STR, allocateLoadBalancerNodePorts=BOOL,
    loadBalancerClass=STR, internalTrafficPolicy=STR, trafficDistribution=STR,
)
NODE_SPEC = obj(
    podCIDR=STR, podCIDRs=arr(STR, strategy="merge"), providerID=STR, unschedulable=BOOL, taints=arr(ANY),
    configSource=ANY, externalID=STR,
)
NODE_STATUS = open_obj(conditions=CONDITIONS, addresses=arr(open_obj(type=STR, address=STR), "type"))
ENDPOINT = obj(
    addresses=STR_LIST, conditions=obj(ready=BOOL, serving=BOOL, terminating=BOOL), hostname=STR,
    targetRef=ANY, deprecatedTopology=STR_MAP, nodeName=STR, zone=STR, hints=ANY,
)
DEPLOYMENT_SPEC = obj(
    replicas=INT, selector=LABEL_SELECTOR, template=POD_TEMPLATE,
    strategy=with_strategy(open_obj(type=STR, rollingUpdate=ANY), "retainKeys"),
    minReadySeconds=INT, revisionHistoryLimit=INT, paused=BOOL, progressDeadlineSeconds=INT,
)
REPLICA_SET_SPEC = obj(replicas=INT, minReadySeconds=INT, selector=LABEL_SELECTOR, template=POD_TEMPLATE)
DAEMON_SET_SPEC = obj(
    selector=LABEL_SELECTOR, template=POD_TEMPLATE,
    updateStrategy=with_strategy(open_obj(type=STR, rollingUpdate=ANY), "retainKeys"),
    minReadySeconds=INT, revisionHistoryLimit=INT,
)
STATEFUL_SET_SPEC = obj(
    replicas=INT, selector=LABEL_SELECTOR, template=POD_TEMPLATE, volumeClaimTemplates=arr(ANY), serviceName=STR,
    podManagementPolicy=STR, updateStrategy=with_strategy(open_obj(type=STR, rollingUpdate=ANY), "retainKeys"),
    revisionHistoryLimit=INT, minReadySeconds=INT, persistentVolumeClaimRetentionPolicy=ANY, ordinals=obj(start=INT),
)
WORKLOAD_STATUS = open_obj(conditions=CONDITIONS)
POD_FAILURE_POLICY = obj(rules=arr(obj(
    action=STR, onExitCodes=obj(containerName=STR, operator=STR, values=arr(INT)),
    onPodConditions=arr(obj(type=STR, status=STR)),
)))
JOB_SPEC = obj(
    parallelism=INT, completions=INT, activeDeadlineSeconds=INT, podFailurePolicy=POD_FAILURE_POLICY,
    successPolicy=ANY, backoffLimit=INT, backoffLimitPerIndex=INT, maxFailedIndexes=INT, selector=LABEL_SELECTOR,
    manualSelector=BOOL, template=POD_TEMPLATE, ttlSecondsAfterFinished=INT, completionMode=STR, suspend=BOOL,
    podReplacementPolicy=STR, managedBy=STR,
)
JOB_STATUS = open_obj(conditions=CONDITIONS)
CRON_JOB_SPEC = obj(
    schedule=STR, timeZone=STR, startingDeadlineSeconds=INT, concurrencyPolicy=STR, suspend=BOOL,
    jobTemplate=obj(metadata=OBJECT_META, spec=JOB_SPEC), successfulJobsHistoryLimit=INT, failedJobsHistoryLimit=INT,
)
CRON_JOB_STATUS = open_obj(active=arr(OBJECT_REFERENCE))


POLICY_PORT = obj(protocol=STR, port=INT_OR_STR, endPort=INT)
POLICY_PEER = obj(podSelector=LABEL_SELECTOR, namespaceSelector=LABEL_SELECTOR,
                  ipBlock=obj(cidr=STR, **{"except": STR_LIST}))


def _kind(**fields: Node) -> Node:
    return obj(apiVersion=STR, kind=STR, metadata=OBJECT_META, **fields)


KINDS: Mapping[str, Node] = MappingProxyType({
    "Namespace": _kind(spec=obj(finalizers=STR_LIST), status=open_obj(conditions=CONDITIONS)),
    "Node": _kind(spec=NODE_SPEC, status=NODE_STATUS),
    "Pod": _kind(spec=POD_SPEC, status=POD_STATUS),
    "Service": _kind(spec=SERVICE_SPEC, status=open_obj(conditions=CONDITIONS)),
    "Endpoints": _kind(subsets=arr(ANY)),
    "Event": _kind(
        involvedObject=ANY, reason=STR, message=STR, source=ANY, firstTimestamp=TIME, lastTimestamp=TIME,
        count=INT, type=STR, eventTime=Node("string", format="date-time"), series=ANY, action=STR,
        related=ANY, reportingComponent=STR, reportingInstance=STR,
    ),
    "EventsV1Event": _kind(
        regarding=ANY, reason=STR, note=STR, deprecatedSource=ANY, deprecatedFirstTimestamp=TIME,
        deprecatedLastTimestamp=TIME, deprecatedCount=INT, type=STR, eventTime=TIME, series=ANY, action=STR,
        related=ANY, reportingController=STR, reportingInstance=STR,
    ),
    "EndpointSlice": _kind(
        addressType=STR, endpoints=arr(ENDPOINT),
        ports=arr(obj(name=STR, protocol=STR, port=INT, appProtocol=STR)),
    ),
    "ConfigMap": _kind(data=STR_MAP, binaryData=STR_MAP, immutable=BOOL),
    "Secret": _kind(data=STR_MAP, stringData=STR_MAP, type=STR, immutable=BOOL),
    "ServiceAccount": _kind(secrets=arr(OBJECT_REFERENCE, "name"), imagePullSecrets=arr(obj(name=STR)),
                            automountServiceAccountToken=BOOL),
    "Deployment": _kind(spec=DEPLOYMENT_SPEC, status=WORKLOAD_STATUS),
    "ReplicaSet": _kind(spec=REPLICA_SET_SPEC, status=WORKLOAD_STATUS),
    "DaemonSet": _kind(spec=DAEMON_SET_SPEC, status=WORKLOAD_STATUS),
    "StatefulSet": _kind(spec=STATEFUL_SET_SPEC, status=WORKLOAD_STATUS),
    "ControllerRevision": _kind(data=ANY, revision=INT),
    "Job": _kind(spec=JOB_SPEC, status=JOB_STATUS),
    "CronJob": _kind(spec=CRON_JOB_SPEC, status=CRON_JOB_STATUS),
    "Lease": _kind(spec=obj(
        holderIdentity=STR, leaseDurationSeconds=INT, acquireTime=TIME, renewTime=TIME, leaseTransitions=INT,
        strategy=STR, preferredHolder=STR,
    )),
    "PodDisruptionBudget": _kind(
        spec=obj(minAvailable=INT_OR_STR, maxUnavailable=INT_OR_STR, selector=LABEL_SELECTOR,
                 unhealthyPodEvictionPolicy=STR),
        status=open_obj(conditions=CONDITIONS, disruptedPods=Node("map", item=TIME)),
    ),
    "PriorityClass": _kind(value=INT, globalDefault=BOOL, description=STR, preemptionPolicy=STR),
    "Scale": _kind(spec=obj(replicas=INT), status=obj(replicas=INT, selector=STR)),
    "NetworkPolicy": _kind(spec=obj(
        podSelector=LABEL_SELECTOR, policyTypes=STR_LIST,
        ingress=arr(obj(ports=arr(POLICY_PORT), **{"from": arr(POLICY_PEER)})),
        egress=arr(obj(ports=arr(POLICY_PORT), to=arr(POLICY_PEER))),
    )),
})


def for_kind(kind: str) -> Node:
    return KINDS.get(kind, ANY)


# -- unknown fields

DIRECTIVE_PREFIXES = ("$setElementOrder/", "$deleteFromPrimitiveList/", "$retainKeys", "$patch")


def unknown_fields(node: Node, value: Any, path: str = "") -> Iterator[str]:
    """The paths (``spec.containers[0].imagee``) of fields a closed object does not have."""
    if node.type == "object" and isinstance(value, dict):
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if key in node.fields:
                yield from unknown_fields(node.fields[key], child, where)
            elif not node.open:
                yield where
    elif node.type == "array" and isinstance(value, list) and node.item is not None:
        for i, child in enumerate(value):
            yield from unknown_fields(node.item, child, f"{path}[{i}]")
    elif node.type == "map" and isinstance(value, dict) and node.item is not None:
        for key, child in value.items():
            yield from unknown_fields(node.item, child, f"{path}.{key}")


def prune(node: Node, value: Any, paths: set[str], path: str = "") -> Any:
    """``value`` without the fields at ``paths`` (as found by unknown_fields), as a Go decoder drops them."""
    if not paths:
        return value
    if isinstance(value, dict) and node.type in ("object", "map"):
        out = {}
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if where not in paths:
                out[key] = prune((node.item if node.type == "map" else node.child(key)) or ANY, child, paths, where)
        return out
    if isinstance(value, list) and node.type == "array" and node.item is not None:
        return [prune(node.item, child, paths, f"{path}[{i}]") for i, child in enumerate(value)]
    return value
