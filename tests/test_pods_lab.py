"""Pods that behave like containers, on a real lab driven by kubectl: well-known images run what they
would (nginx's welcome page, busybox's applets), each pod is a host of its own (hostname, /etc/hosts,
resolv.conf, private files and processes), the environment comes from every source Kubernetes
offers, exit codes decide restarts and phases, and an image nothing can run is never Running.

One lab for the module (2 nodes), named t<hex>, brought down by the fixture even when a test fails;
the demo app is not loaded; every test makes and removes its own objects.
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from labtools import bare_lab, cli, eventually, kubectl


LAB_IMAGES = {"example.com/shop/api": {"entrypoint": ["python3", "-m", "http.server"], "cmd": ["8000"],
                                       "workingDir": "/etc"}}


@pytest.fixture(scope="module")
def lab():
    with bare_lab(images=LAB_IMAGES) as name:
        yield name


def pod_json(lab: str, name: str) -> dict:
    return json.loads(kubectl(lab, "get", "pod", name, "-o", "json").stdout)


def state(lab: str, name: str, container: int = 0) -> dict:
    statuses = pod_json(lab, name)["status"].get("containerStatuses") or [{}]
    return statuses[container].get("state", {})


@contextmanager
def applied(lab: str, manifest: str) -> Iterator[None]:
    """The manifest's objects for the length of a test, deleted after it even when it fails."""
    kubectl(lab, "apply", "-f", "-", stdin=manifest)
    try:
        yield
    finally:
        kubectl(lab, "delete", "-f", "-", "--ignore-not-found", stdin=manifest)  # gone before the next test applies it again


def in_pod(lab: str, pod: str, *argv: str) -> str:
    return cli(lab, "exec", pod, "--", *argv, check=True).stdout


TOOLBOX = """
apiVersion: v1
kind: Pod
metadata: {name: toolbox, labels: {app: toolbox}}
spec:
  nodeName: node-1
  containers:
  - name: box
    image: busybox:1.36
    command: [sleep, "3600"]
    env:
    - {name: WHO, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: GREETING, value: "hello from $(WHO) $(HOSTNAME)"}  # the runtime's HOSTNAME is not the kubelet's to expand
"""


def test_the_first_tutorial_page_nginx_behind_a_service_answered_from_busybox(lab):
    kubectl(lab, "create", "deployment", "nginx", "--image=nginx", "--replicas=3")
    kubectl(lab, "expose", "deployment", "nginx", "--port=80")
    kubectl(lab, "apply", "-f", "-", stdin=TOOLBOX)
    try:
        kubectl(lab, "rollout", "status", "deployment/nginx", "--timeout=60s")
        kubectl(lab, "wait", "--for=condition=Ready", "pod/toolbox", "--timeout=60s")
        ip = kubectl(lab, "get", "svc", "nginx", "-o", "jsonpath={.spec.clusterIP}").stdout
        # busybox's own wget, first on the image's PATH, through kube-proxy's DNAT to an nginx pod
        assert "Welcome to nginx!" in in_pod(lab, "toolbox", "wget", "-qO-", f"http://{ip}/")
        assert "BusyBox" in cli(lab, "exec", "toolbox", "--", "wget", "--help").stderr
        # a pod that runs once: args expanded from the Service links, exit 0 makes it Completed
        kubectl(lab, "run", "fetch", "--image=busybox", "--restart=Never", "--",
                "wget", "-qO", "/dev/null", "http://$(NGINX_SERVICE_HOST):$(NGINX_SERVICE_PORT)/")
        assert eventually(lambda: pod_json(lab, "fetch")["status"].get("phase") == "Succeeded", timeout=30)
        done = state(lab, "fetch")["terminated"]
        assert (done["exitCode"], done["reason"]) == (0, "Completed")
        assert "Completed" in kubectl(lab, "get", "pod", "fetch").stdout
        # the environment the kubelet gave, and what exec sees of it
        assert in_pod(lab, "toolbox", "sh", "-c", "echo $GREETING").strip() == "hello from toolbox $(HOSTNAME)"
        assert in_pod(lab, "toolbox", "sh", "-c", "echo $NGINX_SERVICE_HOST").strip() == ip
    finally:
        kubectl(lab, "delete", "deployment/nginx", "service/nginx", "pod/toolbox", "pod/fetch", "--wait=false",
                "--ignore-not-found")


HOST = """
apiVersion: v1
kind: Pod
metadata: {name: own-host}
spec:
  nodeName: node-2
  hostname: db-0
  subdomain: db
  hostAliases: [{ip: 192.0.2.7, hostnames: [legacy.example]}]
  containers:
  - {name: main, image: debian, command: [sleep, "3600"]}
  - {name: side, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: default-dns}
spec:
  nodeName: node-1
  dnsPolicy: Default
  containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
"""


