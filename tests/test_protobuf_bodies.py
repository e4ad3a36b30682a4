"""protobuf.decode on the workload kinds kubectl's typed clients send (field numbers: k8s.io/api v0.32)."""
from __future__ import annotations

import pytest

from netplane.api import protobuf
from netplane.api.errors import ApiError
from support.protobuf import field as _pb, varint as _varint


def _entry(number: int, key: str, value: bytes | str) -> bytes:
    return _pb(number, _pb(1, key), _pb(2, value))


def _body(api_version: str, kind: str, raw: bytes) -> bytes:
    return protobuf.MAGIC + _pb(1, _pb(1, api_version), _pb(2, kind)) + _pb(2, raw)


def _pod_template() -> bytes:
    env = (_pb(7, _pb(1, "MODE"), _pb(2, "fast"))
           + _pb(7, _pb(1, "TOKEN"), _pb(3, _pb(4, _pb(1, _pb(1, "creds")), _pb(2, "token"), _pb(3, 0))))
           + _pb(7, _pb(1, "POD"), _pb(3, _pb(1, _pb(1, "v1"), _pb(2, "metadata.name")))))
    probes = (_pb(10, _pb(1, _pb(2, _pb(1, "/healthz"), _pb(2, _pb(1, 0), _pb(2, 8080)), _pb(4, "HTTP"),
                                     _pb(5, _pb(1, "X-Probe"), _pb(2, "")))), _pb(2, 3), _pb(4, 10))
              + _pb(11, _pb(1, _pb(1, _pb(1, "cat"), _pb(1, "/tmp/ready"))), _pb(6, 1))
              + _pb(22, _pb(1, _pb(4, _pb(1, 9000))), _pb(7, 0)))
    security = _pb(15, _pb(1, _pb(2, "ALL")), _pb(4, 0), _pb(7, 0), _pb(11, _pb(1, "RuntimeDefault")))
    container = (_pb(1, "main"), _pb(2, "busybox"), _pb(3, "sh"), _pb(4, "-c"), _pb(4, "sleep 1"), env,
                 _pb(19, _pb(2, _pb(1, _pb(1, "settings")))),
                 _pb(8, _entry(1, "cpu", _pb(1, "500m")), _entry(2, "memory", _pb(1, "64Mi")), _pb(3, _pb(1, "gpu"))),
                 _pb(9, _pb(1, "data"), _pb(3, "/data"), _pb(2, 1)), probes,
                 _pb(12, _pb(2, _pb(4, _pb(1, 5)))), _pb(13, "/dev/termination-log"), _pb(14, "IfNotPresent"),
                 security, _pb(16, 0))
    def volume(name: str, number: int, *source: bytes) -> bytes:  # Volume {1: name, 2: VolumeSource}
        return _pb(1, _pb(1, name), _pb(2, _pb(number, *source)))
    claim_spec = _pb(2, _pb(1, "ReadWriteOnce"), _pb(2, _entry(2, "storage", _pb(1, "1Gi"))))
    volumes = (volume("data", 2, _pb(1, ""), _pb(2, _pb(1, "1Gi")))
               + volume("conf", 19, _pb(1, _pb(1, "cm")), _pb(2, _pb(1, "a"), _pb(2, "a.txt")), _pb(3, 420))
               + volume("token", 26, _pb(1, _pb(4, _pb(1, "api"), _pb(2, 3600), _pb(3, "token"))),
                        _pb(1, _pb(2, _pb(1, _pb(1, "labels"), _pb(2, _pb(2, "metadata.labels"))))))
               + volume("scratch", 29, _pb(1, _pb(1, _entry(11, "k", "v")), claim_spec)))
    requirement = _pb(1, _pb(1, "kubernetes.io/os"), _pb(2, "In"), _pb(3, "linux"))
    anti = _pb(1, _entry(1, "app", "pi")) + _pb(3, "kubernetes.io/hostname")
    affinity = _pb(18, _pb(1, _pb(1, _pb(1, requirement))), _pb(3, _pb(2, _pb(1, 100), _pb(2, anti))))
    spec = (volumes, _pb(2, *container), _pb(3, "Never"), _pb(4, 30), _pb(6, "ClusterFirst"), _pb(11, 0),
            _pb(14, _pb(2, 0), _pb(3, 0), _pb(4, _varint(1000) + _varint(2000)), _pb(5, 2000),
                _pb(7, _pb(1, "net.ipv4.ip_local_port_range"), _pb(2, "1024 65000"))),
            affinity, _pb(19, "default-scheduler"),
            _pb(22, _pb(1, "node.kubernetes.io/not-ready"), _pb(2, "Exists"), _pb(4, "NoExecute"), _pb(5, 0)),
            _pb(25, -5), _pb(26, _pb(1, "10.0.0.10"), _pb(3, _pb(1, "ndots"), _pb(2, "2"))),
            _pb(33, _pb(1, 1), _pb(2, "zone"), _pb(3, "ScheduleAnyway"), _pb(4, _entry(1, "app", "pi"))),
            _pb(36, _pb(1, "linux")), _entry(32, "cpu", _pb(1, "10m")))
    return _pb(1, _pb(8, b""), _entry(11, "app", "pi")) + _pb(2, *spec)


