"""Request bodies in Kubernetes protobuf, for the kubectl commands that send nothing else.

client-go's typed clients (kubectl ``create namespace|service|deployment|job|cronjob``, ``drain``'s evictions) POST
``application/vnd.kubernetes.protobuf`` and, unlike for CBOR, do not fall back to JSON on a 415.
They accept JSON answers, so only *decoding* is needed, and only for what those generators write.

The wire format: the magic ``k8s\\x00``, then a ``runtime.Unknown`` (1: typeMeta {1: apiVersion,
2: kind}, 2: raw, 3: contentEncoding, 4: contentType) whose ``raw`` is the object's message. The
field numbers below are those of k8s.io/api's generated.proto files (the wire contract, v0.32); a
field outside the table is refused (400) rather than silently lost. The workload kinds (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) have every field, pod template included:
``kubectl create job --from=cronjob/x`` sends a copy of whatever the stored CronJob holds.

Decoding gives what Go's JSON encoder would: zero scalars are dropped (omitempty) except in
pointer fields and fields without omitempty (``replicas: 0`` stays), empty messages stay ``{}``,
a zero Time is dropped, an inlined struct (``Volume``'s ``VolumeSource``) is merged into its parent.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, NamedTuple

from netplane.api.errors import ApiError, bad_request
from netplane.api.times import time_text

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class Field(NamedTuple):
    name: str  # "" for a message Go's JSON inlines (``json:",inline"``): its fields go into the parent
    type: str  # string bytes base64 int bool time intstr quantity, map:<value type>, or a message name
    repeated: bool = False
    keep_zero: bool = False  # a pointer in Go or no omitempty: present means set, even to 0, "" or false


def _f(name: str, type_: str = "string", repeated: bool = False, keep_zero: bool = False) -> Field:
    return Field(name, type_, repeated, keep_zero)


CONTAINER_FIELDS: Mapping[int, Field] = {
    1: _f("name", keep_zero=True), 2: _f("image"), 3: _f("command", repeated=True), 4: _f("args", repeated=True),
    5: _f("workingDir"), 6: _f("ports", "ContainerPort", True), 19: _f("envFrom", "EnvFromSource", True),
    7: _f("env", "EnvVar", True), 8: _f("resources", "ResourceRequirements"),
    23: _f("resizePolicy", "ContainerResizePolicy", True), 24: _f("restartPolicy", keep_zero=True),
    9: _f("volumeMounts", "VolumeMount", True), 21: _f("volumeDevices", "VolumeDevice", True),
    10: _f("livenessProbe", "Probe"), 11: _f("readinessProbe", "Probe"), 22: _f("startupProbe", "Probe"),
    12: _f("lifecycle", "Lifecycle"), 13: _f("terminationMessagePath"), 20: _f("terminationMessagePolicy"),
    14: _f("imagePullPolicy"), 15: _f("securityContext", "SecurityContext"), 16: _f("stdin", "bool"),
    17: _f("stdinOnce", "bool"), 18: _f("tty", "bool"),
}


MESSAGES: Mapping[str, Mapping[int, Field]] = {
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "Unknown": {1: _f("typeMeta", "TypeMeta"), 2: _f("raw", "bytes"), 3: _f("contentEncoding"), 4: _f("contentType")},
    "ObjectMeta": {
        1: _f("name"), 2: _f("generateName"), 3: _f("namespace"), 4: _f("selfLink"), 5: _f("uid"),
        6: _f("resourceVersion"), 7: _f("generation", "int"), 8: _f("creationTimestamp", "time"),
        9: _f("deletionTimestamp", "time"), 10: _f("deletionGracePeriodSeconds", "int", keep_zero=True),
        11: _f("labels", "map:string"), 12: _f("annotations", "map:string"),
        13: _f("ownerReferences", "OwnerReference", True), 14: _f("finalizers", repeated=True),
    },
    "OwnerReference": {5: _f("apiVersion"), 1: _f("kind"), 3: _f("name"), 4: _f("uid"),
                       6: _f("controller", "bool", keep_zero=True),
                       7: _f("blockOwnerDeletion", "bool", keep_zero=True)},
    "LabelSelector": {1: _f("matchLabels", "map:string"), 2: _f("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: _f("key"), 2: _f("operator"), 3: _f("values", repeated=True)},
    # core/v1
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec"), 3: _f("status", "NamespaceStatus")},
    "NamespaceSpec": {1: _f("finalizers", repeated=True)},
    "NamespaceStatus": {1: _f("phase")},
    "Service": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "ServiceSpec"), 3: _f("status", "ServiceStatus")},
    "ServiceSpec": {
        1: _f("ports", "ServicePort", True), 2: _f("selector", "map:string"), 3: _f("clusterIP"),
        18: _f("clusterIPs", repeated=True), 4: _f("type"), 5: _f("externalIPs", repeated=True),
        7: _f("sessionAffinity"), 8: _f("loadBalancerIP"), 9: _f("loadBalancerSourceRanges", repeated=True),
        10: _f("externalName"), 11: _f("externalTrafficPolicy"), 12: _f("healthCheckNodePort", "int"),
        13: _f("publishNotReadyAddresses", "bool"), 19: _f("ipFamilies", repeated=True),
        17: _f("ipFamilyPolicy", keep_zero=True), 20: _f("allocateLoadBalancerNodePorts", "bool", keep_zero=True),
        21: _f("loadBalancerClass", keep_zero=True), 22: _f("internalTrafficPolicy", keep_zero=True),
        23: _f("trafficDistribution", keep_zero=True),
    },
    "ServicePort": {1: _f("name"), 2: _f("protocol"), 6: _f("appProtocol", keep_zero=True), 3: _f("port", "int"),
                    4: _f("targetPort", "intstr"), 5: _f("nodePort", "int")},
    "ServiceStatus": {1: _f("loadBalancer", "LoadBalancerStatus")},
    "LoadBalancerStatus": {1: _f("ingress", "LoadBalancerIngress", True)},
    "LoadBalancerIngress": {1: _f("ip"), 2: _f("hostname"), 3: _f("ipMode", keep_zero=True)},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        1: _f("volumes", "Volume", True), 20: _f("initContainers", "Container", True),
        2: _f("containers", "Container", True), 34: _f("ephemeralContainers", "EphemeralContainer", True),
        3: _f("restartPolicy"), 4: _f("terminationGracePeriodSeconds", "int", keep_zero=True),
        5: _f("activeDeadlineSeconds", "int", keep_zero=True), 6: _f("dnsPolicy"), 7: _f("nodeSelector", "map:string"),
        8: _f("serviceAccountName"), 9: _f("serviceAccount"),
        21: _f("automountServiceAccountToken", "bool", keep_zero=True), 10: _f("nodeName"),
        11: _f("hostNetwork", "bool"), 12: _f("hostPID", "bool"), 13: _f("hostIPC", "bool"),
        27: _f("shareProcessNamespace", "bool", keep_zero=True), 14: _f("securityContext", "PodSecurityContext"),
        15: _f("imagePullSecrets", "LocalObjectReference", True), 16: _f("hostname"), 17: _f("subdomain"),
        18: _f("affinity", "Affinity"), 19: _f("schedulerName"), 22: _f("tolerations", "Toleration", True),
        23: _f("hostAliases", "HostAlias", True), 24: _f("priorityClassName"),
        25: _f("priority", "int", keep_zero=True), 26: _f("dnsConfig", "PodDNSConfig"),
        28: _f("readinessGates", "PodReadinessGate", True), 29: _f("runtimeClassName", keep_zero=True),
        30: _f("enableServiceLinks", "bool", keep_zero=True), 31: _f("preemptionPolicy", keep_zero=True),
        32: _f("overhead", "map:quantity"), 33: _f("topologySpreadConstraints", "TopologySpreadConstraint", True),
        35: _f("setHostnameAsFQDN", "bool", keep_zero=True), 36: _f("os", "PodOS"),
        37: _f("hostUsers", "bool", keep_zero=True), 38: _f("schedulingGates", "PodSchedulingGate", True),
        39: _f("resourceClaims", "PodResourceClaim", True), 40: _f("resources", "ResourceRequirements"),
    },
    "Volume": {1: _f("name", keep_zero=True), 2: _f("", "VolumeSource")},
    "VolumeSource": {
        1: _f("hostPath", "HostPathVolumeSource"), 2: _f("emptyDir", "EmptyDirVolumeSource"),
        3: _f("gcePersistentDisk", "GCEPersistentDiskVolumeSource"),
        4: _f("awsElasticBlockStore", "AWSElasticBlockStoreVolumeSource"), 5: _f("gitRepo", "GitRepoVolumeSource"),
        6: _f("secret", "SecretVolumeSource"), 7: _f("nfs", "NFSVolumeSource"), 8: _f("iscsi", "ISCSIVolumeSource"),
        9: _f("glusterfs", "GlusterfsVolumeSource"),
        10: _f("persistentVolumeClaim", "PersistentVolumeClaimVolumeSource"), 11: _f("rbd", "RBDVolumeSource"),
        12: _f("flexVolume", "FlexVolumeSource"), 13: _f("cinder", "CinderVolumeSource"),
        14: _f("cephfs", "CephFSVolumeSource"), 15: _f("flocker", "FlockerVolumeSource"),
        16: _f("downwardAPI", "DownwardAPIVolumeSource"), 17: _f("fc", "FCVolumeSource"),
        18: _f("azureFile", "AzureFileVolumeSource"), 19: _f("configMap", "ConfigMapVolumeSource"),
        20: _f("vsphereVolume", "VsphereVirtualDiskVolumeSource"), 21: _f("quobyte", "QuobyteVolumeSource"),
        22: _f("azureDisk", "AzureDiskVolumeSource"),
        23: _f("photonPersistentDisk", "PhotonPersistentDiskVolumeSource"),
        26: _f("projected", "ProjectedVolumeSource"), 24: _f("portworxVolume", "PortworxVolumeSource"),
        25: _f("scaleIO", "ScaleIOVolumeSource"), 27: _f("storageos", "StorageOSVolumeSource"),
        28: _f("csi", "CSIVolumeSource"), 29: _f("ephemeral", "EphemeralVolumeSource"),
        30: _f("image", "ImageVolumeSource"),
    },
    "HostPathVolumeSource": {1: _f("path", keep_zero=True), 2: _f("type", keep_zero=True)},
    "EmptyDirVolumeSource": {1: _f("medium"), 2: _f("sizeLimit", "quantity", keep_zero=True)},
    "GCEPersistentDiskVolumeSource": {
        1: _f("pdName", keep_zero=True), 2: _f("fsType"), 3: _f("partition", "int"), 4: _f("readOnly", "bool"),
    },
    "AWSElasticBlockStoreVolumeSource": {
        1: _f("volumeID", keep_zero=True), 2: _f("fsType"), 3: _f("partition", "int"), 4: _f("readOnly", "bool"),
    },
    "GitRepoVolumeSource": {1: _f("repository", keep_zero=True), 2: _f("revision"), 3: _f("directory")},
    "SecretVolumeSource": {
        1: _f("secretName"), 2: _f("items", "KeyToPath", True), 3: _f("defaultMode", "int", keep_zero=True),
        4: _f("optional", "bool", keep_zero=True),
    },
    "KeyToPath": {1: _f("key", keep_zero=True), 2: _f("path", keep_zero=True), 3: _f("mode", "int", keep_zero=True)},
    "NFSVolumeSource": {1: _f("server", keep_zero=True), 2: _f("path", keep_zero=True), 3: _f("readOnly", "bool")},
    "ISCSIVolumeSource": {
        1: _f("targetPortal", keep_zero=True), 2: _f("iqn", keep_zero=True), 3: _f("lun", "int", keep_zero=True),
        4: _f("iscsiInterface"), 5: _f("fsType"), 6: _f("readOnly", "bool"), 7: _f("portals", repeated=True),
        8: _f("chapAuthDiscovery", "bool"), 11: _f("chapAuthSession", "bool"),
        10: _f("secretRef", "LocalObjectReference"), 12: _f("initiatorName", keep_zero=True),
    },
    "LocalObjectReference": {1: _f("name")},
    "GlusterfsVolumeSource": {
        1: _f("endpoints", keep_zero=True), 2: _f("path", keep_zero=True), 3: _f("readOnly", "bool"),
    },
    "PersistentVolumeClaimVolumeSource": {1: _f("claimName", keep_zero=True), 2: _f("readOnly", "bool")},
    "RBDVolumeSource": {
        1: _f("monitors", repeated=True), 2: _f("image", keep_zero=True), 3: _f("fsType"), 4: _f("pool"), 5: _f("user"),
        6: _f("keyring"), 7: _f("secretRef", "LocalObjectReference"), 8: _f("readOnly", "bool"),
    },
    "FlexVolumeSource": {
        1: _f("driver", keep_zero=True), 2: _f("fsType"), 3: _f("secretRef", "LocalObjectReference"),
        4: _f("readOnly", "bool"), 5: _f("options", "map:string"),
    },
    "CinderVolumeSource": {
        1: _f("volumeID", keep_zero=True), 2: _f("fsType"), 3: _f("readOnly", "bool"),
        4: _f("secretRef", "LocalObjectReference"),
    },
    "CephFSVolumeSource": {
        1: _f("monitors", repeated=True), 2: _f("path"), 3: _f("user"), 4: _f("secretFile"),
        5: _f("secretRef", "LocalObjectReference"), 6: _f("readOnly", "bool"),
    },
    "FlockerVolumeSource": {1: _f("datasetName"), 2: _f("datasetUUID")},
    "DownwardAPIVolumeSource": {
        1: _f("items", "DownwardAPIVolumeFile", True), 2: _f("defaultMode", "int", keep_zero=True),
    },
    "DownwardAPIVolumeFile": {
        1: _f("path", keep_zero=True), 2: _f("fieldRef", "ObjectFieldSelector"),
        3: _f("resourceFieldRef", "ResourceFieldSelector"), 4: _f("mode", "int", keep_zero=True),
    },
    "ObjectFieldSelector": {1: _f("apiVersion"), 2: _f("fieldPath", keep_zero=True)},
    "ResourceFieldSelector": {1: _f("containerName"), 2: _f("resource", keep_zero=True), 3: _f("divisor", "quantity")},
    "FCVolumeSource": {
        1: _f("targetWWNs", repeated=True), 2: _f("lun", "int", keep_zero=True), 3: _f("fsType"),
        4: _f("readOnly", "bool"), 5: _f("wwids", repeated=True),
    },
    "AzureFileVolumeSource": {
        1: _f("secretName", keep_zero=True), 2: _f("shareName", keep_zero=True), 3: _f("readOnly", "bool"),
    },
    "ConfigMapVolumeSource": {
        1: _f("", "LocalObjectReference"), 2: _f("items", "KeyToPath", True),
        3: _f("defaultMode", "int", keep_zero=True), 4: _f("optional", "bool", keep_zero=True),
    },
    "VsphereVirtualDiskVolumeSource": {
        1: _f("volumePath", keep_zero=True), 2: _f("fsType"), 3: _f("storagePolicyName"), 4: _f("storagePolicyID"),
    },
    "QuobyteVolumeSource": {
        1: _f("registry", keep_zero=True), 2: _f("volume", keep_zero=True), 3: _f("readOnly", "bool"), 4: _f("user"),
        5: _f("group"), 6: _f("tenant"),
    },
    "AzureDiskVolumeSource": {
        1: _f("diskName", keep_zero=True), 2: _f("diskURI", keep_zero=True), 3: _f("cachingMode", keep_zero=True),
        4: _f("fsType", keep_zero=True), 5: _f("readOnly", "bool", keep_zero=True), 6: _f("kind", keep_zero=True),
    },
    "PhotonPersistentDiskVolumeSource": {1: _f("pdID", keep_zero=True), 2: _f("fsType")},
    "ProjectedVolumeSource": {1: _f("sources", "VolumeProjection", True), 2: _f("defaultMode", "int", keep_zero=True)},
    "VolumeProjection": {
        1: _f("secret", "SecretProjection"), 2: _f("downwardAPI", "DownwardAPIProjection"),
        3: _f("configMap", "ConfigMapProjection"), 4: _f("serviceAccountToken", "ServiceAccountTokenProjection"),
        5: _f("clusterTrustBundle", "ClusterTrustBundleProjection"),
    },
    "SecretProjection": {
        1: _f("", "LocalObjectReference"), 2: _f("items", "KeyToPath", True), 4: _f("optional", "bool", keep_zero=True),
    },
    "DownwardAPIProjection": {1: _f("items", "DownwardAPIVolumeFile", True)},
    "ConfigMapProjection": {
        1: _f("", "LocalObjectReference"), 2: _f("items", "KeyToPath", True), 4: _f("optional", "bool", keep_zero=True),
    },
    "ServiceAccountTokenProjection": {
        1: _f("audience"), 2: _f("expirationSeconds", "int", keep_zero=True), 3: _f("path", keep_zero=True),
    },
    "ClusterTrustBundleProjection": {
        1: _f("name", keep_zero=True), 2: _f("signerName", keep_zero=True), 3: _f("labelSelector", "LabelSelector"),
        5: _f("optional", "bool", keep_zero=True), 4: _f("path", keep_zero=True),
    },
    "PortworxVolumeSource": {1: _f("volumeID", keep_zero=True), 2: _f("fsType"), 3: _f("readOnly", "bool")},
    "ScaleIOVolumeSource": {
        1: _f("gateway", keep_zero=True), 2: _f("system", keep_zero=True), 3: _f("secretRef", "LocalObjectReference"),
        4: _f("sslEnabled", "bool"), 5: _f("protectionDomain"), 6: _f("storagePool"), 7: _f("storageMode"),
        8: _f("volumeName"), 9: _f("fsType"), 10: _f("readOnly", "bool"),
    },
    "StorageOSVolumeSource": {
        1: _f("volumeName"), 2: _f("volumeNamespace"), 3: _f("fsType"), 4: _f("readOnly", "bool"),
        5: _f("secretRef", "LocalObjectReference"),
    },
    "CSIVolumeSource": {
        1: _f("driver", keep_zero=True), 2: _f("readOnly", "bool", keep_zero=True), 3: _f("fsType", keep_zero=True),
        4: _f("volumeAttributes", "map:string"), 5: _f("nodePublishSecretRef", "LocalObjectReference"),
    },
    "EphemeralVolumeSource": {1: _f("volumeClaimTemplate", "PersistentVolumeClaimTemplate")},
    "PersistentVolumeClaimTemplate": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PersistentVolumeClaimSpec")},
    "PersistentVolumeClaimSpec": {
        1: _f("accessModes", repeated=True), 4: _f("selector", "LabelSelector"),
        2: _f("resources", "VolumeResourceRequirements"), 3: _f("volumeName"),
        5: _f("storageClassName", keep_zero=True), 6: _f("volumeMode", keep_zero=True),
        7: _f("dataSource", "TypedLocalObjectReference"), 8: _f("dataSourceRef", "TypedObjectReference"),
        9: _f("volumeAttributesClassName", keep_zero=True),
    },
    "VolumeResourceRequirements": {1: _f("limits", "map:quantity"), 2: _f("requests", "map:quantity")},
    "TypedLocalObjectReference": {
        1: _f("apiGroup", keep_zero=True), 2: _f("kind", keep_zero=True), 3: _f("name", keep_zero=True),
    },
    "TypedObjectReference": {
        1: _f("apiGroup", keep_zero=True), 2: _f("kind", keep_zero=True), 3: _f("name", keep_zero=True),
        4: _f("namespace", keep_zero=True),
    },
    "ImageVolumeSource": {1: _f("reference"), 2: _f("pullPolicy")},
    "Container": CONTAINER_FIELDS,
    "ContainerPort": {
        1: _f("name"), 2: _f("hostPort", "int"), 3: _f("containerPort", "int", keep_zero=True), 4: _f("protocol"),
        5: _f("hostIP"),
    },
    "EnvFromSource": {
        1: _f("prefix"), 2: _f("configMapRef", "ConfigMapEnvSource"), 3: _f("secretRef", "SecretEnvSource"),
    },
    "ConfigMapEnvSource": {1: _f("", "LocalObjectReference"), 2: _f("optional", "bool", keep_zero=True)},
    "SecretEnvSource": {1: _f("", "LocalObjectReference"), 2: _f("optional", "bool", keep_zero=True)},
    "EnvVar": {1: _f("name", keep_zero=True), 2: _f("value"), 3: _f("valueFrom", "EnvVarSource")},
    "EnvVarSource": {
        1: _f("fieldRef", "ObjectFieldSelector"), 2: _f("resourceFieldRef", "ResourceFieldSelector"),
        3: _f("configMapKeyRef", "ConfigMapKeySelector"), 4: _f("secretKeyRef", "SecretKeySelector"),
    },
    "ConfigMapKeySelector": {
        1: _f("", "LocalObjectReference"), 2: _f("key", keep_zero=True), 3: _f("optional", "bool", keep_zero=True),
    },
    "SecretKeySelector": {
        1: _f("", "LocalObjectReference"), 2: _f("key", keep_zero=True), 3: _f("optional", "bool", keep_zero=True),
    },
    "ResourceRequirements": {
        1: _f("limits", "map:quantity"), 2: _f("requests", "map:quantity"), 3: _f("claims", "ResourceClaim", True),
    },
    "ResourceClaim": {1: _f("name", keep_zero=True), 2: _f("request")},
    "ContainerResizePolicy": {1: _f("resourceName", keep_zero=True), 2: _f("restartPolicy", keep_zero=True)},
    "VolumeMount": {
        1: _f("name", keep_zero=True), 2: _f("readOnly", "bool"), 7: _f("recursiveReadOnly", keep_zero=True),
        3: _f("mountPath", keep_zero=True), 4: _f("subPath"), 5: _f("mountPropagation", keep_zero=True),
        6: _f("subPathExpr"),
    },
    "VolumeDevice": {1: _f("name", keep_zero=True), 2: _f("devicePath", keep_zero=True)},
    "Probe": {
        1: _f("", "ProbeHandler"), 2: _f("initialDelaySeconds", "int"), 3: _f("timeoutSeconds", "int"),
        4: _f("periodSeconds", "int"), 5: _f("successThreshold", "int"), 6: _f("failureThreshold", "int"),
        7: _f("terminationGracePeriodSeconds", "int", keep_zero=True),
    },
    "ProbeHandler": {
        1: _f("exec", "ExecAction"), 2: _f("httpGet", "HTTPGetAction"), 3: _f("tcpSocket", "TCPSocketAction"),
        4: _f("grpc", "GRPCAction"),
    },
    "ExecAction": {1: _f("command", repeated=True)},
    "HTTPGetAction": {
        1: _f("path"), 2: _f("port", "intstr", keep_zero=True), 3: _f("host"), 4: _f("scheme"),
        5: _f("httpHeaders", "HTTPHeader", True),
    },
    "HTTPHeader": {1: _f("name", keep_zero=True), 2: _f("value", keep_zero=True)},
    "TCPSocketAction": {1: _f("port", "intstr", keep_zero=True), 2: _f("host")},
    "GRPCAction": {1: _f("port", "int", keep_zero=True), 2: _f("service", keep_zero=True)},
    "Lifecycle": {1: _f("postStart", "LifecycleHandler"), 2: _f("preStop", "LifecycleHandler")},
    "LifecycleHandler": {
        1: _f("exec", "ExecAction"), 2: _f("httpGet", "HTTPGetAction"), 3: _f("tcpSocket", "TCPSocketAction"),
        4: _f("sleep", "SleepAction"),
    },
    "SleepAction": {1: _f("seconds", "int", keep_zero=True)},
    "SecurityContext": {
        1: _f("capabilities", "Capabilities"), 2: _f("privileged", "bool", keep_zero=True),
        3: _f("seLinuxOptions", "SELinuxOptions"), 10: _f("windowsOptions", "WindowsSecurityContextOptions"),
        4: _f("runAsUser", "int", keep_zero=True), 8: _f("runAsGroup", "int", keep_zero=True),
        5: _f("runAsNonRoot", "bool", keep_zero=True), 6: _f("readOnlyRootFilesystem", "bool", keep_zero=True),
        7: _f("allowPrivilegeEscalation", "bool", keep_zero=True), 9: _f("procMount", keep_zero=True),
        11: _f("seccompProfile", "SeccompProfile"), 12: _f("appArmorProfile", "AppArmorProfile"),
    },
    "Capabilities": {1: _f("add", repeated=True), 2: _f("drop", repeated=True)},
    "SELinuxOptions": {1: _f("user"), 2: _f("role"), 3: _f("type"), 4: _f("level")},
    "WindowsSecurityContextOptions": {
        1: _f("gmsaCredentialSpecName", keep_zero=True), 2: _f("gmsaCredentialSpec", keep_zero=True),
        3: _f("runAsUserName", keep_zero=True), 4: _f("hostProcess", "bool", keep_zero=True),
    },
    "SeccompProfile": {1: _f("type", keep_zero=True), 2: _f("localhostProfile", keep_zero=True)},
    "AppArmorProfile": {1: _f("type", keep_zero=True), 2: _f("localhostProfile", keep_zero=True)},
    "EphemeralContainer": {1: _f("", "EphemeralContainerCommon"), 2: _f("targetContainerName")},
    "EphemeralContainerCommon": CONTAINER_FIELDS,  # the same fields and numbers as a Container's
    "PodSecurityContext": {
        1: _f("seLinuxOptions", "SELinuxOptions"), 8: _f("windowsOptions", "WindowsSecurityContextOptions"),
        2: _f("runAsUser", "int", keep_zero=True), 6: _f("runAsGroup", "int", keep_zero=True),
        3: _f("runAsNonRoot", "bool", keep_zero=True), 4: _f("supplementalGroups", "int", True),
        12: _f("supplementalGroupsPolicy", keep_zero=True), 5: _f("fsGroup", "int", keep_zero=True),
        7: _f("sysctls", "Sysctl", True), 9: _f("fsGroupChangePolicy", keep_zero=True),
        10: _f("seccompProfile", "SeccompProfile"), 11: _f("appArmorProfile", "AppArmorProfile"),
        13: _f("seLinuxChangePolicy", keep_zero=True),
    },
    "Sysctl": {1: _f("name", keep_zero=True), 2: _f("value", keep_zero=True)},
    "Affinity": {
        1: _f("nodeAffinity", "NodeAffinity"), 2: _f("podAffinity", "PodAffinity"),
        3: _f("podAntiAffinity", "PodAntiAffinity"),
    },
    "NodeAffinity": {
        1: _f("requiredDuringSchedulingIgnoredDuringExecution", "NodeSelector"),
        2: _f("preferredDuringSchedulingIgnoredDuringExecution", "PreferredSchedulingTerm", True),
    },
    "NodeSelector": {1: _f("nodeSelectorTerms", "NodeSelectorTerm", True)},
    "NodeSelectorTerm": {
        1: _f("matchExpressions", "NodeSelectorRequirement", True),
        2: _f("matchFields", "NodeSelectorRequirement", True),
    },
    "NodeSelectorRequirement": {
        1: _f("key", keep_zero=True), 2: _f("operator", keep_zero=True), 3: _f("values", repeated=True),
    },
    "PreferredSchedulingTerm": {1: _f("weight", "int", keep_zero=True), 2: _f("preference", "NodeSelectorTerm")},
    "PodAffinity": {
        1: _f("requiredDuringSchedulingIgnoredDuringExecution", "PodAffinityTerm", True),
        2: _f("preferredDuringSchedulingIgnoredDuringExecution", "WeightedPodAffinityTerm", True),
    },
    "PodAffinityTerm": {
        1: _f("labelSelector", "LabelSelector"), 2: _f("namespaces", repeated=True),
        3: _f("topologyKey", keep_zero=True), 4: _f("namespaceSelector", "LabelSelector"),
        5: _f("matchLabelKeys", repeated=True), 6: _f("mismatchLabelKeys", repeated=True),
    },
    "WeightedPodAffinityTerm": {1: _f("weight", "int", keep_zero=True), 2: _f("podAffinityTerm", "PodAffinityTerm")},
    "PodAntiAffinity": {
        1: _f("requiredDuringSchedulingIgnoredDuringExecution", "PodAffinityTerm", True),
        2: _f("preferredDuringSchedulingIgnoredDuringExecution", "WeightedPodAffinityTerm", True),
    },
    "Toleration": {
        1: _f("key"), 2: _f("operator"), 3: _f("value"), 4: _f("effect"),
        5: _f("tolerationSeconds", "int", keep_zero=True),
    },
    "HostAlias": {1: _f("ip", keep_zero=True), 2: _f("hostnames", repeated=True)},
    "PodDNSConfig": {
        1: _f("nameservers", repeated=True), 2: _f("searches", repeated=True),
        3: _f("options", "PodDNSConfigOption", True),
    },
    "PodDNSConfigOption": {1: _f("name"), 2: _f("value", keep_zero=True)},
    "PodReadinessGate": {1: _f("conditionType", keep_zero=True)},
    "TopologySpreadConstraint": {
        1: _f("maxSkew", "int", keep_zero=True), 2: _f("topologyKey", keep_zero=True),
        3: _f("whenUnsatisfiable", keep_zero=True), 4: _f("labelSelector", "LabelSelector"),
        5: _f("minDomains", "int", keep_zero=True), 6: _f("nodeAffinityPolicy", keep_zero=True),
        7: _f("nodeTaintsPolicy", keep_zero=True), 8: _f("matchLabelKeys", repeated=True),
    },
    "PodOS": {1: _f("name", keep_zero=True)},
    "PodSchedulingGate": {1: _f("name", keep_zero=True)},
    "PodResourceClaim": {
        1: _f("name", keep_zero=True), 3: _f("resourceClaimName", keep_zero=True),
        4: _f("resourceClaimTemplateName", keep_zero=True),
    },
    "ObjectReference": {
        1: _f("kind"), 2: _f("namespace"), 3: _f("name"), 4: _f("uid"), 5: _f("apiVersion"), 6: _f("resourceVersion"),
        7: _f("fieldPath"),
    },
    "PersistentVolumeClaim": {
        1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PersistentVolumeClaimSpec"),
        3: _f("status", "PersistentVolumeClaimStatus"),
    },
    "PersistentVolumeClaimStatus": {
        1: _f("phase"), 2: _f("accessModes", repeated=True), 3: _f("capacity", "map:quantity"),
        4: _f("conditions", "PersistentVolumeClaimCondition", True), 5: _f("allocatedResources", "map:quantity"),
        7: _f("allocatedResourceStatuses", "map:string"), 8: _f("currentVolumeAttributesClassName", keep_zero=True),
        9: _f("modifyVolumeStatus", "ModifyVolumeStatus"),
    },
    "PersistentVolumeClaimCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 3: _f("lastProbeTime", "time"),
        4: _f("lastTransitionTime", "time"), 5: _f("reason"), 6: _f("message"),
    },
    "ModifyVolumeStatus": {1: _f("targetVolumeAttributesClassName"), 2: _f("status", keep_zero=True)},
    "ConfigMap": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:string"), 3: _f("binaryData", "map:base64"),
                  4: _f("immutable", "bool", keep_zero=True)},
    "Secret": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:base64"), 3: _f("type"),
               4: _f("stringData", "map:string"), 5: _f("immutable", "bool", keep_zero=True)},
    "ServiceAccount": {1: _f("metadata", "ObjectMeta"), 2: _f("secrets", "ObjectReference", True),
                       3: _f("imagePullSecrets", "LocalObjectReference", True),
                       4: _f("automountServiceAccountToken", "bool", keep_zero=True)},
    # apps/v1
    "Deployment": {
        1: _f("metadata", "ObjectMeta"), 2: _f("spec", "DeploymentSpec"), 3: _f("status", "DeploymentStatus"),
    },
    "DeploymentSpec": {
        1: _f("replicas", "int", keep_zero=True), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"), 4: _f("strategy", "DeploymentStrategy"), 5: _f("minReadySeconds", "int"),
        6: _f("revisionHistoryLimit", "int", keep_zero=True), 7: _f("paused", "bool"),
        9: _f("progressDeadlineSeconds", "int", keep_zero=True),
    },
    "DeploymentStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {
        1: _f("maxUnavailable", "intstr", keep_zero=True), 2: _f("maxSurge", "intstr", keep_zero=True),
    },
    "DeploymentStatus": {
        1: _f("observedGeneration", "int"), 2: _f("replicas", "int"), 3: _f("updatedReplicas", "int"),
        7: _f("readyReplicas", "int"), 4: _f("availableReplicas", "int"), 5: _f("unavailableReplicas", "int"),
        6: _f("conditions", "DeploymentCondition", True), 8: _f("collisionCount", "int", keep_zero=True),
    },
    "DeploymentCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 6: _f("lastUpdateTime", "time"),
        7: _f("lastTransitionTime", "time"), 4: _f("reason"), 5: _f("message"),
    },
    "StatefulSet": {
        1: _f("metadata", "ObjectMeta"), 2: _f("spec", "StatefulSetSpec"), 3: _f("status", "StatefulSetStatus"),
    },
    "StatefulSetSpec": {
        1: _f("replicas", "int", keep_zero=True), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"), 4: _f("volumeClaimTemplates", "PersistentVolumeClaim", True),
        5: _f("serviceName", keep_zero=True), 6: _f("podManagementPolicy"),
        7: _f("updateStrategy", "StatefulSetUpdateStrategy"), 8: _f("revisionHistoryLimit", "int", keep_zero=True),
        9: _f("minReadySeconds", "int"),
        10: _f("persistentVolumeClaimRetentionPolicy", "StatefulSetPersistentVolumeClaimRetentionPolicy"),
        11: _f("ordinals", "StatefulSetOrdinals"),
    },
    "StatefulSetUpdateStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateStatefulSetStrategy")},
    "RollingUpdateStatefulSetStrategy": {
        1: _f("partition", "int", keep_zero=True), 2: _f("maxUnavailable", "intstr", keep_zero=True),
    },
    "StatefulSetPersistentVolumeClaimRetentionPolicy": {1: _f("whenDeleted"), 2: _f("whenScaled")},
    "StatefulSetOrdinals": {1: _f("start", "int", keep_zero=True)},
    "StatefulSetStatus": {
        1: _f("observedGeneration", "int"), 2: _f("replicas", "int", keep_zero=True), 3: _f("readyReplicas", "int"),
        4: _f("currentReplicas", "int"), 5: _f("updatedReplicas", "int"), 6: _f("currentRevision"),
        7: _f("updateRevision"), 9: _f("collisionCount", "int", keep_zero=True),
        10: _f("conditions", "StatefulSetCondition", True), 11: _f("availableReplicas", "int", keep_zero=True),
    },
    "StatefulSetCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 3: _f("lastTransitionTime", "time"),
        4: _f("reason"), 5: _f("message"),
    },
    "DaemonSet": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "DaemonSetSpec"), 3: _f("status", "DaemonSetStatus")},
    "DaemonSetSpec": {
        1: _f("selector", "LabelSelector"), 2: _f("template", "PodTemplateSpec"),
        3: _f("updateStrategy", "DaemonSetUpdateStrategy"), 4: _f("minReadySeconds", "int"),
        6: _f("revisionHistoryLimit", "int", keep_zero=True),
    },
    "DaemonSetUpdateStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDaemonSet")},
    "RollingUpdateDaemonSet": {
        1: _f("maxUnavailable", "intstr", keep_zero=True), 2: _f("maxSurge", "intstr", keep_zero=True),
    },
    "DaemonSetStatus": {
        1: _f("currentNumberScheduled", "int", keep_zero=True), 2: _f("numberMisscheduled", "int", keep_zero=True),
        3: _f("desiredNumberScheduled", "int", keep_zero=True), 4: _f("numberReady", "int", keep_zero=True),
        5: _f("observedGeneration", "int"), 6: _f("updatedNumberScheduled", "int"), 7: _f("numberAvailable", "int"),
        8: _f("numberUnavailable", "int"), 9: _f("collisionCount", "int", keep_zero=True),
        10: _f("conditions", "DaemonSetCondition", True),
    },
    "DaemonSetCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 3: _f("lastTransitionTime", "time"),
        4: _f("reason"), 5: _f("message"),
    },
    "ReplicaSet": {
        1: _f("metadata", "ObjectMeta"), 2: _f("spec", "ReplicaSetSpec"), 3: _f("status", "ReplicaSetStatus"),
    },
    "ReplicaSetSpec": {
        1: _f("replicas", "int", keep_zero=True), 4: _f("minReadySeconds", "int"), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"),
    },
    "ReplicaSetStatus": {
        1: _f("replicas", "int", keep_zero=True), 2: _f("fullyLabeledReplicas", "int"), 4: _f("readyReplicas", "int"),
        5: _f("availableReplicas", "int"), 3: _f("observedGeneration", "int"),
        6: _f("conditions", "ReplicaSetCondition", True),
    },
    "ReplicaSetCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 3: _f("lastTransitionTime", "time"),
        4: _f("reason"), 5: _f("message"),
    },
    # batch/v1
    "Job": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "JobSpec"), 3: _f("status", "JobStatus")},
    "JobSpec": {
        1: _f("parallelism", "int", keep_zero=True), 2: _f("completions", "int", keep_zero=True),
        3: _f("activeDeadlineSeconds", "int", keep_zero=True), 11: _f("podFailurePolicy", "PodFailurePolicy"),
        16: _f("successPolicy", "SuccessPolicy"), 7: _f("backoffLimit", "int", keep_zero=True),
        12: _f("backoffLimitPerIndex", "int", keep_zero=True), 13: _f("maxFailedIndexes", "int", keep_zero=True),
        4: _f("selector", "LabelSelector"), 5: _f("manualSelector", "bool", keep_zero=True),
        6: _f("template", "PodTemplateSpec"), 8: _f("ttlSecondsAfterFinished", "int", keep_zero=True),
        9: _f("completionMode", keep_zero=True), 10: _f("suspend", "bool", keep_zero=True),
        14: _f("podReplacementPolicy", keep_zero=True), 15: _f("managedBy", keep_zero=True),
    },
    "PodFailurePolicy": {1: _f("rules", "PodFailurePolicyRule", True)},
    "PodFailurePolicyRule": {
        1: _f("action", keep_zero=True), 2: _f("onExitCodes", "PodFailurePolicyOnExitCodesRequirement"),
        3: _f("onPodConditions", "PodFailurePolicyOnPodConditionsPattern", True),
    },
    "PodFailurePolicyOnExitCodesRequirement": {
        1: _f("containerName", keep_zero=True), 2: _f("operator", keep_zero=True), 3: _f("values", "int", True),
    },
    "PodFailurePolicyOnPodConditionsPattern": {1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True)},
    "SuccessPolicy": {1: _f("rules", "SuccessPolicyRule", True)},
    "SuccessPolicyRule": {1: _f("succeededIndexes", keep_zero=True), 2: _f("succeededCount", "int", keep_zero=True)},
    "JobStatus": {
        1: _f("conditions", "JobCondition", True), 2: _f("startTime", "time"), 3: _f("completionTime", "time"),
        4: _f("active", "int"), 5: _f("succeeded", "int"), 6: _f("failed", "int"),
        11: _f("terminating", "int", keep_zero=True), 7: _f("completedIndexes"),
        10: _f("failedIndexes", keep_zero=True), 8: _f("uncountedTerminatedPods", "UncountedTerminatedPods"),
        9: _f("ready", "int", keep_zero=True),
    },
    "JobCondition": {
        1: _f("type", keep_zero=True), 2: _f("status", keep_zero=True), 3: _f("lastProbeTime", "time"),
        4: _f("lastTransitionTime", "time"), 5: _f("reason"), 6: _f("message"),
    },
    "UncountedTerminatedPods": {1: _f("succeeded", repeated=True), 2: _f("failed", repeated=True)},
    "CronJob": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "CronJobSpec"), 3: _f("status", "CronJobStatus")},
    "CronJobSpec": {
        1: _f("schedule", keep_zero=True), 8: _f("timeZone", keep_zero=True),
        2: _f("startingDeadlineSeconds", "int", keep_zero=True), 3: _f("concurrencyPolicy"),
        4: _f("suspend", "bool", keep_zero=True), 5: _f("jobTemplate", "JobTemplateSpec"),
        6: _f("successfulJobsHistoryLimit", "int", keep_zero=True),
        7: _f("failedJobsHistoryLimit", "int", keep_zero=True),
    },
    "JobTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "JobSpec")},
    "CronJobStatus": {
        1: _f("active", "ObjectReference", True), 4: _f("lastScheduleTime", "time"),
        5: _f("lastSuccessfulTime", "time"),
    },
    # policy/v1 (kubectl drain) and meta/v1
    "Eviction": {1: _f("metadata", "ObjectMeta"), 2: _f("deleteOptions", "DeleteOptions")},
    "DeleteOptions": {1: _f("gracePeriodSeconds", "int", keep_zero=True), 2: _f("preconditions", "Preconditions"),
                      3: _f("orphanDependents", "bool", keep_zero=True), 4: _f("propagationPolicy"),
                      5: _f("dryRun", repeated=True)},
    "Preconditions": {1: _f("uid"), 2: _f("resourceVersion")},
    "PodDisruptionBudget": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodDisruptionBudgetSpec"),
                            3: _f("status", "PodDisruptionBudgetStatus")},
    "PodDisruptionBudgetSpec": {1: _f("minAvailable", "intstr"), 2: _f("selector", "LabelSelector"),
                                3: _f("maxUnavailable", "intstr"), 4: _f("unhealthyPodEvictionPolicy", keep_zero=True)},
    "PodDisruptionBudgetStatus": {
        1: _f("observedGeneration", "int"), 2: _f("disruptedPods", "map:time"), 3: _f("disruptionsAllowed", "int"),
        4: _f("currentHealthy", "int"), 5: _f("desiredHealthy", "int"), 6: _f("expectedPods", "int"),
        7: _f("conditions", "Condition", True),
    },
    "Condition": {1: _f("type"), 2: _f("status"), 3: _f("observedGeneration", "int"),
                  4: _f("lastTransitionTime", "time"), 5: _f("reason"), 6: _f("message")},
    # scheduling.k8s.io/v1: kubectl create priorityclass
    "PriorityClass": {1: _f("metadata", "ObjectMeta"), 2: _f("value", "int"), 3: _f("globalDefault", "bool"),
                      4: _f("description"), 5: _f("preemptionPolicy", keep_zero=True)},
    # authentication/v1: kubectl create token
    "TokenRequest": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "TokenRequestSpec"),
                     3: _f("status", "TokenRequestStatus")},
    "TokenRequestSpec": {1: _f("audiences", repeated=True), 4: _f("expirationSeconds", "int", keep_zero=True),
                         3: _f("boundObjectRef", "BoundObjectReference")},
    "BoundObjectReference": {1: _f("kind"), 2: _f("apiVersion"), 3: _f("name"), 4: _f("uid")},
    "TokenRequestStatus": {1: _f("token"), 2: _f("expirationTimestamp", "time")},
    # the small well-known types
    "Time": {1: _f("seconds", "int"), 2: _f("nanos", "int")},
    "IntOrString": {1: _f("type", "int"), 2: _f("intVal", "int"), 3: _f("strVal")},
    "Quantity": {1: _f("string")},
    "MapEntry:string": {1: _f("key"), 2: _f("value")},
    "MapEntry:quantity": {1: _f("key"), 2: _f("value", "quantity")},
    "MapEntry:base64": {1: _f("key"), 2: _f("value", "base64")},
    "MapEntry:time": {1: _f("key"), 2: _f("value", "time")},
}
ROOTS = {("v1", "Namespace"): "Namespace", ("v1", "Service"): "Service", ("v1", "ConfigMap"): "ConfigMap",
         ("v1", "Secret"): "Secret", ("v1", "ServiceAccount"): "ServiceAccount",
         ("apps/v1", "Deployment"): "Deployment", ("apps/v1", "StatefulSet"): "StatefulSet",
         ("apps/v1", "DaemonSet"): "DaemonSet", ("apps/v1", "ReplicaSet"): "ReplicaSet",
         ("batch/v1", "Job"): "Job", ("batch/v1", "CronJob"): "CronJob", ("policy/v1", "Eviction"): "Eviction",
         ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
         ("scheduling.k8s.io/v1", "PriorityClass"): "PriorityClass",
         ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest"}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise bad_request("truncated protobuf body")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & ((1 << 64) - 1), at
        shift += 7
        if shift > 63:
            raise bad_request("malformed protobuf varint")


def _wire(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message: ints for varints, bytes else."""
    fields, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise bad_request(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _signed(value: int) -> int:
    """A varint as Go's int32/int64: negative numbers come as 64-bit two's complement (10 bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed(data: bytes) -> list[int]:
    values, at = [], 0
    while at < len(data):
        value, at = _varint(data, at)
        values.append(value)
    return values


def _scalar(type_: str, wire: int, value: Any, where: str) -> Any:
    if type_ in ("int", "bool"):
        if wire != 0:
            raise bad_request(f"protobuf field {where}: expected a varint")
        return bool(value) if type_ == "bool" else _signed(value)
    if wire != 2:
        raise bad_request(f"protobuf field {where}: expected bytes")
    if type_ == "base64":  # a []byte, which JSON carries as base64
        return base64.b64encode(value).decode()
    if type_ in ("string", "bytes"):
        try:
            return value.decode() if type_ == "string" else value
        except UnicodeDecodeError:
            raise bad_request(f"protobuf field {where}: not UTF-8") from None
    if type_ == "time":
        seconds = decode_message("Time", value).get("seconds", 0)
        return None if not seconds else time_text(seconds)
    if type_ == "intstr":
        v = decode_message("IntOrString", value)
        return v.get("strVal", "") if v.get("type") == 1 else v.get("intVal", 0)
    if type_ == "quantity":
        return decode_message("Quantity", value).get("string", "")
    return decode_message(type_, value)


def _zero(value: Any) -> bool:
    return value is None or (value in ("", 0, False) and not isinstance(value, dict))


def decode_message(name: str, data: bytes) -> dict:
    fields = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in _wire(data):
        field = fields.get(number)
        if field is None:
            raise bad_request(f"protobuf field {number} of {name} is not supported by this server; send JSON instead")
        where = f"{name}.{field.name}"
        if field.type.startswith("map:"):
            entry = decode_message(f"MapEntry:{field.type[4:]}", value)
            out.setdefault(field.name, {})[entry.get("key", "")] = entry.get("value", "")
        elif field.repeated and field.type in ("int", "bool") and wire == 2:  # packed
            out.setdefault(field.name, []).extend(_scalar(field.type, 0, v, where) for v in _packed(value))
        elif field.repeated:
            out.setdefault(field.name, []).append(_scalar(field.type, wire, value, where))
        elif not field.name:
            out.update(_scalar(field.type, wire, value, where))
        else:
            decoded = _scalar(field.type, wire, value, where)
            if field.keep_zero or not _zero(decoded) or isinstance(decoded, dict):
                out[field.name] = decoded
    return {k: v for k, v in out.items() if v is not None}


def decode(body: bytes) -> dict:
    """The object in a Kubernetes protobuf request body, as the JSON the API works with."""
    if not body.startswith(MAGIC):
        raise bad_request("a protobuf body must start with the Kubernetes magic number")
    unknown = decode_message("Unknown", body[len(MAGIC):])
    meta = unknown.get("typeMeta", {})
    api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
    if unknown.get("contentEncoding"):
        raise bad_request(f"unsupported protobuf content encoding {unknown['contentEncoding']!r}")
    root = ROOTS.get((api_version, kind))
    if root is None:
        supported = ", ".join(f"{v} {k}" for v, k in ROOTS)
        raise ApiError(415, "UnsupportedMediaType", f"protobuf bodies are only understood for {supported}, "
                                                    f"not {api_version} {kind}; send JSON or YAML")
    return {"apiVersion": api_version, "kind": kind, **decode_message(root, unknown.get("raw", b""))}