def test_each_pod_is_a_host_of_its_own(lab):
    kubectl(lab, "apply", "-f", "-", stdin=HOST)
    try:
        kubectl(lab, "wait", "--for=condition=Ready", "pod/own-host", "pod/default-dns", "--timeout=60s")
        ip = pod_json(lab, "own-host")["status"]["podIP"]
        assert in_pod(lab, "own-host", "hostname").strip() == "db-0"
        hosts = in_pod(lab, "own-host", "cat", "/etc/hosts")
        assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
        assert f"{ip}\tdb-0.db.default.svc.cluster.local\tdb-0\n" in hosts
        assert hosts.endswith("# Entries added by HostAliases.\n192.0.2.7\tlegacy.example\n")
        assert in_pod(lab, "own-host", "cat", "/etc/resolv.conf") == (
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5\n")
        assert "nameserver" not in in_pod(lab, "default-dns", "cat", "/etc/resolv.conf")  # the lab's node has none
        # the two containers share the pod's processes and hostname, not their files
        ps = in_pod(lab, "own-host", "ps", "-e", "-o", "comm=").split()
        assert sorted(ps) == ["catatonit", "ps", "sleep", "sleep"]  # the pause process is PID 1
        assert cli(lab, "exec", "own-host", "-c", "side", "--", "hostname", check=True).stdout.strip() == "db-0"
        in_pod(lab, "own-host", "sh", "-c", "echo mine > /etc/written-by-pod && echo x > /tmp/scratch")
        assert in_pod(lab, "own-host", "cat", "/etc/written-by-pod") == "mine\n"
        assert cli(lab, "exec", "own-host", "-c", "side", "--", "cat", "/etc/written-by-pod").returncode != 0
        assert not os.path.exists("/etc/written-by-pod") and not os.path.exists("/tmp/scratch")  # nothing leaks
    finally:
        kubectl(lab, "delete", "pod", "own-host", "default-dns", "--wait=false")


RUNS_ONCE = """
apiVersion: v1
kind: Pod
metadata: {name: fails}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: [sh, -c, "exit 3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: retries}
spec:
  restartPolicy: OnFailure
  containers: [{name: main, image: busybox, command: [sh, -c, "[ -e /tmp/x ] || exit 4"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: nowhere}
spec:
  containers: [{name: main, image: example.com/team/app:1.0}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-such-program}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: [/no/such/program]}]
"""


def test_exit_codes_decide_restarts_and_phases_and_nothing_pretends_to_run(lab):
    with applied(lab, RUNS_ONCE):
        assert eventually(lambda: pod_json(lab, "fails")["status"].get("phase") == "Failed", timeout=30)
        assert state(lab, "fails")["terminated"]["exitCode"] == 3
        assert state(lab, "fails")["terminated"]["reason"] == "Error"
        # OnFailure: exit 4 restarts it; its /tmp is new each time, so it fails again, and backs off
        retried = eventually(lambda: (s := pod_json(lab, "retries")["status"]["containerStatuses"][0])
                             ["restartCount"] >= 1 and s, timeout=30)
        assert retried["lastState"]["terminated"]["exitCode"] == 4
        # an image no catalog entry runs: never Running, the pull error as a node would say it
        pulled = eventually(lambda: state(lab, "nowhere").get("waiting", {}).get("reason") == "ImagePullBackOff",
                            timeout=30)
        assert pulled
        nowhere = pod_json(lab, "nowhere")
        assert nowhere["status"]["phase"] == "Pending"
        assert 'Back-off pulling image "example.com/team/app:1.0"' in state(lab, "nowhere")["waiting"]["message"]
        assert "ImagePullBackOff" in kubectl(lab, "get", "pod", "nowhere").stdout
        failed = eventually(lambda: state(lab, "no-such-program").get("terminated"), timeout=30)
        assert (failed["exitCode"], failed["reason"]) == (128, "StartError")
        assert 'exec: "/no/such/program"' in failed["message"]


SOURCES = """
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: configured, labels: {tier: back}}
spec:
  nodeName: node-2
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    envFrom: [{configMapRef: {name: settings}, prefix: CFG_}]
    env:
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
"""


def test_env_from_config_maps_secrets_and_the_pod_itself_waits_for_what_it_names(lab):
    kubectl(lab, "apply", "-f", "-", stdin=SOURCES)
    try:
        waiting = eventually(lambda: state(lab, "configured").get("waiting", {}).get("reason")
                             == "CreateContainerConfigError" and state(lab, "configured"), timeout=30)
        assert waiting["waiting"]["message"] == 'configmap "settings" not found'
        kubectl(lab, "create", "configmap", "settings", "--from-literal=MODE=dev")
        kubectl(lab, "wait", "--for=condition=Ready", "pod/configured", "--timeout=60s")
        env = dict(line.split("=", 1) for line in in_pod(lab, "configured", "env").splitlines() if "=" in line)
        assert env["CFG_MODE"] == "dev" and env["PASSWORD"] == "hunter2" and env["NODE"] == "node-2"
        assert env["POD_IP"] == pod_json(lab, "configured")["status"]["podIP"] and env["TIER"] == "back"
    finally:
        kubectl(lab, "delete", "pod/configured", "secret/db", "configmap/settings", "--wait=false",
                "--ignore-not-found")


VOLUMES = """
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "<h1>served from a ConfigMap</h1>\\n"
  default.conf: |
    server { listen 8081; location / { root /usr/share/nginx/html; } }
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {user: admin, pass: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {app: vol}}
spec:
  nodeName: node-1
  containers:
  - name: web
    image: nginx
    volumeMounts:
    - {name: site, mountPath: /usr/share/nginx/html}
    - {name: site, mountPath: /etc/nginx/conf.d/default.conf, subPath: default.conf}
    - {name: shared, mountPath: /shared}
  - name: side
    image: busybox
    command: [sh, -c, "echo from-side > /shared/note; sleep 3600"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
    - {name: creds, mountPath: /etc/creds, readOnly: true}
    - {name: about, mountPath: /etc/podinfo}
    - {name: host, mountPath: /host}
  volumes:
  - {name: site, configMap: {name: site}}
  - {name: shared, emptyDir: {}}
  - {name: creds, secret: {secretName: creds, items: [{key: pass, path: password, mode: 0400}]}}
  - {name: about, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: host, hostPath: {path: HOSTDIR, type: DirectoryOrCreate}}
---
apiVersion: v1
kind: Pod
metadata: {name: claims}
spec:
  nodeName: node-2
  containers: [{name: main, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"""


def test_volumes_as_the_kubelet_mounts_them_and_none_it_cannot(lab, tmp_path):
    host = tmp_path / "from-host"
    with applied(lab, VOLUMES.replace("HOSTDIR", str(host))):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/volumes", "--timeout=60s")
        ip = pod_json(lab, "volumes")["status"]["podIP"]
        # nginx's site and its server block come from the ConfigMap, as tutorials configure it
        assert eventually(lambda: cli(lab, "exec", "node/node-2", "--", "curl", "-s", "-m", "3", f"http://{ip}:8081/")
                          .stdout == "<h1>served from a ConfigMap</h1>\n")  # once nginx listens
        assert eventually(lambda: in_pod(lab, "volumes", "cat", "/shared/note") == "from-side\n")  # one emptyDir
        side = ["-c", "side", "--"]
        assert cli(lab, "exec", "volumes", *side, "cat", "/etc/creds/password", check=True).stdout == "s3cret"
        assert cli(lab, "exec", "volumes", *side, "stat", "-L", "-c", "%a", "/etc/creds/password",
                   check=True).stdout.strip() == "400"
        assert cli(lab, "exec", "volumes", *side, "touch", "/etc/creds/x").returncode != 0  # readOnly
        assert cli(lab, "exec", "volumes", *side, "cat", "/etc/podinfo/labels", check=True).stdout == 'app="vol"'
        cli(lab, "exec", "volumes", *side, "sh", "-c", "echo through > /host/file", check=True)
        assert (host / "file").read_text() == "through\n"  # hostPath: the machine's own directory
        # a volume type netplane cannot provide: the pod waits, and an event says why
        claims = pod_json(lab, "claims")
        assert claims["status"]["phase"] == "Pending"
        assert eventually(lambda: "persistentVolumeClaim, which netplane cannot provide" in kubectl(
            lab, "get", "events", "--field-selector", "involvedObject.name=claims,reason=FailedMount").stdout)
        assert state(lab, "claims").get("waiting", {}).get("reason") == "ContainerCreating"


def test_a_lab_file_adds_images_to_the_catalog(lab):
    """`images:` in the lab file: the image's entrypoint, CMD (replaced by args) and working directory."""
    kubectl(lab, "run", "api", "--image=example.com/shop/api:2.1", "--", "8001")
    try:
        kubectl(lab, "wait", "--for=condition=Ready", "pod/api", "--timeout=60s")
        ip = pod_json(lab, "api")["status"]["podIP"]
        listing = eventually(lambda: cli(lab, "exec", "node/node-1", "--", "curl", "-s", "-m", "3",
                                         f"http://{ip}:8001/").stdout)
        assert "hostname" in listing  # python's http.server lists its working directory, /etc
    finally:
        kubectl(lab, "delete", "pod", "api", "--wait=false")


PROBED = """
apiVersion: v1
kind: Pod
metadata: {name: lively}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "touch /tmp/healthy; exec sleep 3600"]
    startupProbe: {exec: {command: [test, -e, /tmp/healthy]}, periodSeconds: 1}
    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: never-starts}
spec:
  nodeName: node-2
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    startupProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 2}
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
"""


def test_liveness_and_startup_probes_restart_the_container(lab):
    with applied(lab, PROBED):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/lively", "--timeout=60s")
        assert pod_json(lab, "lively")["status"]["containerStatuses"][0]["started"] is True
        in_pod(lab, "lively", "rm", "/tmp/healthy")  # two failed liveness probes: SIGTERM, a fresh run

        def restarted() -> dict:
            status = pod_json(lab, "lively")["status"]["containerStatuses"][0]
            return status if status["restartCount"] == 1 and "running" in status["state"] else {}

        status = eventually(restarted, timeout=30)
        assert status["lastState"]["terminated"]["exitCode"] == 143  # sleep ended by SIGTERM
        kubectl(lab, "wait", "--for=condition=Ready", "pod/lively", "--timeout=30s")  # its new /tmp is healthy
        eventually(lambda: "Liveness probe failed" in kubectl(lab, "get", "events", "--field-selector",
                                                              "involvedObject.name=lively").stdout)
        # a startup probe that never passes: never started nor ready, its readiness probe never asked
        again = eventually(lambda: (s := pod_json(lab, "never-starts")["status"]["containerStatuses"][0])
                           ["restartCount"] >= 1 and s, timeout=30)
        assert again["started"] is False and again["ready"] is False


STAGED = """
apiVersion: v1
kind: Pod
metadata: {name: staged}
spec:
  nodeName: node-1
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - {name: first, image: busybox, command: [sh, -c, "echo one > /work/order"],
     volumeMounts: [{name: work, mountPath: /work}]}
  - name: helper  # a sidecar: started in its turn and kept running beside the app
    image: busybox
    restartPolicy: Always
    command: [sh, -c, "echo helper >> /work/order; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  - {name: second, image: busybox, command: [sh, -c, "sleep 1; echo two >> /work/order"],
     volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: app, image: busybox, command: [sh, -c, "echo app >> /work/order; exec sleep 3600"],
     volumeMounts: [{name: work, mountPath: /work}]}
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  nodeName: node-2
  restartPolicy: Never
  initContainers: [{name: check, image: busybox, command: [sh, -c, "exit 7"]}]
  containers: [{name: app, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: init-retries}
spec:
  nodeName: node-2
  initContainers: [{name: check, image: busybox, command: [sh, -c, "exit 2"]}]
  containers: [{name: app, image: busybox, command: [sleep, "3600"]}]
"""


def test_init_containers_run_in_order_before_the_app_and_a_failed_one_holds_it_back(lab):
    with applied(lab, STAGED):
        assert eventually(lambda: "Init:" in kubectl(lab, "get", "pod", "staged", "--no-headers").stdout
                          or pod_json(lab, "staged")["status"].get("phase") == "Running", timeout=30)
        kubectl(lab, "wait", "--for=condition=Ready", "pod/staged", "--timeout=60s")
        assert in_pod(lab, "staged", "cat", "/work/order") == "one\nhelper\ntwo\napp\n"
        status = pod_json(lab, "staged")["status"]
        init = {s["name"]: s for s in status["initContainerStatuses"]}
        assert init["first"]["state"]["terminated"]["reason"] == "Completed"
        assert init["second"]["state"]["terminated"]["exitCode"] == 0
        assert "running" in init["helper"]["state"] and init["helper"]["ready"] is True
        assert {c["type"]: c["status"] for c in status["conditions"]}["Initialized"] == "True"
        # restartPolicy Never: a failed init container fails the pod, and the app never starts
        assert eventually(lambda: pod_json(lab, "init-fails")["status"].get("phase") == "Failed", timeout=30)
        failed = pod_json(lab, "init-fails")["status"]
        assert failed["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 7
        assert failed["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
        assert "Init:Error" in kubectl(lab, "get", "pod", "init-fails").stdout
        # restartPolicy Always: it is tried again with back-off, and the pod stays Pending, not Initialized
        retried = eventually(lambda: (s := pod_json(lab, "init-retries")["status"])["initContainerStatuses"][0]
                             ["restartCount"] >= 1 and s, timeout=30)
        assert retried["phase"] == "Pending"
        assert retried["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 2
        initialized = {c["type"]: c for c in retried["conditions"]}["Initialized"]
        assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
        assert "Init:" in kubectl(lab, "get", "pod", "init-retries").stdout


HOOKED = """
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 20
  volumes: [{name: out, hostPath: {path: HOSTDIR, type: DirectoryOrCreate}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      postStart: {exec: {command: [sh, -c, "echo post-start >> /out/log"]}}
      preStop: {exec: {command: [sh, -c, "echo pre-stop >> /out/log; sleep 1"]}}
"""


def test_lifecycle_hooks_run_after_start_and_before_the_stop_signal(lab, tmp_path):
    log = tmp_path / "hooks" / "log"
    manifest = HOOKED.replace("HOSTDIR", str(log.parent))
    with applied(lab, manifest):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/hooked", "--timeout=60s")
        assert log.read_text() == "post-start\n"  # done before the container counts as running
        kubectl(lab, "delete", "pod", "hooked", "--timeout=60s")  # waits until the kubelet has stopped it
        assert log.read_text() == "post-start\npre-stop\nterm\n"


IN_CLUSTER = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: v1
kind: Pod
metadata: {name: in-cluster}
spec:
  nodeName: node-2
  serviceAccountName: reader
  containers: [{name: client, image: python:3.11, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-token}
spec:
  nodeName: node-1
  automountServiceAccountToken: false
  containers: [{name: box, image: busybox, command: [sleep, "3600"]}]
"""
LIST_PODS = """
from kubernetes import client, config
config.load_incluster_config()
print(" ".join(sorted(p.metadata.name for p in client.CoreV1Api().list_namespaced_pod("default").items)))
"""
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_a_pod_reaches_the_api_as_an_in_cluster_client_through_the_kubernetes_service(lab):
    with applied(lab, IN_CLUSTER):
        service = json.loads(kubectl(lab, "get", "service", "kubernetes", "-o", "json").stdout)
        assert (service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]) == ("10.96.0.1", 443)
        endpoints = json.loads(kubectl(lab, "get", "endpointslice", "kubernetes", "-o", "json").stdout)
        assert [e["addresses"] for e in endpoints["endpoints"]] == [["172.30.0.11"]]  # node-1, as a control plane's
        kubectl(lab, "wait", "--for=condition=Ready", "pod/in-cluster", "pod/no-token", "--timeout=60s")
        spec = pod_json(lab, "in-cluster")["spec"]
        volume = next(v for v in spec["volumes"] if v["name"].startswith("kube-api-access-"))
        assert spec["containers"][0]["volumeMounts"] == [{"name": volume["name"], "readOnly": True,
                                                          "mountPath": ACCOUNT}]
        assert in_pod(lab, "in-cluster", "cat", f"{ACCOUNT}/namespace") == "default"
        assert in_pod(lab, "in-cluster", "cat", f"{ACCOUNT}/ca.crt").startswith("-----BEGIN CERTIFICATE-----")
        # the official Python client, configured in-cluster: the token, the CA, 10.96.0.1:443 by kube-proxy
        assert "in-cluster no-token" in in_pod(lab, "in-cluster", "python3", "-c", LIST_PODS)
        # kubectl in a pod finds the same without a kubeconfig (the machine's home is not the pod's)
        assert in_pod(lab, "in-cluster", "kubectl", "get", "pod", "no-token", "-o", "name").strip() == "pod/no-token"
        assert cli(lab, "exec", "no-token", "--", "ls", ACCOUNT).returncode != 0  # automounting turned off
        # `kubectl create token`: good while its account lives, refused once it is gone
        token = kubectl(lab, "create", "token", "reader").stdout.strip()
        assert kubectl(lab, "--token", token, "get", "pod", "in-cluster", "-o", "name").stdout.strip() == \
            "pod/in-cluster"
        kubectl(lab, "delete", "pod", "in-cluster", "--wait=false")
        kubectl(lab, "delete", "serviceaccount", "reader")
        refused = kubectl(lab, "--token", token, "get", "pods", check=False)
        assert refused.returncode != 0 and "Unauthorized" in refused.stderr
        # a pod naming an account that does not exist is refused, as the admission plugin does
        missing = kubectl(lab, "run", "orphan", "--image=busybox", "--overrides",
                          '{"spec": {"serviceAccountName": "nobody"}}', "--", "sleep", "60", check=False)
        assert 'error looking up service account default/nobody: serviceaccount "nobody" not found' in missing.stderr


LIMITED = """
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - name: hog
    image: python
    command: [python3, -c, "import time; x = bytearray(256 << 20); time.sleep(60)"]
    resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: modest}
spec:
  nodeName: node-2
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 250m, memory: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: spinner}
spec:
  nodeName: node-2
  containers:
  - name: spin
    image: busybox
    command: [sh, -c, "while :; do :; done"]
    resources: {limits: {cpu: 200m}}
"""


def millicores(text: str) -> int:
    return int(text.removesuffix("m")) if text.endswith("m") else int(float(text) * 1000)


def top(lab: str, *args: str) -> dict[str, list[str]]:
    """`kubectl top ...` as {first column: the other columns}; empty while metrics are not there."""
    done = kubectl(lab, "top", *args, "--no-headers", check=False)
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()} if done.returncode == 0 else {}


def test_limits_are_cgroups_a_container_over_its_memory_is_oom_killed_and_kubectl_top_reports_use(lab):
    from netplane.kernel import cgroups
    with applied(lab, LIMITED):
        done = eventually(lambda: state(lab, "greedy").get("terminated"), timeout=60)
        assert (done["exitCode"], done["reason"]) == (137, "OOMKilled")
        assert pod_json(lab, "greedy")["status"]["phase"] == "Failed"
        kubectl(lab, "wait", "--for=condition=Ready", "pod/modest", "--timeout=60s")
        uid = pod_json(lab, "modest")["metadata"]["uid"]
        scope = next(s for s in cgroups.scopes() if s.endswith(f"{lab}.node-2"))
        where = f"{scope}/pod{uid}/main"
        memory = cgroups.ROOT / "memory" / cgroups.TOP / where
        cpu = cgroups.ROOT / "cpu" / cgroups.TOP / where
        assert int((memory / "memory.limit_in_bytes").read_text()) == 32 << 20
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"  # 250m of a 100 ms period
        assert (cpu / "cpu.shares").read_text().strip() == "102"  # 100m, as the kubelet's MilliCPUToShares
        # the container's processes are in it
        pids = (memory / "cgroup.procs").read_text().split()
        assert pids and all(f"/{cgroups.TOP}/{where}" in open(f"/proc/{p}/cgroup").read() for p in pids)
        used = cgroups.usage(where)
        assert 0 < used.working_set_bytes <= used.memory_bytes < 32 << 20 and used.memory_limit == 32 << 20
        # the metrics API, from the kubelets' Summaries: a busy loop under a 200m quota uses about 200m
        kubectl(lab, "wait", "--for=condition=Ready", "pod/spinner", "--timeout=60s")
        spinning = eventually(lambda: top(lab, "pod", "spinner").get("spinner"), timeout=30)
        assert 100 <= millicores(spinning[0]) <= 230, spinning
        assert int(top(lab, "pod", "modest")["modest"][1].removesuffix("Mi")) < 32
        nodes = eventually(lambda: (found := top(lab, "node")) and len(found) == 2 and found, timeout=30)
        assert millicores(nodes["node-2"][0]) >= millicores(spinning[0]) - 50  # its pods are the node's
        summary = json.loads(kubectl(lab, "get", "--raw", "/api/v1/nodes/node-2/proxy/stats/summary").stdout)
        pods = {p["podRef"]["name"]: p for p in summary["pods"]}
        assert summary["node"]["nodeName"] == "node-2" and {"modest", "spinner"} <= set(pods)
        assert pods["spinner"]["containers"][0]["name"] == "spin"
        assert pods["spinner"]["cpu"]["usageCoreNanoSeconds"] > 0
        # the kubelet port itself takes only clients with a certificate of the lab's CA
        from netplane import names
        from netplane.lab.state import LabState
        pki, url = LabState(lab).pki, "https://172.30.0.12:10250/healthz"
        asked = ["ip", "netns", "exec", names.node_netns(lab, "node-1"), "curl", "-sk", "-m", "5", url]
        assert subprocess.run(asked, capture_output=True).returncode != 0
        cert = ["--cert", str(pki / "apiserver-kubelet-client.crt"), "--key", str(pki / "apiserver-kubelet-client.key")]
        assert subprocess.run([*asked, *cert], capture_output=True, text=True).stdout == "ok"


AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.52"
TEST_SERVERS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: netexec}}
spec:
  nodeName: node-1
  containers:
  - {{name: agnhost, image: "{AGNHOST}", args: [netexec, --http-port=8080, --udp-port=8081]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnames}}
spec:
  nodeName: node-2
  containers:
  - {{name: serve, image: "{AGNHOST}", args: [serve-hostname]}}
  - {{name: porter, image: "{AGNHOST}", args: [porter], env: [{{name: SERVE_PORT_9000, value: foo}}]}}
  - {{name: echo, image: hashicorp/http-echo, args: ["-text=hello from http-echo"]}}
  - {{name: whoami, image: traefik/whoami, args: [--port=8000]}}
"""


def test_the_e2e_test_servers_agnhost_http_echo_and_whoami(lab):
    with applied(lab, TEST_SERVERS):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/netexec", "pod/hostnames", "--timeout=60s")
        here, there = (pod_json(lab, p)["status"]["podIP"] for p in ("netexec", "hostnames"))

        def get(url: str) -> str:
            return eventually(lambda: (r := cli(lab, "exec", "node/node-1", "--", "curl", "-s", "-m", "3", url))
                              .returncode == 0 and r.stdout)

        assert get(f"http://{here}:8080/hostname") == "netexec"
        assert json.loads(get(f"http://{here}:8080/dial?host={there}&port=9376&request=hostname")) == {
            "responses": ["hostnames"], "errors": []}  # netexec asks serve-hostname, from inside its pod
        assert json.loads(get(f"http://{here}:8080/shell?cmd=hostname")) == {"output": "netexec\n"}
        assert get(f"http://{there}:9000/") == "foo"  # porter's SERVE_PORT_9000
        assert get(f"http://{there}:5678/") == "hello from http-echo\n"
        whoami = get(f"http://{there}:8000/")
        assert "Hostname: hostnames\n" in whoami and f"IP: {there}\n" in whoami and "GET / HTTP/1.1" in whoami
        # connect, as the NetworkPolicy e2e tests probe: exit 0, or 1 with the reason on stderr
        assert cli(lab, "exec", "netexec", "--", "/agnhost", "connect", f"{there}:9376", "--timeout=2s").returncode == 0
        refused = cli(lab, "exec", "netexec", "--", "/agnhost", "connect", f"{there}:9999", "--timeout=2s")
        assert (refused.returncode, refused.stderr.strip()) == (1, "REFUSED")
        # /exit ends the server with that code, and the kubelet restarts it
        cli(lab, "exec", "node/node-1", "--", "curl", "-s", "-m", "3", f"http://{here}:8080/exit?code=3")
        status = eventually(lambda: (s := pod_json(lab, "netexec")["status"]["containerStatuses"][0])
                            ["restartCount"] >= 1 and s, timeout=30)
        assert status["lastState"]["terminated"]["exitCode"] == 3


UPDATED = """
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {message: hello}
---
apiVersion: v1
kind: Pod
metadata: {name: follows, labels: {stage: one}}
spec:
  nodeName: node-2
  volumes:
  - {name: config, configMap: {name: greeting}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    env: [{name: MESSAGE, valueFrom: {configMapKeyRef: {name: greeting, key: message}}}]
    volumeMounts: [{name: config, mountPath: /config}, {name: info, mountPath: /info},
                   {name: config, mountPath: /pinned/message, subPath: message}]
"""


def test_config_map_and_downward_api_volumes_follow_their_objects_while_the_pod_runs(lab):
    with applied(lab, UPDATED):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/follows", "--timeout=60s")
        assert in_pod(lab, "follows", "cat", "/config/message") == "hello"
        kubectl(lab, "patch", "configmap", "greeting", "-p", '{"data": {"message": "changed"}}')
        kubectl(lab, "label", "pod", "follows", "stage=two", "--overwrite")
        assert eventually(lambda: in_pod(lab, "follows", "cat", "/config/message") == "changed", timeout=30)
        assert eventually(lambda: in_pod(lab, "follows", "cat", "/info/labels") == 'stage="two"', timeout=30)
        # as upstream: the environment was set at start, and a subPath mount keeps the file it was given
        assert in_pod(lab, "follows", "sh", "-c", "echo $MESSAGE").strip() == "hello"
        assert in_pod(lab, "follows", "cat", "/pinned/message") == "hello"


LOGGING = """
apiVersion: v1
kind: Pod
metadata: {name: twice}
spec:
  nodeName: node-1
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: main
    image: busybox
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, "if [ -e /data/once ]; then echo second; echo 'to stderr' >&2; exec sleep 3600;
              else touch /data/once; echo first; echo oops >&2; exit 3; fi"]
  - name: counter
    image: busybox
    command: [sh, -c, "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: brief}
spec:
  nodeName: node-2
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: [sh, -c, "for i in 1 2 3; do echo tick $i; sleep 0.4; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: quitter}
spec:
  nodeName: node-2
  containers:
  - name: nginx
    image: nginx
    livenessProbe: {httpGet: {path: /missing, port: 80}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: unpulled}
spec:
  nodeName: node-1
  containers:
  - {name: main, image: example.com/nobody/knows:1}
"""


def test_kubectl_logs_reads_each_run_of_a_container_with_the_options_and_follows_to_its_end(lab):
    with applied(lab, LOGGING):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/twice", "--timeout=60s")
        logs = lambda *args, check=True: kubectl(lab, "logs", *args, check=check)  # noqa: E731
        eventually(lambda: logs("twice", "-c", "main").stdout == "second\nto stderr\n")
        assert logs("twice", "-c", "main", "--previous").stdout == "first\noops\n"
        assert logs("twice", "-c", "counter", "--tail=2").stdout == "line 4\nline 5\n"
        assert logs("twice", "-c", "counter", "--limit-bytes=9").stdout == "line 1\nli"
        stamped = logs("twice", "-c", "counter", "--timestamps", "--tail=1").stdout
        when, text = stamped.rstrip("\n").split(" ", 1)
        assert text == "line 5" and when.endswith("Z") and len(when.split(".")[1]) == 10  # nanoseconds
        # kubectl sends --since-time in whole seconds: the lines of that second and after, none from the next
        second = when.split(".")[0]
        assert logs("twice", "-c", "counter", f"--since-time={second}Z").stdout.endswith("line 5\n")
        later = datetime.fromisoformat(second).replace(tzinfo=timezone.utc) + timedelta(seconds=1)
        assert logs("twice", "-c", "counter", f"--since-time={later:%Y-%m-%dT%H:%M:%SZ}").stdout == ""
        assert logs("twice", "-c", "counter", "--since=1h").stdout.count("\n") == 5
        refused = logs("twice", "-c", "counter", "--previous", check=False)
        assert 'previous terminated container "counter" in pod "twice" not found' in refused.stderr
        # `logs -f` ends when the container's run does, with everything it said
        followed = kubectl(lab, "logs", "-f", "brief").stdout
        assert followed == "tick 1\ntick 2\ntick 3\n"
        # nginx is stopped with its image's STOPSIGNAL, which its error log names
        eventually(lambda: state(lab, "quitter").get("running") and pod_json(lab, "quitter")["status"][
            "containerStatuses"][0]["restartCount"] >= 1, timeout=30)
        assert "signal 3 (SIGQUIT) received" in logs("quitter", "--previous").stdout
        waiting = eventually(lambda: "waiting to start" in (out := logs("unpulled", check=False).stderr) and out)
        assert 'container "main" in pod "unpulled" is waiting to start: ' in waiting
        # the official client reads the same
        from kubernetes import client, config
        from netplane.lab.state import LabState
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(LabState(lab).kubeconfig)))
        assert api.read_namespaced_pod_log("twice", "default", container="counter", tail_lines=1) == "line 5\n"


SHELL = """
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  nodeName: node-2
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], env: [{name: GREETING, value: hello}]}
  - {name: other, image: debian, command: [sleep, "3600"]}
"""


def test_kubectl_exec_runs_in_the_container_with_its_streams_exit_code_and_tty_and_kubectl_cp_copies(lab, tmp_path):
    from kubernetes import client, config
    from kubernetes.stream import stream
    from netplane.lab.state import LabState
    with applied(lab, SHELL):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/shell", "--timeout=60s")
        run = lambda *argv, stdin=None: kubectl(lab, "exec", *(["-i"] if stdin else []), "shell", "-c", "main",  # noqa: E731
                                                "--", *argv, stdin=stdin, check=False)
        assert run("hostname").stdout == "shell\n"
        assert run("sh", "-c", "echo $GREETING; readlink /proc/1/exe").stdout == "hello\n/usr/bin/catatonit\n"
        both = run("sh", "-c", "echo out; echo err >&2")
        assert (both.stdout, both.stderr) == ("out\n", "err\n")
        failed = run("sh", "-c", "exit 3")
        assert failed.returncode == 3 and "command terminated with exit code 3" in failed.stderr
        assert run("cat", stdin="through stdin\n").stdout == "through stdin\n"
        assert run("wc", "-c", stdin="x" * 200_000).stdout.strip() == "200000"
        other = kubectl(lab, "exec", "shell", "-c", "other", "--", "sh", "-c", "cat /etc/os-release | head -1")
        assert other.stdout.startswith("PRETTY_NAME=")
        missing = kubectl(lab, "exec", "shell", "-c", "nope", "--", "true", check=False)
        assert missing.returncode != 0 and "container nope is not valid for pod shell" in missing.stderr
        # kubectl cp is tar through exec, both ways
        source = tmp_path / "note.txt"
        source.write_text("copied in\n")
        kubectl(lab, "cp", str(source), "shell:/tmp/note.txt", "-c", "main")
        assert run("cat", "/tmp/note.txt").stdout == "copied in\n"
        kubectl(lab, "cp", "shell:/tmp/note.txt", str(tmp_path / "back.txt"), "-c", "main")
        assert (tmp_path / "back.txt").read_text() == "copied in\n"
        # the Python client speaks v4.channel.k8s.io: exit codes, and a terminal with its size
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(LabState(lab).kubeconfig)))
        resp = stream(api.connect_get_namespaced_pod_exec, "shell", "default", container="main",
                      command=["sh", "-c", "echo from python; exit 2"], stderr=True, stdin=False, stdout=True,
                      tty=False, _preload_content=False)
        resp.run_forever(timeout=10)
        assert resp.read_stdout() == "from python\n" and resp.returncode == 2
        resp = stream(api.connect_get_namespaced_pod_exec, "shell", "default", container="main",
                      command=["sh", "-c", "sleep 0.5; tty; stty size"], stderr=False, stdin=True, stdout=True,
                      tty=True, _preload_content=False)
        resp.write_channel(4, json.dumps({"Width": 100, "Height": 30}))
        resp.run_forever(timeout=10)
        said = resp.read_stdout().split()
        assert said[0].startswith("/dev/pts/") and said[1:] == ["30", "100"] and resp.returncode == 0


