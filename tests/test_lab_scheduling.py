"""Scheduling on a three-node lab (zones a, a, b; node-3 reports 1 cpu and 20 pods): taints and
tolerations with their three effects, the reasons a pod stays Pending, affinity and spreading,
priorities and preemption, and cordon and drain through the Eviction API with a disruption budget,
driven by kubectl as the seeds' reader would type it."""
from __future__ import annotations

import json
import time

import pytest

from conftest import on_labs
from labtools import eventually, kubectl, official_client

pytestmark = on_labs("three-nodes")


def a_pod(name: str, cpu: str | None = None, **spec) -> str:
    container = {"name": "main", "image": "busybox", "command": ["sleep", "3600"],
                 **({"resources": {"requests": {"cpu": cpu}}} if cpu else {})}
    labels = spec.pop("labels", {"app": name})
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                       "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec}})


def deployment(name: str, replicas: int, **spec) -> str:
    container = {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                       "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}},
                                             "spec": {"containers": [container], "terminationGracePeriodSeconds": 1,
                                                      **spec}}}})


def pods(lab: str, selector: str) -> list[dict]:
    return json.loads(kubectl(lab, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]


def nodes_of(lab: str, selector: str) -> list[str | None]:
    return sorted((p["spec"].get("nodeName") for p in pods(lab, selector)), key=lambda n: (n is None, n or ""))


def running(lab: str, selector: str, count: int) -> list[dict]:
    found = [p for p in pods(lab, selector) if p["status"].get("phase") == "Running"
             and "deletionTimestamp" not in p["metadata"]]
    return found if len(found) == count else []


def failed_scheduling(lab: str, pod: str) -> str:
    events = json.loads(kubectl(lab, "get", "events", "--field-selector", f"involvedObject.name={pod}",
                                "-o", "json").stdout)["items"]
    return next((e["message"] for e in events if e["reason"] == "FailedScheduling"), "")


@pytest.fixture
def made(lab):
    """Objects (kind, name) a test made, and node changes to undo: deleted or undone afterwards."""
    objects: list[tuple[str, str]] = []
    yield objects
    for kind, name in reversed(objects):
        if kind == "taint":
            kubectl(lab, "taint", "nodes", "node-3", f"{name}-", check=False)
        elif kind == "uncordon":
            kubectl(lab, "uncordon", name, check=False)
        else:
            kubectl(lab, "delete", kind, name, "--ignore-not-found", "--grace-period=1", check=False)


def test_a_pod_that_fits_nowhere_stays_pending_and_says_why(lab, made):
    made += [("pod", "greedy"), ("pod", "picky")]
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("greedy", cpu="64"))
    message = eventually(lambda: failed_scheduling(lab, "greedy"))
    assert message == ("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: "
                       "3 No preemption victims found for incoming pod.")
    pod = json.loads(kubectl(lab, "get", "pod", "greedy", "-o", "json").stdout)
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (scheduled["status"], scheduled["reason"], scheduled["message"]) == ("False", "Unschedulable", message)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    described = kubectl(lab, "describe", "pod", "greedy").stdout
    assert "FailedScheduling" in described and "Insufficient cpu" in described
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("picky", nodeSelector={"disktype": "ssd"}))
    assert eventually(lambda: failed_scheduling(lab, "picky")).startswith(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")
    # a node that gets the label takes it
    kubectl(lab, "label", "node", "node-2", "disktype=ssd")
    try:
        assert eventually(lambda: nodes_of(lab, "app=picky") == ["node-2"])
    finally:
        kubectl(lab, "label", "node", "node-2", "disktype-")


def test_taints_keep_pods_off_tolerations_let_them_on_and_no_execute_moves_them(lab, made):
    made += [("taint", "dedicated"), ("deployment", "spread"), ("pod", "tolerant"), ("pod", "brief"),
             ("taint", "maintenance")]
    kubectl(lab, "taint", "nodes", "node-3", "dedicated=db:NoSchedule")
    node = json.loads(kubectl(lab, "get", "node", "node-3", "-o", "json").stdout)
    assert {"key": "dedicated", "value": "db", "effect": "NoSchedule"} in node["spec"]["taints"]
    kubectl(lab, "apply", "-f", "-", stdin=deployment("spread", 4))
    assert eventually(lambda: running(lab, "app=spread", 4), timeout=30)
    assert set(nodes_of(lab, "app=spread")) == {"node-1", "node-2"}
    tolerate = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("tolerant", tolerations=tolerate, nodeSelector={
        "kubernetes.io/hostname": "node-3"}))
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("brief", nodeSelector={"kubernetes.io/hostname": "node-3"},
                                                 tolerations=tolerate + [{"key": "maintenance", "operator": "Exists",
                                                                          "effect": "NoExecute",
                                                                          "tolerationSeconds": 3}]))
    assert eventually(lambda: running(lab, "app=tolerant", 1) and running(lab, "app=brief", 1), timeout=30)
    # NoExecute: the pod that does not tolerate it goes at once, the one that does for 3 s after that
    tainted_at = time.monotonic()
    kubectl(lab, "taint", "nodes", "node-3", "maintenance=now:NoExecute")
    eventually(lambda: not running(lab, "app=tolerant", 1), timeout=10)
    assert running(lab, "app=brief", 1)
    eventually(lambda: not running(lab, "app=brief", 1), timeout=15)
    assert time.monotonic() - tainted_at >= 2
    def evictions() -> set[str]:
        events = json.loads(kubectl(lab, "get", "events", "--field-selector", "reason=TaintManagerEviction",
                                    "-o", "json").stdout)["items"]
        return {e["message"] for e in events}
    eventually(lambda: evictions() >= {"Marking for deletion Pod default/tolerant",
                                       "Marking for deletion Pod default/brief"})


