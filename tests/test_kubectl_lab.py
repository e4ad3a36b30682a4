"""A real Kubernetes client drives a lab: kubectl and the Python `kubernetes` client against the
lab's API server, with Deployments, Services and the data plane following.

Conventions: one lab per module (2 nodes, nodeLeaseSeconds 4 so that a silent node goes NotReady in
seconds), named t<hex>, brought down by the fixture even when a test fails; the demo app is not
loaded; every test makes and removes its own objects.
"""
from __future__ import annotations

import base64
import json
import subprocess

import pytest

from conftest import unique_lab
from labtools import bare_lab, cli, eventually, http, kubectl
from netplane.lab.state import LabState

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: echo
        image: netplane/echo
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: probe}
spec:
  nodeName: node-1
  containers: [{name: shell, image: netplane/echo, command: [sleep, infinity]}]
"""


@pytest.fixture(scope="module")
def lab():
    with bare_lab(nodeLeaseSeconds=4) as name:
        yield name


def web_pods(lab: str) -> list[dict]:
    return json.loads(kubectl(lab, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]


def endpoints(lab: str, service: str = "web") -> set[str]:
    slices = json.loads(kubectl(lab, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}",
                                "-o", "json").stdout)["items"]
    return {a for s in slices for e in s["endpoints"] or [] if e["conditions"].get("ready") for a in e["addresses"]}


def answers(lab: str, ip: str, tries: int = 24) -> set[str]:
    return {http(lab, "probe", f"http://{ip}/hostname", timeout=2).stdout
            for _ in range(tries)}


def running_ready(pods: list[dict]) -> bool:
    return all(p["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) for p in pods)


def test_a_deployment_spreads_scales_and_rolls_with_its_endpoints(lab):
    created = kubectl(lab, "apply", "-f", "-", stdin=DEPLOYMENT).stdout
    assert "deployment.apps/web created" in created and "service/web created" in created
    assert "unchanged" in kubectl(lab, "apply", "-f", "-", stdin=DEPLOYMENT).stdout
    pods = eventually(lambda: (ps := web_pods(lab)) and len(ps) == 3 and running_ready(ps) and ps, timeout=30)
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}
    ip = json.loads(kubectl(lab, "get", "svc", "web", "-o", "json").stdout)["spec"]["clusterIP"]
    names = {p["metadata"]["name"] for p in pods}
    eventually(lambda: endpoints(lab) == {p["status"]["podIP"] for p in pods})
    assert eventually(lambda: answers(lab, ip) == names, timeout=30)

    kubectl(lab, "scale", "deployment/web", "--replicas=1")
    one = eventually(lambda: (ps := web_pods(lab)) and len(ps) == 1 and ps, timeout=30)
    eventually(lambda: endpoints(lab) == {one[0]["status"]["podIP"]})
    assert answers(lab, ip, 6) == {one[0]["metadata"]["name"]}

    kubectl(lab, "scale", "deployment/web", "--replicas=3")
    eventually(lambda: len(web_pods(lab)) == 3 and running_ready(web_pods(lab)), timeout=30)
    before = {p["metadata"]["name"] for p in web_pods(lab)}
    changed = DEPLOYMENT.replace("readinessProbe:", "env: [{name: VERSION, value: '2'}]\n        readinessProbe:")
    assert "deployment.apps/web configured" in kubectl(lab, "apply", "-f", "-", stdin=changed).stdout
    status = kubectl(lab, "rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in status.stdout
    after = eventually(lambda: (ps := web_pods(lab)) and len(ps) == 3 and running_ready(ps) and ps, timeout=30)
    assert not before & {p["metadata"]["name"] for p in after}
    assert all(p["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "2"}] for p in after)
    eventually(lambda: endpoints(lab) == {p["status"]["podIP"] for p in after}, timeout=30)
    assert eventually(lambda: answers(lab, ip) == {p["metadata"]["name"] for p in after}, timeout=30)
    rs = json.loads(kubectl(lab, "get", "replicasets", "-l", "app=web", "-o", "json").stdout)["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    kubectl(lab, "delete", "-f", "-", stdin=DEPLOYMENT)
    eventually(lambda: not web_pods(lab), timeout=30)
    assert not json.loads(kubectl(lab, "get", "replicasets", "-o", "json").stdout)["items"]


def test_rollout_history_and_undo_after_set_image(lab):
    """kubectl's rollout undo patches the Deployment's annotations, which needs the revision the
    controller writes there; each ReplicaSet carries its revision, and one that comes back is the
    newest revision, with its earlier one in revision-history, as upstream's controller does it."""
    kubectl(lab, "create", "deployment", "roll", "--image=netplane/echo", "--replicas=2")
    kubectl(lab, "rollout", "status", "deployment/roll", "--timeout=60s")
    kubectl(lab, "set", "image", "deployment/roll", "echo=netplane/echo:2")
    kubectl(lab, "annotate", "deployment/roll", "kubernetes.io/change-cause=echo 2")  # goes to the newest ReplicaSet
    kubectl(lab, "rollout", "status", "deployment/roll", "--timeout=60s")

    def revision(what: str) -> str:
        return json.loads(kubectl(lab, "get", what, "-o", "json").stdout)["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"]

    assert eventually(lambda: revision("deployment/roll") == "2")
    history = kubectl(lab, "rollout", "history", "deployment/roll").stdout
    assert [line.split(None, 1) for line in history.splitlines()[-3:-1]] == [["1", "<none>"], ["2", "echo 2"]]
    assert "rolled back" in kubectl(lab, "rollout", "undo", "deployment/roll").stdout
    kubectl(lab, "rollout", "status", "deployment/roll", "--timeout=60s")
    image = json.loads(kubectl(lab, "get", "deployment/roll", "-o", "json").stdout)["spec"]["template"]["spec"][
        "containers"][0]["image"]
    assert image == "netplane/echo" and eventually(lambda: revision("deployment/roll") == "3")
    sets = json.loads(kubectl(lab, "get", "replicasets", "-l", "app=roll", "-o", "json").stdout)["items"]
    notes = {r["spec"]["template"]["spec"]["containers"][0]["image"]: r["metadata"]["annotations"] for r in sets}
    assert notes["netplane/echo"]["deployment.kubernetes.io/revision"] == "3"
    assert notes["netplane/echo"].get("deployment.kubernetes.io/revision-history") == "1", notes
    assert notes["netplane/echo:2"]["deployment.kubernetes.io/revision"] == "2"
    assert "rolled back" in kubectl(lab, "rollout", "undo", "deployment/roll", "--to-revision=2").stdout
    kubectl(lab, "rollout", "status", "deployment/roll", "--timeout=60s")
    assert eventually(lambda: revision("deployment/roll") == "4")
    kubectl(lab, "delete", "deployment", "roll")