FORWARDED = """
apiVersion: v1
kind: Pod
metadata: {name: forwarded}
spec:
  nodeName: node-2
  containers:
  - {name: web, image: nginx}
  - {name: echo, image: busybox, command: [nc, -ll, -p, "7000", -e, cat]}
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kubectl_port_forward_carries_http_and_a_long_stream_both_ways_and_the_python_client_forwards_too(lab):
    import hashlib
    import socket
    import urllib.request
    from kubernetes import client, config
    from kubernetes.stream import portforward
    from netplane.lab.state import LabState
    with applied(lab, FORWARDED):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/forwarded", "--timeout=60s")
        web, echo = free_port(), free_port()
        forwarder = subprocess.Popen(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), "port-forward",
                                      "pod/forwarded", f"{web}:80", f"{echo}:7000"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            page = eventually(lambda: urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5).read())
            assert b"Welcome to nginx!" in page
            # 4 MiB out and back through the echo: SPDY's flow control windows, both directions
            payload = os.urandom(4 << 20)
            with socket.create_connection(("127.0.0.1", echo), timeout=20) as conn:
                sender = __import__("threading").Thread(target=conn.sendall, args=(payload,))
                sender.start()
                got = bytearray()
                while len(got) < len(payload):
                    chunk = conn.recv(1 << 16)
                    assert chunk, f"the stream ended after {len(got)} bytes"
                    got += chunk
                sender.join()
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        finally:
            forwarder.terminate()
            forwarder.communicate(timeout=10)
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(LabState(lab).kubeconfig)))
        forward = portforward(api.connect_get_namespaced_pod_portforward, "forwarded", "default", ports="80")
        conn = forward.socket(80)
        conn.setblocking(True)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: forwarded\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        conn.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"Welcome to nginx!" in answer


SPDY_FALLBACK = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def test_kubectl_on_spdy_upgraded_connections_execs_attaches_and_forwards_ports(lab):
    """What kubectl falls back to, and what client-go programs speak: exec, attach (run -i --rm) and
    port-forward on connections upgraded to SPDY/3.1 through the API server to the kubelet port."""
    import urllib.request
    from netplane.lab.state import LabState
    with applied(lab, FORWARDED):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/forwarded", "--timeout=60s")
        run = lambda *argv, stdin=None: kubectl(lab, "exec", *(["-i"] if stdin else []), "forwarded", "-c", "echo",  # noqa: E731
                                                "-v=6", "--", *argv, stdin=stdin, check=False, env=SPDY_FALLBACK)
        said = run("sh", "-c", "hostname; echo err >&2; exit 5")
        upgraded = [line for line in said.stderr.splitlines() if "101 Switching Protocols" in line]
        assert len(upgraded) == 1 and "POST " in upgraded[0] and "/exec?" in upgraded[0]  # a WebSocket's is a GET
        assert said.stdout == "forwarded\n" and said.returncode == 5 and "err\n" in said.stderr
        assert run("wc", "-c", stdin="y" * 300_000).stdout.strip() == "300000"
        assert run("sh", "-c", "cat; echo done", stdin="stdin closes\n").stdout == "stdin closes\ndone\n"
        port = free_port()
        forwarder = subprocess.Popen(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), "port-forward",
                                      "pod/forwarded", f"{port}:80"], env={**os.environ, **SPDY_FALLBACK},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            page = eventually(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read())
            assert b"Welcome to nginx!" in page
        finally:
            forwarder.terminate()
            forwarder.communicate(timeout=10)
    ran = kubectl(lab, "run", "-i", "--rm", "spdy-reader", "--image=busybox", "--restart=Never", "--",
                  "sh", "-c", 'read line; echo "got $line"', stdin="over spdy\n", env=SPDY_FALLBACK)
    assert "got over spdy" in ran.stdout and 'pod "spdy-reader" deleted' in ran.stdout, (ran.stdout, ran.stderr)


EVENTFUL = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: eventful}
spec:
  replicas: 1
  selector: {matchLabels: {app: eventful}}
  template:
    metadata: {labels: {app: eventful}}
    spec:
      containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers: [{name: main, image: busybox, command: [sh, -c, "exit 1"]}]
"""