POD_SPEC = {
    "volumes": [
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "conf", "configMap": {"name": "cm", "items": [{"key": "a", "path": "a.txt"}], "defaultMode": 420}},
        {"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "api", "expirationSeconds": 3600, "path": "token"}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {"k": "v"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}],
    "containers": [{
        "name": "main", "image": "busybox", "command": ["sh"], "args": ["-c", "sleep 1"],
        "env": [{"name": "MODE", "value": "fast"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token", "optional": False}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}, "claims": [{"name": "gpu"}]},
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP",
                                      "httpHeaders": [{"name": "X-Probe", "value": ""}]},
                          "initialDelaySeconds": 3, "periodSeconds": 10},
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "failureThreshold": 1},
        "startupProbe": {"grpc": {"port": 9000}, "terminationGracePeriodSeconds": 0},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
        "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsUser": 0, "allowPrivilegeEscalation": False,
                            "seccompProfile": {"type": "RuntimeDefault"}}}],
    "restartPolicy": "Never", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
    "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "supplementalGroups": [1000, 2000], "fsGroup": 2000,
                        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}]},
    "affinity": {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app": "pi"}}, "topologyKey": "kubernetes.io/hostname"}}]}},
    "schedulerName": "default-scheduler",
    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                     "tolerationSeconds": 0}],
    "priority": -5, "dnsConfig": {"nameservers": ["10.0.0.10"], "options": [{"name": "ndots", "value": "2"}]},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app": "pi"}}}],
    "os": {"name": "linux"}, "overhead": {"cpu": "10m"},
}
TEMPLATE = {"metadata": {"labels": {"app": "pi"}}, "spec": POD_SPEC}


def test_a_job_with_a_rich_pod_template_decodes_to_the_json_go_would_write():
    on_exit = _pb(2, _pb(1, "main"), _pb(2, "In"), _pb(3, 42), _pb(3, _varint(7) + _varint(9)))  # unpacked, packed
    rules = _pb(1, _pb(1, "FailJob"), on_exit) + _pb(1, _pb(1, "Ignore"), _pb(3, _pb(1, "DisruptionTarget"),
                                                                              _pb(2, "True")))
    spec = _pb(2, _pb(2, 1), _pb(7, 0), _pb(11, rules), _pb(6, _pod_template()), _pb(10, 0))
    meta = _pb(1, _pb(1, "pi"), _entry(12, "cronjob.kubernetes.io/instantiate", "manual"))
    assert protobuf.decode(_body("batch/v1", "Job", meta + spec + _pb(3, b""))) == {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "annotations": {"cronjob.kubernetes.io/instantiate": "manual"}},
        "spec": {"completions": 1, "backoffLimit": 0, "suspend": False, "template": TEMPLATE, "podFailurePolicy": {
            "rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                            "values": [42, 7, 9]}},
                      {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}},
        "status": {}}


def test_a_cronjob_and_a_statefulset_decode():
    job_spec = _pb(7, 6) + _pb(6, _pod_template())
    cron = _pb(2, _pb(1, "*/5 * * * *"), _pb(8, "UTC"), _pb(3, "Forbid"), _pb(4, 0),
               _pb(5, _pb(1, _entry(11, "team", "a")), _pb(2, job_spec)), _pb(6, 3), _pb(7, 1))
    status = _pb(3, _pb(1, _pb(1, "Job"), _pb(2, "default"), _pb(3, "pi-1")), _pb(4, _pb(1, 0)))
    assert protobuf.decode(_body("batch/v1", "CronJob", _pb(1, _pb(1, "pi")) + cron + status)) == {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "pi"},
        "spec": {"schedule": "*/5 * * * *", "timeZone": "UTC", "concurrencyPolicy": "Forbid", "suspend": False,
                 "jobTemplate": {"metadata": {"labels": {"team": "a"}},
                                 "spec": {"backoffLimit": 6, "template": TEMPLATE}},
                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1},
        "status": {"active": [{"kind": "Job", "namespace": "default", "name": "pi-1"}]}}  # zero Time: dropped

    claim = _pb(1, _pb(1, "data")) + _pb(2, _pb(1, "ReadWriteOnce"), _pb(2, _entry(2, "storage", _pb(1, "1Gi"))),
                                      _pb(5, "fast"), _pb(6, "Filesystem"))
    spec = _pb(2, _pb(1, 0), _pb(3, _pod_template()), _pb(4, claim), _pb(5, "web"),
               _pb(7, _pb(1, "RollingUpdate"), _pb(2, _pb(1, 0), _pb(2, _pb(1, 1), _pb(3, "50%")))),
               _pb(10, _pb(1, "Retain"), _pb(2, "Delete")), _pb(11, _pb(1, 0)))
    decoded = protobuf.decode(_body("apps/v1", "StatefulSet", _pb(1, _pb(1, "web")) + spec))
    assert decoded["spec"] == {
        "replicas": 0, "template": TEMPLATE, "serviceName": "web",
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "fast", "volumeMode": "Filesystem"}}],
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": "50%"}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
        "ordinals": {"start": 0}}


def test_unknown_fields_and_malformed_varints_are_refused():
    for kind, raw in [("Job", _pb(2, _pb(6, _pb(2, _pb(99, "x"))))),  # PodSpec field 99
                      ("Deployment", _pb(2, _varint(1 << 3) + b"\x80" * 10 + b"\x01"))]:  # replicas: 71 bits
        with pytest.raises(ApiError) as e:
            protobuf.decode(_body("batch/v1" if kind == "Job" else "apps/v1", kind, raw))
        assert e.value.code == 400