SLOW_TO_STOP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fg}
spec:
  replicas: 2
  selector: {matchLabels: {app: fg}}
  template:
    metadata: {labels: {app: fg}}
    spec:
      terminationGracePeriodSeconds: 3
      containers: [{name: shell, image: netplane/echo, command: [sh, -c, "trap '' TERM; sleep 600"]}]
"""


def test_a_foreground_delete_removes_the_deployment_after_its_replicasets_and_pods(lab):
    """Pods that ignore SIGTERM take their 3 s grace period to go; all that while the Deployment
    stays, marked, and it goes only once they and their ReplicaSet have."""
    kubectl(lab, "apply", "-f", "-", stdin=SLOW_TO_STOP)
    kubectl(lab, "rollout", "status", "deployment/fg", "--timeout=60s")
    kubectl(lab, "delete", "deployment", "fg", "--cascade=foreground", "--wait=false")
    marked = json.loads(kubectl(lab, "get", "deployment", "fg", "-o", "json").stdout)["metadata"]
    assert marked["deletionTimestamp"] and marked["finalizers"] == ["foregroundDeletion"]
    kubectl(lab, "wait", "--for=delete", "deployment/fg", "--timeout=60s")
    left = kubectl(lab, "get", "pods,replicasets", "-l", "app=fg", "-o", "name").stdout
    assert left == "", f"the Deployment went before its dependents: {left}"


def test_get_watch_sees_a_pod_go_from_pending_to_running(lab):
    watcher = subprocess.Popen(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), "get", "pods", "-w",
                                "--field-selector", "metadata.name=watched", "--no-headers"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kubectl(lab, "run", "watched", "--image=netplane/echo", "--restart=Never")
        eventually(lambda: running_ready([json.loads(kubectl(lab, "get", "pod", "watched", "-o", "json").stdout)]))
    finally:
        watcher.terminate()
    seen = [line.split()[2] for line in watcher.communicate(timeout=10)[0].splitlines() if line.strip()]
    assert seen[0] == "Pending" and "Running" in seen, seen
    kubectl(lab, "delete", "pod", "watched", "--wait=true")
    assert kubectl(lab, "get", "pod", "watched", check=False).returncode == 1


def test_describe_and_wide_output_look_like_a_cluster(lab):
    wide = kubectl(lab, "get", "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    assert any(line.startswith("node-1") and "Ready" in line and "172.30.0.11" in line for line in wide)
    described = kubectl(lab, "describe", "node", "node-2").stdout
    assert "Name:" in described and "node-2" in described and "172.30.0.12" in described


def test_the_official_client_reads_nodes_version_and_discovery_with_or_without_a_trailing_slash(lab):
    """The Python client's models require NodeSystemInfo's machineID, systemUUID and bootID; a node
    carries them, with capacity and allocatable, so list, read and watch of Nodes work, and
    `kubectl describe node` shows real figures. Discovery answers `/api/` as `/api`."""
    from kubernetes import client, config, watch
    api = config.new_client_from_config(config_file=str(LabState(lab).kubeconfig))
    assert client.VersionApi(api).get_code().git_version.startswith("v1.32")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    assert "pods" in {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert client.AppsV1Api(api).get_api_resources().group_version == "apps/v1"
    core = client.CoreV1Api(api)
    nodes = core.list_node().items
    assert {n.metadata.name for n in nodes} == {"node-1", "node-2"}
    infos = [n.status.node_info for n in nodes]
    assert len({i.machine_id for i in infos}) == 2 and all(i.boot_id and i.system_uuid for i in infos)
    node = core.read_node("node-1")
    assert node.status.capacity["pods"] == "110" and int(node.status.allocatable["cpu"]) >= 1
    events = list(watch.Watch().stream(core.list_node, timeout_seconds=1))
    assert {e["object"].metadata.name for e in events} == {"node-1", "node-2"}
    for path in ("/version/", "/api/", "/apis/", "/api/v1/", "/apis/apps/v1/", "/apis/apps/"):
        response = api.call_api(*api.param_serialize("GET", path, auth_settings=["BearerToken"]))
        response.read()
        assert response.status == 200 and json.loads(response.data), path
    described = kubectl(lab, "describe", "node", "node-1").stdout
    assert "Capacity:" in described and "Allocatable:" in described
    assert "-9223372036854775808" not in described and "Machine ID:" in described


def test_a_node_that_stops_heartbeating_goes_not_ready_and_its_pods_leave_the_endpoints(lab):
    # a Node whose agent is gone: registered, given a Lease once, then silent
    ghost = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ghost"}, "spec": {},
             "status": {"conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": "172.30.0.99"}]}}
    kubectl(lab, "create", "-f", "-", stdin=json.dumps(ghost))
    kubectl(lab, "patch", "node", "ghost", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "ghost", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 4,
                      "renewTime": "2020-01-01T00:00:00.000000Z"}}
    stranded = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranded", "labels": {"app": "stranded"}},
                "spec": {"nodeName": "ghost", "containers": [{"name": "c", "image": "netplane/echo"}]}}
    kubectl(lab, "create", "-f", "-", stdin=json.dumps(stranded))
    kubectl(lab, "patch", "pod", "stranded", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Running", "podIP": "10.244.200.5", "conditions": [{"type": "Ready", "status": "True"}]}}))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "stranded"},
               "spec": {"selector": {"app": "stranded"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(service))

    def stranded_endpoint() -> dict:
        slices = json.loads(kubectl(lab, "get", "endpointslices", "-l", "kubernetes.io/service-name=stranded",
                                    "-o", "json").stdout)["items"]
        return next((e for s in slices for e in s["endpoints"] or []), {})

    assert eventually(lambda: stranded_endpoint().get("conditions", {}).get("ready") is True)
    kubectl(lab, "create", "-f", "-", stdin=json.dumps(lease))
    node = eventually(lambda: (n := json.loads(kubectl(lab, "get", "node", "ghost", "-o", "json").stdout))
                      and any(c["type"] == "Ready" and c["status"] == "Unknown" for c in n["status"]["conditions"]) and n,
                      timeout=20)
    assert "NotReady" in kubectl(lab, "get", "node", "ghost").stdout
    # the node lifecycle controller taints it: nothing new is scheduled there, and what runs there is
    # evicted once its 300 s toleration of unreachable nodes is over
    taints = eventually(lambda: json.loads(kubectl(lab, "get", "node", "ghost", "-o", "json").stdout)["spec"].get(
        "taints"))
    assert {(t["key"], t["effect"]) for t in taints} == {("node.kubernetes.io/unreachable", "NoSchedule"),
                                                         ("node.kubernetes.io/unreachable", "NoExecute")}
    assert next(t for t in taints if t["effect"] == "NoExecute")["timeAdded"]
    # the live nodes keep renewing theirs and stay Ready
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
               for n in json.loads(kubectl(lab, "get", "nodes", "-o", "json").stdout)["items"]
               if n["metadata"]["name"] != "ghost")
    # its pod is marked not ready, so the Service stops sending there
    assert eventually(lambda: stranded_endpoint().get("conditions", {}).get("ready") is False)
    kubectl(lab, "delete", "service", "stranded")
    kubectl(lab, "delete", "pod", "stranded", "--grace-period=0", "--force")
    kubectl(lab, "delete", "node", "ghost")
    kubectl(lab, "delete", "lease", "ghost", "-n", "kube-node-lease")
    assert node["metadata"]["name"] == "ghost"


def test_a_lab_keeps_its_objects_in_etcd_when_asked(tmp_path):
    from netplane.api.etcd import Gateway, local_etcd
    name = unique_lab()
    with local_etcd() as url:
        result = cli(name, "up", "--name", name, "--storage", f"{url}/{name}/registry")
        try:
            assert result.returncode == 0, result.stderr
            assert "lab" in result.stdout and name in result.stdout
            # the pods are in etcd, under the apiserver's own key layout
            prefix = f"/{name}/registry/pods/default/".encode()
            reply = Gateway([url.removeprefix("etcd://")]).call("/v3/kv/range", {
                "key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(prefix[:-1] + b"0").decode(),
                "keys_only": True})
            keys = {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[-1] for kv in reply.get("kvs", [])}
            assert keys == {"web-1", "web-2", "client", "duo"}
            ip = json.loads(kubectl(name, "get", "svc", "web", "-o", "json").stdout)["spec"]["clusterIP"]
            assert http(name, "client", f"http://{ip}/hostname").stdout \
                in ("web-1", "web-2")
        finally:
            cli(name, "down")


PROBED = """
apiVersion: v1
kind: Pod
metadata: {name: PODNAME, labels: {app: probed}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: echo
    image: netplane/echo
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {PROBE, periodSeconds: 1, failureThreshold: 1}
"""


def slice_conditions(lab: str, service: str) -> dict[str, dict]:
    slices = json.loads(kubectl(lab, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}",
                                "-o", "json").stdout)["items"]
    return {e["targetRef"]["name"]: e["conditions"] for s in slices for e in s["endpoints"] or []}


def test_readiness_probes_decide_the_endpoints(lab):
    good = PROBED.replace("PODNAME", "probed-good").replace("PROBE", "httpGet: {path: /healthz, port: http}")
    tcp = PROBED.replace("PODNAME", "probed-tcp").replace("PROBE", "tcpSocket: {port: 8080}")
    execd = PROBED.replace("PODNAME", "probed-exec").replace("PROBE", "exec: {command: [sh, -c, 'exit 0']}")
    bad = PROBED.replace("PODNAME", "probed-bad").replace("PROBE", "httpGet: {path: /healthz, port: 9999}")
    service = ("apiVersion: v1\nkind: Service\nmetadata: {name: probed}\n"
               "spec: {selector: {app: probed}, ports: [{port: 80, targetPort: 8080}]}\n")
    kubectl(lab, "apply", "-f", "-", stdin="---\n".join([good, tcp, execd, bad, service]))
    conditions = eventually(lambda: (c := slice_conditions(lab, "probed")) and len(c) == 4
                            and c["probed-good"]["ready"] and c["probed-tcp"]["ready"] and c["probed-exec"]["ready"]
                            and c, timeout=30)
    assert conditions["probed-bad"]["ready"] is False
    pod = json.loads(kubectl(lab, "get", "pod", "probed-bad", "-o", "json").stdout)
    assert pod["status"]["phase"] == "Running" and pod["status"]["containerStatuses"][0]["ready"] is False
    assert "0/1" in kubectl(lab, "get", "pod", "probed-bad").stdout
    # graceful termination: the endpoint is terminating until the pod has stopped, then it is gone
    kubectl(lab, "delete", "pod", "probed-good", "--wait=false")
    going = eventually(lambda: (c := slice_conditions(lab, "probed").get("probed-good")) and c["terminating"] and c)
    assert going["ready"] is False
    eventually(lambda: "probed-good" not in slice_conditions(lab, "probed"), timeout=20)
    assert kubectl(lab, "get", "pod", "probed-good", check=False).returncode == 1
    kubectl(lab, "delete", "-f", "-", stdin="---\n".join([tcp, execd, bad, service]))


def test_a_container_that_exits_is_restarted(lab):
    """As upstream's kubelet: the first restart at once, then CrashLoopBackOff (10 s, doubling), with
    the real exit code in lastState."""
    crasher = ("apiVersion: v1\nkind: Pod\nmetadata: {name: crasher}\n"
               "spec: {containers: [{name: c, image: busybox, command: [sh, -c, 'sleep 0.5; exit 3']}]}\n")
    kubectl(lab, "apply", "-f", "-", stdin=crasher)

    def container() -> dict:
        return json.loads(kubectl(lab, "get", "pod", "crasher", "-o", "json").stdout)["status"]["containerStatuses"][0]

    backing_off = eventually(lambda: (c := container())["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
                             and c, timeout=20)
    assert backing_off["lastState"]["terminated"]["exitCode"] == 3
    assert backing_off["lastState"]["terminated"]["reason"] == "Error"
    assert backing_off["restartCount"] == 1  # it ran twice: once, then at once again
    assert "back-off 10s restarting failed container=c pod=crasher_default" in backing_off["state"]["waiting"]["message"]
    assert "CrashLoopBackOff" in kubectl(lab, "get", "pod", "crasher").stdout
    assert eventually(lambda: container()["restartCount"] == 2, timeout=20)
    kubectl(lab, "delete", "pod", "crasher", "--grace-period=0", "--force")


PROXIED = """
apiVersion: v1
kind: Pod
metadata: {name: px, labels: {app: px}}
spec:
  nodeName: node-2
  containers: [{name: echo, image: netplane/echo, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: px}
spec:
  selector: {app: px}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def test_kubectl_proxy_reaches_a_pod_and_a_service_through_the_labs_data_plane(lab):
    """The Kubernetes Basics tutorial's step: `kubectl proxy`, then the pod at
    /api/v1/namespaces/default/pods/NAME/proxy/; the API server's connection starts in a node's
    namespace and crosses the overlay to the pod on node-2."""
    import urllib.request
    kubectl(lab, "apply", "-f", "-", stdin=PROXIED)
    kubectl(lab, "wait", "--for=condition=Ready", "pod/px", "--timeout=60s")
    eventually(lambda: endpoints(lab, "px"))
    proxy = subprocess.Popen(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), "proxy", "--port=0"],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(proxy.stdout.readline().strip().rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:  # the seeds' first look
            assert {"/api", "/api/v1", "/apis", "/openapi/v3", "/version"} <= set(json.loads(resp.read())["paths"])
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default"
        for path in ("pods/px/proxy/hostname", "pods/px:8080/proxy/hostname", "services/px:http/proxy/hostname"):
            with urllib.request.urlopen(f"{base}/{path}", timeout=10) as resp:
                assert resp.read().decode() == "px", path
    finally:
        proxy.terminate()
        proxy.wait(10)
    kubectl(lab, "delete", "-f", "-", stdin=PROXIED)



def test_every_namespace_gets_a_default_service_account_and_the_root_ca(lab):
    """As kube-controller-manager's serviceaccount and root-ca-cert-publisher controllers: made in a
    new namespace, made again when deleted, put back when changed."""
    ca = LabState(lab).kubeconfig.read_text()
    kubectl(lab, "create", "namespace", "team-a")
    try:
        def published(ns: str) -> bool:
            got = kubectl(lab, "get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "json", check=False)
            if got.returncode:
                return False
            pem = json.loads(got.stdout)["data"]["ca.crt"]
            return base64.b64encode(pem.encode()).decode() in ca  # the kubeconfig's certificate-authority-data

        for ns in ("default", "kube-system", "team-a"):
            assert eventually(lambda: kubectl(lab, "get", "serviceaccount", "default", "-n", ns,
                                              check=False).returncode == 0), ns
            assert eventually(lambda: published(ns)), ns
        kubectl(lab, "delete", "serviceaccount", "default", "-n", "team-a")
        kubectl(lab, "patch", "configmap", "kube-root-ca.crt", "-n", "team-a", "-p", '{"data":{"ca.crt":"x"}}')
        assert eventually(lambda: kubectl(lab, "get", "serviceaccount", "default", "-n", "team-a",
                                          check=False).returncode == 0)
        assert eventually(lambda: published("team-a"))
        listed = kubectl(lab, "get", "serviceaccounts", "-n", "team-a").stdout.split("\n")
        assert listed[0].split() == ["NAME", "SECRETS", "AGE"] and listed[1].split()[:2] == ["default", "0"]
    finally:
        kubectl(lab, "delete", "namespace", "team-a", "--wait=false")