def events_of(lab: str, name: str, reason: str = "") -> list[dict]:
    selector = f"involvedObject.name={name}" + (f",reason={reason}" if reason else "")
    return json.loads(kubectl(lab, "get", "events", "--field-selector", selector, "-o", "json").stdout)["items"]


def test_describe_shows_the_events_of_a_pods_life_from_each_component_with_repeats_counted(lab):
    with applied(lab, EVENTFUL):
        eventually(lambda: events_of(lab, "crasher", "BackOff"), timeout=30)
        described = kubectl(lab, "describe", "pod", "crasher").stdout
        events = described[described.index("Events:"):]
        for words in ("default-scheduler  Successfully assigned default/crasher to node-",
                      'kubelet            Container image "busybox" already present on machine',
                      "Created container: main", "Started container main",
                      "Back-off restarting failed container main in pod crasher_default"):
            assert words in events, events
        # the second run's events count on the first's, as upstream's recorder aggregates them
        created = events_of(lab, "crasher", "Created")
        assert len(created) == 1 and created[0]["count"] >= 2 and created[0]["source"]["component"] == "kubelet"
        assert created[0]["involvedObject"]["fieldPath"] == "spec.containers{main}"
        scaled = eventually(lambda: events_of(lab, "eventful", "ScalingReplicaSet"))
        assert scaled[0]["message"].startswith("Scaled up replica set eventful-") and \
            scaled[0]["message"].endswith(" from 0 to 1")
        pod = json.loads(kubectl(lab, "get", "pods", "-l", "app=eventful", "-o", "json").stdout)["items"][0]
        made = eventually(lambda: events_of(lab, pod["metadata"]["ownerReferences"][0]["name"], "SuccessfulCreate"))
        assert made[0]["message"] == f"Created pod: {pod['metadata']['name']}"
        assert kubectl(lab, "events", "--for", "pod/crasher").stdout.count("crasher") >= 3
        kubectl(lab, "delete", "pod", pod["metadata"]["name"], "--wait=false")  # a running one is stopped
        killing = eventually(lambda: events_of(lab, pod["metadata"]["name"], "Killing"), timeout=20)
        assert killing[0]["message"] == "Stopping container main"


