"""Pure decisions of the workload controllers, the garbage collector and node lifecycle."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from netplane.api import objects
from netplane.controllers import daemonset, deployment, gc, nodelifecycle, replicaset, workloads
from support.objects import pod as echo_pod


def owner(kind="ReplicaSet", name="web-abc", replicas=3, uid="rs-uid", template=None, selector=None):
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "default", "uid": uid,
                                                                "generation": 2},
            "spec": {"replicas": replicas, "selector": selector or {"matchLabels": {"app": "web"}},
                     "template": template or {"metadata": {"labels": {"app": "web"}},
                                              "spec": {"containers": [{"name": "c", "image": "netplane/echo"}]}}}}


def pod(name, owner_obj=None, node="node-1", ready=True, phase="Running", created="2026-01-01T00:00:00Z", **meta):
    """A web Pod in `phase`, owned by owner_obj when given, with more metadata from `meta`."""
    p = echo_pod(name, {"app": "web"}, node, status={
        "phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]})
    p["metadata"] |= {"creationTimestamp": created, **meta}
    if owner_obj:
        p["metadata"]["ownerReferences"] = [workloads.controller_ref(owner_obj)]
    return p


def test_label_selectors_with_expressions():
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                                               {"key": "canary", "operator": "DoesNotExist"}]}
    assert objects.matches(sel, {"app": "web", "tier": "a"})
    assert not objects.matches(sel, {"app": "web", "tier": "c"})
    assert not objects.matches(sel, {"app": "web", "tier": "a", "canary": "1"})
    assert not objects.matches({}, {"app": "web"})
    assert workloads.selector_string(sel) == "app=web,tier in (a,b),!canary"


def test_replicaset_creates_the_missing_and_deletes_the_worst_surplus():
    rs = owner(replicas=3)
    assert replicaset.plan(rs, [pod("a", rs)]).create == 2
    mine = [pod("old", rs, created="2026-01-01T00:00:00Z"), pod("new", rs, created="2026-01-02T00:00:00Z"),
            pod("unready", rs, ready=False), pod("pending", rs, node=None, phase="Pending", ready=False), pod("stranger")]
    p = replicaset.plan({**rs, "spec": {**rs["spec"], "replicas": 2}}, mine)
    assert p.create == 0 and [x["metadata"]["name"] for x in p.delete] == ["pending", "unready"]
    assert p.status["replicas"] == 4 and p.status["readyReplicas"] == 2 and p.status["observedGeneration"] == 2
    terminating = pod("going", rs, deletionTimestamp="2026-01-01T00:00:00Z")
    assert replicaset.plan(rs, [terminating]).create == 3  # a terminating pod no longer counts


def test_expectations_wait_for_the_cache():
    e = workloads.Expectations(timeout=60)
    created = pod("a")
    e.expect("uid", [created], [])
    assert not e.satisfied("uid", {})
    assert e.satisfied("uid", {("default", "a"): created})
    e.expect("uid", [], [created])
    assert not e.satisfied("uid", {("default", "a"): created})
    assert e.satisfied("uid", {("default", "a"): pod("a", deletionTimestamp="x")})


def rsv(name, replicas, ready, revision):
    return deployment.RSView(name, replicas, replicas, ready, revision)


def test_rolling_update_moves_replicas_within_surge_and_unavailability():
    # 4 replicas, surge 1, unavailable 1, all 4 on the old ReplicaSet: one old pod may go (4 ready,
    # 3 must stay), and the new one may grow to the surge limit (5 pods in all)
    assert deployment.rolling_targets(4, 1, 1, rsv("new", 0, 0, 2), [rsv("old", 4, 4, 1)]) == {"new": 2, "old": 3}
    # the new pods are not ready yet: nothing more moves
    assert deployment.rolling_targets(4, 1, 1, rsv("new", 2, 0, 2), [rsv("old", 3, 3, 1)]) == {"new": 2, "old": 3}
    # one new pod is ready: one more old one may go, one more new one may come
    assert deployment.rolling_targets(4, 1, 1, rsv("new", 2, 1, 2), [rsv("old", 3, 3, 1)]) == {"new": 3, "old": 2}
    # old pods that are not ready go at once, they cost no availability
    assert deployment.rolling_targets(4, 1, 1, rsv("new", 2, 2, 2), [rsv("old", 2, 0, 1)])["old"] == 0
    assert deployment.rolling_targets(4, 1, 1, rsv("new", 4, 4, 2), [rsv("old", 0, 0, 1)]) == {"new": 4, "old": 0}


def test_scaling_a_finished_deployment_scales_its_replicaset():
    assert deployment.rolling_targets(1, 1, 0, rsv("new", 3, 3, 1), []) == {"new": 1}
    assert deployment.rolling_targets(5, 2, 1, rsv("new", 3, 3, 1), []) == {"new": 5}


def test_surge_and_unavailable_round_like_upstream():
    d = owner("Deployment", replicas=10)
    assert deployment.surge_and_unavailable(d) == (3, 2)  # 25% up, 25% down
    d["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}
    assert deployment.surge_and_unavailable(d) == (0, 1)


def test_recreate_waits_for_old_pods_to_be_gone():
    assert deployment.recreate_targets(3, rsv("new", 0, 0, 2), [rsv("old", 3, 3, 1)]) == {"new": 0, "old": 0}
    assert deployment.recreate_targets(3, rsv("new", 0, 0, 2), [rsv("old", 0, 0, 1)]) == {"new": 3, "old": 0}


def test_new_replicaset_carries_the_template_hash():
    d = owner("Deployment", name="web", uid="d-uid")
    rs = deployment.new_replicaset(d, 3)
    digest = workloads.template_hash(d["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{digest}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": digest}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == digest
    assert rs["metadata"]["annotations"][deployment.REVISION] == "3"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "d-uid"


def ready_node(name, labels=None, ready=True):
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_daemonset_runs_one_pod_per_eligible_node():
    ds = owner("DaemonSet", name="agent", uid="ds-uid")
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"role": "edge"}
    nodes = [ready_node("n1", {"role": "edge"}), ready_node("n2", {"role": "edge"}), ready_node("n3"),
             ready_node("n4", {"role": "edge"}, ready=False)]
    current = pod("agent-x", ds, node="n1", **{"labels": {daemonset.REVISION_LABEL: workloads.template_hash(ds["spec"]["template"])}})
    stray = pod("agent-y", ds, node="n3")
    p = daemonset.plan(ds, nodes, [current, stray])
    assert p.create_on == ["n2"] and [x["metadata"]["name"] for x in p.delete] == ["agent-y"]
    assert p.status["desiredNumberScheduled"] == 2 and p.status["numberMisscheduled"] == 1


def test_daemonset_replaces_outdated_pods_one_at_a_time():
    ds = owner("DaemonSet", name="agent", uid="ds-uid")
    nodes = [ready_node("n1"), ready_node("n2")]
    old = [pod(f"agent-{n}", ds, node=n, **{"labels": {daemonset.REVISION_LABEL: "old"}}) for n in ("n1", "n2")]
    assert [x["spec"]["nodeName"] for x in daemonset.plan(ds, nodes, old).delete] == ["n1"]


def test_orphans_are_those_whose_controller_is_unknown():
    rs = owner()
    kept, orphan = pod("kept", rs), pod("orphan", owner(uid="gone"))
    found = gc.orphans([kept, orphan, pod("free")], {"ReplicaSet": {"rs-uid"}})
    assert [(o["metadata"]["name"], ref["uid"]) for o, ref in found] == [("orphan", "gone")]


def test_a_node_whose_lease_expired_is_unknown_and_its_pods_not_ready():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fresh = {"spec": {"renewTime": (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
    stale = {"spec": {"renewTime": (now - timedelta(seconds=50)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
    assert not nodelifecycle.lease_expired(fresh, now, 40)
    assert nodelifecycle.lease_expired(stale, now, 40)
    assert not nodelifecycle.lease_expired(None, now, 40)
    conditions = nodelifecycle.unknown_conditions(ready_node("n1"), "t")
    assert conditions[0]["status"] == "Unknown" and conditions[0]["reason"] == "NodeStatusUnknown"
    assert nodelifecycle.unknown_conditions({"status": {"conditions": conditions}}, "t") is None
    marked = nodelifecycle.not_ready_conditions(pod("p"), "t")
    assert marked == [{"type": "Ready", "status": "False", "reason": "NodeNotReady", "lastTransitionTime": "t"}]
    assert nodelifecycle.not_ready_conditions({"status": {"conditions": marked}}, "t") is None
