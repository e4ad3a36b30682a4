"""The scheduler's filters, scores and messages, the taints nodes get and pods tolerate, eviction for
NoExecute taints, and the disruption budgets' arithmetic, as pure decisions."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from netplane.controllers import daemonset, disruption, nodelifecycle, scheduler, tainteviction
from netplane.controllers.scheduling import fit
from netplane.controllers.scheduling import taints as tt

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc)


def node(name: str, ready: bool = True, cpu: str = "2", memory: str = "4Gi", pods: str = "110", taints=(),
         unschedulable: bool = False, **labels) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "spec": {"taints": list(taints), **({"unschedulable": True} if unschedulable else {})},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}}


def pod(name: str, on: str | None = None, cpu: str | None = None, labels=None, namespace: str = "default",
        **spec) -> dict:
    resources = {"requests": {"cpu": cpu}} if cpu else {}
    return {"metadata": {"name": name, "namespace": namespace, "uid": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": resources}],
                     **({"nodeName": on} if on else {}), **spec},
            "status": {"phase": "Running" if on else "Pending"}}


def place(p: dict, nodes: list[dict], pods=()) -> tuple[str | None, str]:
    cluster = fit.Cluster(nodes, list(pods), {"default": {"kubernetes.io/metadata.name": "default"},
                                              "web": {"team": "web"}})
    chosen, verdicts = scheduler.place(p, cluster)
    return chosen, (fit.message(verdicts, len(nodes)) if chosen is None else "")


def test_tolerations_match_taints_as_upstream_matches_them():
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert tt.tolerates({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, taint)
    assert tt.tolerates({"key": "dedicated", "operator": "Exists"}, taint)
    assert tt.tolerates({"operator": "Exists"}, taint)  # an empty key with Exists tolerates everything
    assert not tt.tolerates({"key": "dedicated", "value": "cpu"}, taint)
    assert not tt.tolerates({"key": "dedicated", "value": "gpu", "effect": "NoExecute"}, taint)
    assert not tt.tolerates({"value": "gpu"}, taint)


def test_the_reasons_no_node_fits_are_counted_in_the_schedulers_words():
    nodes = [node("node-1", cpu="1"), node("node-2", taints=[{"key": "dedicated", "value": "gpu",
                                                              "effect": "NoSchedule"}]),
             node("node-3", ready=False)]
    chosen, message = place(pod("big", cpu="1500m"), nodes, [pod("small", "node-1", cpu="100m")])
    assert chosen is None
    assert message == ("0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
                       "{dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
                       "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
                       "2 Preemption is not helpful for scheduling.")
    tolerant = pod("gpu", cpu="1500m", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert place(tolerant, nodes)[0] == "node-2"
    _, message = place(pod("x"), [node("node-1", unschedulable=True), node("node-2", pods="1")],
                       [pod("y", "node-2")])
    assert message == ("0/2 nodes are available: 1 Too many pods, 1 node(s) were unschedulable. preemption: 0/2 "
                       "nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not "
                       "helpful for scheduling.")


def test_node_selectors_and_node_affinity_pick_nodes():
    nodes = [node("node-1", disktype="ssd", zone="a"), node("node-2", disktype="hdd", zone="b"),
             node("node-3", zone="c")]
    assert place(pod("p", nodeSelector={"disktype": "ssd"}), nodes)[0] == "node-1"
    required = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "c"]},
                              {"key": "disktype", "operator": "DoesNotExist"}]}]}}}
    assert place(pod("p", affinity=required), nodes)[0] == "node-3"
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}
    assert place(pod("p", affinity=preferred), nodes)[0] == "node-2"
    _, message = place(pod("p", nodeSelector={"disktype": "nvme"}), nodes)
    assert message.startswith("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


def test_pod_affinity_and_anti_affinity_by_topology():
    nodes = [node("node-1", zone="a"), node("node-2", zone="a"), node("node-3", zone="b")]
    cache = pod("cache", "node-1", labels={"app": "cache"})
    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}
    assert place(pod("web", affinity=near), nodes, [cache, pod("busy", "node-1")])[0] == "node-2"
    apart = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    webs = [pod(f"web-{i}", f"node-{i}", labels={"app": "web"}) for i in (1, 2)]
    assert place(pod("web-3", labels={"app": "web"}, affinity=apart), nodes, webs)[0] == "node-3"
    _, message = place(pod("web-4", labels={"app": "web"}, affinity=apart), nodes,
                       webs + [pod("web-3", "node-3", labels={"app": "web"})])
    assert "3 node(s) didn't match pod anti-affinity rules" in message
    # an existing pod's anti-affinity keeps others of its selector away
    loner = pod("loner", "node-3", labels={"app": "loner"}, affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}},
                                                            "topologyKey": "zone"}]}})
    assert place(pod("web", labels={"app": "web"}, nodeSelector={"zone": "b"}), nodes, [loner])[1].startswith(
        "0/3 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, 2 node(s) didn't "
        "match Pod's node affinity/selector.")
    # the first pod of a group that wants to be near its own kind may go anywhere
    assert place(pod("first", labels={"app": "cache"}, affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "cache"}},
                                                            "topologyKey": "zone"}]}}), nodes)[0] is not None


def test_topology_spread_constraints_limit_the_skew():
    nodes = [node("node-1", zone="a"), node("node-2", zone="b"), node("node-3")]
    spread = [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    placed = [pod("w1", "node-1", labels={"app": "web"})]
    chosen, _ = place(pod("w2", labels={"app": "web"}, topologySpreadConstraints=spread), nodes, placed)
    assert chosen == "node-2"
    nodes[1]["spec"]["taints"] = [{"key": "full", "effect": "NoSchedule"}]  # zone b still counts, with 0 pods
    _, message = place(pod("w2", labels={"app": "web"}, topologySpreadConstraints=spread), nodes, placed)
    assert message.startswith("0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, "
                              "1 node(s) didn't match pod topology spread constraints (missing required label), "
                              "1 node(s) had untolerated taint {full: }.")


def test_the_least_loaded_node_wins_and_prefer_no_schedule_is_avoided():
    nodes = [node("node-1"), node("node-2"), node("node-3", taints=[{"key": "old", "effect": "PreferNoSchedule"}])]
    assert place(pod("p"), nodes, [pod("a", "node-1")])[0] == "node-2"
    assert place(pod("p"), nodes, [pod("a", "node-1"), pod("b", "node-2")])[0] in ("node-1", "node-2")
    assert place(pod("p", cpu="1"), [node("node-1", cpu="4"), node("node-2", cpu="2")])[0] == "node-1"


def test_node_lifecycle_taints_follow_the_nodes_state():
    stamp = "2026-12-05T10:00:00Z"
    down = node("node-1", ready=False)
    assert nodelifecycle.tainted(down, stamp) == [
        {"key": tt.NOT_READY, "effect": "NoSchedule"}, {"key": tt.NOT_READY, "effect": "NoExecute", "timeAdded": stamp}]
    gone = node("node-1", taints=[{"key": "mine", "effect": "NoSchedule"}, {"key": tt.NOT_READY, "effect": "NoSchedule"},
                                  {"key": tt.NOT_READY, "effect": "NoExecute", "timeAdded": stamp}])
    gone["status"]["conditions"][0]["status"] = "Unknown"
    assert [t["key"] for t in nodelifecycle.tainted(gone, stamp)] == ["mine", tt.UNREACHABLE, tt.UNREACHABLE]
    assert nodelifecycle.tainted(node("node-1", unschedulable=True), stamp) == [
        {"key": tt.UNSCHEDULABLE, "effect": "NoSchedule"}]
    assert nodelifecycle.tainted(node("node-1"), stamp) is None
    back = node("node-1", taints=[{"key": tt.UNSCHEDULABLE, "effect": "NoSchedule"}])
    assert nodelifecycle.tainted(back, stamp) == []


def test_no_execute_taints_evict_at_once_or_after_the_toleration_seconds():
    tainted = node("node-1", taints=[{"key": "maintenance", "effect": "NoExecute", "timeAdded": "2026-12-05T09:59:00Z"}])
    assert tainteviction.eviction_time(pod("p", "node-1"), tainted, NOW) == NOW
    patient = pod("p", "node-1", tolerations=[{"key": "maintenance", "operator": "Exists", "effect": "NoExecute",
                                              "tolerationSeconds": 300}])
    assert tainteviction.eviction_time(patient, tainted, NOW) == NOW + timedelta(seconds=240)
    forever = pod("p", "node-1", tolerations=[{"key": "maintenance", "operator": "Exists"}])
    assert tainteviction.eviction_time(forever, tainted, NOW) is None
    assert tainteviction.eviction_time(pod("p", "node-1"), node("node-1"), NOW) is None


def test_daemon_pods_tolerate_cordoned_nodes_but_not_other_taints():
    ds = {"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"containers": []}}}}
    assert daemonset.eligible(ds, node("node-1", unschedulable=True))
    assert not daemonset.eligible(ds, node("node-1", ready=False))
    assert not daemonset.eligible(ds, node("node-1", taints=[{"key": "gpu", "effect": "NoSchedule"}]))


def budget(**spec) -> dict:
    return {"metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


def ready(name: str, is_ready: bool = True) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(is_ready)}]}}


def test_a_disruption_budget_allows_what_its_healthy_pods_can_spare():
    pods = [ready("a"), ready("b"), ready("c", False)]
    status = disruption.budget_status(budget(minAvailable=1), pods, 3, NOW)
    assert (status["currentHealthy"], status["desiredHealthy"], status["expectedPods"], status["disruptionsAllowed"]) \
        == (2, 1, 3, 1)
    assert status["conditions"][0]["reason"] == "SufficientPods"
    status = disruption.budget_status(budget(maxUnavailable="50%"), pods, 4, NOW)
    assert (status["desiredHealthy"], status["disruptionsAllowed"]) == (2, 0)
    assert status["conditions"][0] | {"lastTransitionTime": ""} == {
        "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
        "observedGeneration": 1, "lastTransitionTime": ""}
    taken = budget(minAvailable=1)
    taken["status"] = {"disruptedPods": {"a": "2026-12-05T09:59:30Z", "gone": "2026-12-05T09:59:30Z"}}
    status = disruption.budget_status(taken, pods, 3, NOW)
    assert status["disruptedPods"] == {"a": "2026-12-05T09:59:30Z"} and status["disruptionsAllowed"] == 0


def test_a_higher_priority_pod_preempts_the_fewest_and_lowest_pods():
    from netplane.controllers.scheduling import preemption
    nodes = [node("node-1", cpu="2"), node("node-2", cpu="2")]
    low = [pod("low-a", "node-1", cpu="1", priority=10), pod("low-b", "node-1", cpu="1", priority=20),
           pod("mid", "node-2", cpu="1500m", priority=500), pod("small", "node-2", cpu="500m", priority=5)]
    urgent = pod("urgent", cpu="1", priority=1000)
    cluster = fit.Cluster(nodes, low)
    chosen, verdicts = scheduler.place(urgent, cluster)
    assert chosen is None
    candidate = preemption.choose(urgent, cluster, verdicts)
    # node-1 loses one pod of priority 10 (low-b, 20, is spared); node-2 would lose one of 500
    assert candidate.node == "node-1" and [v["metadata"]["name"] for v in candidate.victims] == ["low-a"]
    assert preemption.choose({**urgent, "spec": {**urgent["spec"], "preemptionPolicy": "Never"}}, cluster,
                             verdicts) is None
    assert preemption.choose(pod("peer", cpu="1", priority=5), cluster, verdicts) is None  # none lower on node-1
    leaving = [dict(low[0], metadata={**low[0]["metadata"], "deletionTimestamp": "x"}), *low[1:]]
    assert preemption.waiting_for_victims(urgent, fit.Cluster(nodes, leaving), "node-1")
    assert scheduler.place(urgent, fit.Cluster(nodes, low[1:]), "node-1")[0] == "node-1"


def test_an_eviction_the_budget_cannot_afford_is_429_and_one_it_can_takes_a_disruption(tmp_path):
    import asyncio

    import aiohttp

    from netplane.api.errors import ApiError
    from netplane.controllers import manager
    from support.api import serving
    from support.objects import pod as echo_pod

    async def main():
        async with serving(tmp_path, admit=manager.admission("10.96.0.0/16")) as (store, api, port):
            await manager.system_objects(api)
            await api.create("serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}})
            for name in ("a", "b"):
                p = echo_pod(name, {"app": "web"}, "node-1", status={
                    "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
                created = await api.create("pods", p)
                await api.update_status("pods", {**created, "status": p["status"]})
            pdb = await api.create("poddisruptionbudgets", {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                                            "metadata": {"name": "web", "namespace": "default"},
                                                            "spec": {"minAvailable": 2, "selector": {
                                                                "matchLabels": {"app": "web"}}}})
            pods = [await api.get("pods", n, "default") for n in ("a", "b")]
            status = disruption.budget_status(pdb, pods, 2, NOW)
            await api.update_status("poddisruptionbudgets", {**pdb, "status": status})
            async def evict(name: str) -> tuple[int, dict]:
                body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}
                async with aiohttp.ClientSession() as session:
                    async with session.post(f"http://127.0.0.1:{port}/api/v1/namespaces/default/pods/{name}/eviction",
                                            json=body) as resp:
                        return resp.status, await resp.json()
            code, status = await evict("a")
            assert (code, status["reason"], status["message"]) == (
                429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
            assert status["details"] == {"causes": [{"reason": "DisruptionBudget", "message":
                                                     "The disruption budget web needs 2 healthy pods and has 2 currently"}]}
            pdb = await api.get("poddisruptionbudgets", "web", "default")
            await api.update_status("poddisruptionbudgets", {**pdb, "status": {**pdb["status"], "desiredHealthy": 1,
                                                                               "disruptionsAllowed": 1}})
            assert (await evict("a"))[0] == 201
            gone = await api.get("pods", "a", "default")
            assert "deletionTimestamp" in gone["metadata"]
            assert any(c["type"] == "DisruptionTarget" and c["reason"] == "EvictionByEvictionAPI"
                       for c in gone["status"]["conditions"])
            taken = (await api.get("poddisruptionbudgets", "web", "default"))["status"]
            assert taken["disruptionsAllowed"] == 0 and set(taken["disruptedPods"]) == {"a"}
            # priorities: the system classes exist; a class's value becomes a new pod's priority
            classes = {c["metadata"]["name"]: c["value"] for c in (await api.list("priorityclasses"))["items"]}
            assert classes == {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}
            await api.create("priorityclasses", {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                 "metadata": {"name": "usual"}, "value": 7, "globalDefault": True})
            plain = await api.create("pods", echo_pod("c", {"app": "x"}))
            assert (plain["spec"]["priority"], plain["spec"]["priorityClassName"]) == (7, "usual")
            refused = [
                ("priorityclasses", {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                     "metadata": {"name": "system-mine"}, "value": 10},
                 "priority class names with 'system-' prefix are reserved"),
                ("priorityclasses", {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                     "metadata": {"name": "other"}, "value": 8, "globalDefault": True},
                 "PriorityClass usual is marked as default. Only one default can exist"),
                ("pods", {**echo_pod("self-made", {}), "spec": {**echo_pod("x", {})["spec"], "priority": 2000000000}},
                 "the integer value of priority (2000000000) must not be provided in pod spec; priority admission "
                 "controller computed 7 from the given PriorityClass name"),
            ]
            for plural, obj, words in refused:
                try:
                    await api.create(plural, obj)
                    raise AssertionError(f"{plural} taken: {obj}")
                except ApiError as err:
                    assert words in str(err.message)

    asyncio.run(main())


def test_requests_and_limits_are_quantities_and_a_request_is_no_more_than_its_limit():
    from netplane.api import resources, validation
    bad = pod("p")
    bad["spec"]["containers"][0]["resources"] = {"requests": {"memory": "128MB", "cpu": "2"}, "limits": {"cpu": "1"}}
    found = [f"{p.field}: {p.body()}" for p in validation.problems(resources.by_kind("Pod"), bad)]
    assert found == [
        'spec.containers[0].resources.requests[memory]: Invalid value: "128MB": quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1']


def test_a_node_gone_not_ready_keeps_its_daemon_pods():
    ds = {"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"containers": []}}}}
    down = node("node-1", ready=False)
    assert not daemonset.eligible(ds, down) and daemonset.eligible(ds, down, running=True)
    evicting = node("node-1", taints=[{"key": "maintenance", "effect": "NoExecute"}])
    assert not daemonset.eligible(ds, evicting, running=True)