TALKER = """
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: [sh, -c, "sleep 2; for i in 1 2 3; do echo tick $i; sleep 0.3; done"]}
"""


def test_kubectl_attach_follows_a_container_and_run_i_rm_feeds_its_stdin_then_deletes_it(lab):
    with applied(lab, TALKER):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/talker", "--timeout=60s")
        attached = kubectl(lab, "attach", "talker")
        assert "tick 1\ntick 2\ntick 3\n" in attached.stdout, attached.stderr
    ran = kubectl(lab, "run", "-i", "--rm", "reader", "--image=busybox", "--restart=Never", "--",
                  "sh", "-c", 'read line; echo "got $line"; echo "to stderr" >&2', stdin="hello\n")
    assert "got hello" in ran.stdout and 'pod "reader" deleted' in ran.stdout, (ran.stdout, ran.stderr)
    assert kubectl(lab, "get", "pod", "reader", "--ignore-not-found", "-o", "name").stdout == ""


DEBUGGEE = """
apiVersion: v1
kind: Pod
metadata: {name: debuggee}
spec:
  containers:
  - {name: main, image: busybox, command: [sh, -c, "exec sleep 3600"]}
"""


def test_kubectl_debug_runs_ephemeral_containers_in_the_pod_once_each_and_attaches_to_one(lab):
    with applied(lab, DEBUGGEE):
        kubectl(lab, "wait", "--for=condition=Ready", "pod/debuggee", "--timeout=60s")
        kubectl(lab, "debug", "debuggee", "--image=busybox", "--target=main", "-c", "peek", "--profile=general",
                "--", "sh", "-c", "ps; cat /etc/hostname")
        finished = eventually(lambda: [s for s in pod_json(lab, "debuggee")["status"].get(
            "ephemeralContainerStatuses", []) if "terminated" in s["state"]])
        assert finished[0]["name"] == "peek" and finished[0]["state"]["terminated"]["exitCode"] == 0
        def whole_log() -> str | None:  # once the copier has written its last line (hostname's, after ps)
            out = kubectl(lab, "logs", "debuggee", "-c", "peek").stdout
            return out if out.rstrip().endswith("debuggee") else None

        peeked = eventually(whole_log)
        assert "sleep 3600" in peeked and "debuggee" in peeked  # the target's processes, the pod's files
        typed = kubectl(lab, "debug", "-i", "debuggee", "--image=busybox", "-c", "typed", "--profile=general",
                        "--", "sh", stdin="echo typed $((1 + 2)); exit\n")  # no stdinOnce: stdin stays open
        assert "typed 3" in typed.stdout, (typed.stdout, typed.stderr)
        pod = pod_json(lab, "debuggee")
        assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["peek", "typed"]
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert pod["status"]["phase"] == "Running" and ready["status"] == "True"  # they count for neither
        def started() -> set[str] | None:  # Events are written a moment later, the main container's first
            paths = {e["involvedObject"].get("fieldPath") for e in events_of(lab, "debuggee", "Started")}
            return paths if "spec.ephemeralContainers{peek}" in paths else None

        assert "spec.ephemeralContainers{peek}" in eventually(started)