def test_affinity_and_topology_spread_place_replicas(lab, made):
    made += [("deployment", "apart"), ("deployment", "zonal")]
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "apart"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    kubectl(lab, "apply", "-f", "-", stdin=deployment("apart", 4, affinity=anti))
    assert eventually(lambda: running(lab, "app=apart", 3), timeout=30)
    assert nodes_of(lab, "app=apart")[:3] == ["node-1", "node-2", "node-3"]
    pending = eventually(lambda: next((p["metadata"]["name"] for p in pods(lab, "app=apart")
                                       if not p["spec"].get("nodeName")), None))
    assert eventually(lambda: failed_scheduling(lab, pending)).startswith(
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.")
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "zonal"}}}]
    kubectl(lab, "apply", "-f", "-", stdin=deployment("zonal", 4, topologySpreadConstraints=spread))
    assert eventually(lambda: running(lab, "app=zonal", 4), timeout=30)
    zones = [{"node-1": "a", "node-2": "a", "node-3": "b"}[n] for n in nodes_of(lab, "app=zonal")]
    assert sorted(zones) == ["a", "a", "b", "b"]


def test_a_higher_priority_pod_preempts_a_lower_one(lab, made):
    made += [("pod", "filler"), ("pod", "vip"), ("priorityclass", "vip")]
    kubectl(lab, "create", "priorityclass", "vip", "--value=1000", "--description=for tests")
    assert kubectl(lab, "get", "priorityclass", "vip", "--no-headers").stdout.split()[:3] == ["vip", "1000", "false"]
    here = {"kubernetes.io/hostname": "node-3"}
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("filler", cpu="700m", nodeSelector=here))
    assert eventually(lambda: running(lab, "app=filler", 1), timeout=30)
    kubectl(lab, "apply", "-f", "-", stdin=a_pod("vip", cpu="700m", nodeSelector=here, priorityClassName="vip"))
    vip = json.loads(kubectl(lab, "get", "pod", "vip", "-o", "json").stdout)
    assert vip["spec"]["priority"] == 1000 and vip["spec"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert eventually(lambda: running(lab, "app=vip", 1), timeout=40)
    assert not running(lab, "app=filler", 1)
    preempted = f"Preempted by pod {vip['metadata']['uid']} on node node-3"
    eventually(lambda: preempted in {e["message"] for e in json.loads(kubectl(
        lab, "get", "events", "--field-selector", "involvedObject.name=filler", "-o", "json").stdout)["items"]})
    from kubernetes import client
    assert client.SchedulingV1Api(official_client(lab)).read_priority_class("vip").value == 1000
    missing = kubectl(lab, "apply", "-f", "-", stdin=a_pod("nobody", priorityClassName="nope"), check=False)
    assert 'pods "nobody" is forbidden: no PriorityClass with name nope was found' in missing.stderr


def test_cordon_and_drain_honour_a_disruption_budget(lab, made):
    made += [("uncordon", "node-3"), ("deployment", "guarded"), ("pdb", "guarded")]
    kubectl(lab, "apply", "-f", "-", stdin=deployment("guarded", 2))
    assert eventually(lambda: running(lab, "app=guarded", 2), timeout=30)
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
              "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}}
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(budget))
    eventually(lambda: json.loads(kubectl(lab, "get", "pdb", "guarded", "-o", "json").stdout)
               .get("status", {}).get("currentHealthy") == 2)
    assert kubectl(lab, "get", "pdb", "guarded", "--no-headers").stdout.split()[:4] == ["guarded", "2", "N/A", "0"]
    victim = pods(lab, "app=guarded")[0]
    node = victim["spec"]["nodeName"]
    made.append(("uncordon", node))
    out = kubectl(lab, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force",
                  "--pod-selector=app=guarded", "--timeout=6s", check=False)
    assert out.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in out.stderr
    assert "SchedulingDisabled" in kubectl(lab, "get", "node", node).stdout
    assert victim["metadata"]["name"] in {p["metadata"]["name"] for p in running(lab, "app=guarded", 2)}
    # a budget that spares one lets the drain through; the replacement goes to another node
    from kubernetes import client
    read = client.PolicyV1Api(official_client(lab)).read_namespaced_pod_disruption_budget("guarded", "default")
    assert (read.status.current_healthy, read.status.desired_healthy, read.status.disruptions_allowed) == (2, 2, 0)
    kubectl(lab, "patch", "pdb", "guarded", "--type=merge", "-p", '{"spec":{"minAvailable":1}}')
    eventually(lambda: json.loads(kubectl(lab, "get", "pdb", "guarded", "-o", "json").stdout)
               ["status"].get("disruptionsAllowed") == 1)
    out = kubectl(lab, "drain", node, "--ignore-daemonsets", "--pod-selector=app=guarded", "--timeout=60s")
    assert f"pod/{victim['metadata']['name']} evicted" in out.stdout and f"node/{node} drained" in out.stdout
    assert eventually(lambda: running(lab, "app=guarded", 2), timeout=30)
    assert node not in nodes_of(lab, "app=guarded")
    taints = json.loads(kubectl(lab, "get", "node", node, "-o", "json").stdout)["spec"]["taints"]
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"} in \
        [{k: t[k] for k in ("key", "effect")} for t in taints]
    kubectl(lab, "uncordon", node)
    eventually(lambda: not json.loads(kubectl(lab, "get", "node", node, "-o", "json").stdout)["spec"].get("taints"))