def test_kubectl_proxy_shows_the_servers_paths_health_and_openapi_as_the_seeds_do(lab):
    import urllib.request
    from netplane.lab.state import LabState
    proxy = subprocess.Popen(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), "proxy", "--port=0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        address = proxy.stdout.readline().strip().rsplit(" ", 1)[1]  # "Starting to serve on 127.0.0.1:NNNNN"
        get = lambda path: urllib.request.urlopen(f"http://{address}{path}", timeout=10).read().decode()  # noqa: E731
        paths = json.loads(get("/"))["paths"]
        assert {"/api", "/api/v1", "/apis", "/apis/apps/v1", "/apis/metrics.k8s.io/v1beta1", "/healthz",
                "/livez", "/readyz", "/openapi/v2", "/openapi/v3", "/version"} <= set(paths)
        assert get("/readyz?verbose").endswith("readyz check passed\n")
        assert json.loads(get("/openapi/v2"))["swagger"] == "2.0"
        assert get("/api/v1/nodes/node-1/proxy/healthz") == "ok"  # through to node-1's kubelet port
    finally:
        proxy.terminate()
        proxy.communicate(timeout=10)
    info = kubectl(lab, "cluster-info").stdout
    assert "Kubernetes control plane is running at https://127.0.0.1:" in info
