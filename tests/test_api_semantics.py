"""The API machinery real clients need: PATCH, Tables, chunked lists, scale and status, graceful
deletion and finalizers, dry run, generation, YAML bodies, field validation, watch bookmarks and
initial events, OpenAPI. Conventions for tests:

- pure modules (patch, tables, writes, schema, paging) are tested as functions first;
- then over real HTTP on loopback: each test runs its own event loop (``asyncio.run``) and starts
  its own server on port 0 with a SQLite store in ``tmp_path``; nothing is mocked;
- objects live in the ``default`` namespace; a pod with ``node`` set is bound (graceful deletion),
  one without is not (deleted at once); no controller runs, so nothing else changes objects.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
import yaml

from netplane.api import writes, openapi, paging, patch, protobuf, resources, schema, tables, times
from netplane.api.errors import ApiError, Gone
from netplane.api.writes import DeleteOptions
from support.api import Cluster, assert_status, serving, take
from support.objects import pod
from support.protobuf import field as _pb

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
POD = schema.for_kind("Pod")


def ago(seconds: float) -> str:
    return times.time_text(NOW - timedelta(seconds=seconds))


def deployment(name: str = "web", replicas: int = 2) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "echo", "image": "netplane/echo"}]}}}}


async def http(port: int, method: str, path: str, body: object = None, content_type: str = "application/json",
               accept: str | None = None) -> tuple[int, dict, list[str]]:
    """(status, JSON body, Warning headers) of one request; a str/bytes body is sent as is."""
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", data=data, headers=headers) as resp:
            return resp.status, json.loads(await resp.read()), resp.headers.getall("Warning", [])


PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


# -- JSON merge patch (RFC 7386) and JSON patch (RFC 6902)


@pytest.mark.parametrize("target, doc, result", [  # the examples of RFC 7386, appendix A
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_follows_rfc_7386(target, doc, result):
    assert patch.merge_patch(target, doc) == result


def test_json_patch_operations_and_pointers():
    doc = {"metadata": {"labels": {"a/b": "1", "m~n": "2"}}, "list": [1, 2, 3]}
    ops = [
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "add", "path": "/list/0", "value": 0},
        {"op": "remove", "path": "/list/1"},
        {"op": "replace", "path": "/metadata/labels/a~1b", "value": "x"},
        {"op": "copy", "from": "/metadata/labels/m~0n", "path": "/copied"},
        {"op": "move", "from": "/copied", "path": "/metadata/labels/moved"},
        {"op": "test", "path": "/list", "value": [0, 2, 3, 4]},
    ]
    out = patch.json_patch(doc, ops)
    assert out == {"metadata": {"labels": {"a/b": "x", "m~n": "2", "moved": "2"}}, "list": [0, 2, 3, 4]}
    assert doc["list"] == [1, 2, 3]  # the target is not changed
    for bad, code in [({"op": "test", "path": "/list/0", "value": True}, 422),  # 1 is not true in JSON
                      ({"op": "remove", "path": "/nope"}, 422), ({"op": "replace", "path": "/list/9", "value": 1}, 422),
                      ({"op": "add", "path": "/list/01", "value": 1}, 422), ({"op": "jump", "path": "/a"}, 400),
                      ({"op": "add", "path": "/a"}, 400), ({"op": "move", "from": "/metadata", "path": "/metadata/x"}, 422)]:
        with pytest.raises(ApiError) as e:
            patch.json_patch(doc, [bad])
        assert e.value.code == code, bad
    with pytest.raises(ApiError) as e:
        patch.json_patch(doc, {"op": "add"})
    assert e.value.code == 400


# -- strategic merge patch


def test_strategic_merge_merges_lists_by_their_keys():
    target = {"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "rs"}]},
              "spec": {"containers": [{"name": "app", "image": "v1", "ports": [{"containerPort": 80}],
                                       "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                                      {"name": "side", "image": "s1"}],
                       "volumes": [{"name": "data", "emptyDir": {}}],
                       "tolerations": [{"key": "a", "operator": "Exists"}]},
              "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}}
    doc = {"metadata": {"finalizers": ["b", "a"], "ownerReferences": [{"uid": "2", "name": "other"}]},
           "spec": {"containers": [{"name": "app", "image": "v2", "ports": [{"containerPort": 443}],
                                    "env": [{"name": "B", "value": "3"}],
                                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                    "tolerations": [{"key": "b", "operator": "Exists"}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = patch.strategic_merge_patch(target, doc, POD)
    app, side = out["spec"]["containers"]
    assert (app["image"], side["image"]) == ("v2", "s1")
    assert app["ports"] == [{"containerPort": 80}, {"containerPort": 443}]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert [m["mountPath"] for m in app["volumeMounts"]] == ["/data", "/cache"]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["data", "cache"]
    assert out["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]  # atomic: replaced
    assert out["metadata"]["finalizers"] == ["a", "b"]  # a set: merged
    assert [r["uid"] for r in out["metadata"]["ownerReferences"]] == ["1", "2"]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]
    svc = schema.for_kind("Service")
    ports = patch.strategic_merge_patch({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 81}]}},
                                        {"spec": {"ports": [{"port": 81, "name": "b"}]}}, svc)
    assert ports["spec"]["ports"] == [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]


def test_strategic_merge_directives():
    target = {"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y", "z"]},
              "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c"}],
                       "securityContext": {"runAsUser": 1}, "nodeSelector": {"k": "v"}}}
    doc = {"metadata": {"labels": {"b": None}, "$deleteFromPrimitiveList/finalizers": ["y"]},
           "spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                    "containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "image": "3"}],
                    "securityContext": {"$patch": "delete"},
                    "nodeSelector": {"$patch": "replace", "new": "1"}}}
    out = patch.strategic_merge_patch(target, doc, POD)
    assert out["metadata"] == {"labels": {"a": "1"}, "finalizers": ["x", "z"]}
    assert out["spec"]["containers"] == [{"name": "c"}, {"name": "a", "image": "3"}]
    assert "securityContext" not in out["spec"] and out["spec"]["nodeSelector"] == {"new": "1"}

    replaced = patch.strategic_merge_patch(target, {"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}, POD)
    assert replaced["spec"]["containers"] == [{"name": "z"}]
    strategy = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    recreate = patch.strategic_merge_patch(strategy, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
                                           schema.for_kind("Deployment"))
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    for bad, code in [({"spec": {"containers": [{"image": "no-name"}]}}, 422), ({"$patch": "delete"}, 422),
                      ({"spec": {"$patch": "explode"}}, 400), ({"$bogus": 1}, 400)]:
        with pytest.raises(ApiError) as e:
            patch.strategic_merge_patch(target, bad, POD)
        assert e.value.code == code, bad


# -- field model, writes, paging


def test_unknown_fields_are_found_in_closed_objects_only_and_pruned():
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labelz": {}},
           "spec": {"containers": [{"name": "c", "imagee": "x", "resources": {"anything": 1}}], "affinity": {"x": 1}},
           "status": {"whatever": True}, "extra": 1}
    unknown = list(schema.unknown_fields(POD, obj))
    assert unknown == ["metadata.labelz", "spec.containers[0].imagee", "extra"]
    pruned = schema.prune(POD, obj, set(unknown))
    assert list(schema.unknown_fields(POD, pruned)) == []
    assert pruned["spec"]["containers"] == [{"name": "c", "resources": {"anything": 1}}]
    assert pruned["status"] == {"whatever": True}
    for kind in ("Deployment", "Service", "Node", "EndpointSlice", "Event", "Lease", "Scale"):
        assert schema.for_kind(kind).type == "object"


def test_delete_plans_graceful_pods_finalizers_and_preconditions():
    pods = resources.by_plural("pods")
    bound = {"metadata": {"name": "p", "uid": "u1", "resourceVersion": "5", "generation": 1},
             "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}}
    action, marked = writes.plan_delete(pods, bound, DeleteOptions(), NOW)
    assert action == "update" and marked["metadata"]["deletionGracePeriodSeconds"] == 10
    assert marked["metadata"]["deletionTimestamp"] == times.time_text(NOW + timedelta(seconds=10))
    assert marked["metadata"]["generation"] == 2
    assert writes.plan_delete(pods, marked, DeleteOptions(), NOW)[0] == "none"  # already under way
    assert writes.plan_delete(pods, marked, DeleteOptions(grace_period_seconds=20), NOW)[0] == "none"  # longer: no
    shorter = writes.plan_delete(pods, marked, DeleteOptions(grace_period_seconds=3), NOW)
    assert shorter[0] == "update" and shorter[1]["metadata"]["deletionGracePeriodSeconds"] == 3
    assert writes.plan_delete(pods, marked, DeleteOptions(grace_period_seconds=0), NOW)[0] == "remove"
    assert writes.plan_delete(pods, bound, DeleteOptions(grace_period_seconds=0), NOW)[0] == "remove"
    assert writes.pod_grace_period({"spec": {"nodeName": "n"}}, None) == 30
    assert writes.pod_grace_period({"spec": {"nodeName": "n"}}, -5) == 1
    assert writes.pod_grace_period({"spec": {}}, 30) == 0  # not bound: nothing to stop
    assert writes.pod_grace_period({"spec": {"nodeName": "n"}, "status": {"phase": "Failed"}}, 30) == 0
    svc = resources.by_plural("services")
    held = {"metadata": {"name": "s", "finalizers": ["x"]}}
    action, deleting = writes.plan_delete(svc, held, DeleteOptions(grace_period_seconds=30), NOW)
    assert action == "update" and deleting["metadata"]["deletionGracePeriodSeconds"] == 0
    assert not writes.finished_deleting(deleting)
    deleting["metadata"]["finalizers"] = []
    assert writes.finished_deleting(deleting)
    with pytest.raises(ApiError) as e:
        writes.check_preconditions(pods, bound, {"uid": "other"})
    assert e.value.code == 409 and "UID in precondition: other" in e.value.message
    writes.check_preconditions(pods, bound, {"uid": "u1", "resourceVersion": "5"})


def test_delete_options_come_from_body_or_query():
    opts = DeleteOptions.parse({"kind": "DeleteOptions", "gracePeriodSeconds": 5, "propagationPolicy": "Orphan",
                                "preconditions": {"uid": "u"}, "dryRun": ["All"]}, {})
    assert opts == DeleteOptions(5, "Orphan", {"uid": "u"}, True)
    assert DeleteOptions.parse(None, {"gracePeriodSeconds": "0", "orphanDependents": "false"}) == \
        DeleteOptions(0, "Background")
    for body, query in [({"propagationPolicy": "Sideways"}, {}), ({}, {"gracePeriodSeconds": "soon"}),
                        ({"kind": "Pod"}, {}), ({"dryRun": ["Some"]}, {}), ([], {})]:
        with pytest.raises(ApiError):
            DeleteOptions.parse(body, query)


def test_scale_view_and_selector_text():
    deploy = deployment()
    deploy["metadata"].update(uid="u", resourceVersion="7")
    deploy["spec"]["selector"]["matchExpressions"] = [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                                      {"key": "canary", "operator": "DoesNotExist"}]
    deploy["status"] = {"replicas": 1}
    scale = writes.scale_of(deploy)
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 1, "selector": "app=web,tier in (a,b),!canary"}
    assert scale["metadata"]["resourceVersion"] == "7"
    scaled = writes.apply_scale(resources.by_plural("deployments"), deploy, {**scale, "spec": {"replicas": 5}})
    assert scaled["spec"]["replicas"] == 5 and deploy["spec"]["replicas"] == 2
    with pytest.raises(ApiError) as e:
        writes.apply_scale(resources.by_plural("deployments"), deploy, {"spec": {"replicas": -1}})
    assert e.value.code == 422


def test_continue_tokens_are_opaque_and_checked():
    token = paging.Token(42, ("default", "web-3"))
    assert paging.Token.decode(token.encode()) == token
    for bad in ("!!", base64.urlsafe_b64encode(b'{"v":"other","rv":1,"start":["a","b"]}').decode(), ""):
        with pytest.raises(ApiError) as e:
            paging.Token.decode(bad)
        assert e.value.code == 400
    items = [{"metadata": {"namespace": "default", "name": n}} for n in "abcde"]
    assert paging.page(items, 2, None) == (items[:2], ("default", "b"), 3)
    assert paging.page(items, 2, ("default", "d")) == (items[4:], None, 0)
    expired = paging.Expired(paging.Token(0, ("default", "b"))).status()
    assert (expired["code"], expired["reason"]) == (410, "Expired") and expired["metadata"]["continue"]


def test_protobuf_bodies_of_kubectls_typed_clients_decode_to_json():
    meta = _pb(1, "web") + _pb(8, b"") + _pb(11, _pb(1, "app") + _pb(2, "web"))
    container = _pb(1, "echo") + _pb(2, "netplane/echo") + _pb(6, _pb(3, 8080)) + _pb(8, b"")
    template = _pb(1, _pb(11, _pb(1, "app") + _pb(2, "web"))) + _pb(2, _pb(2, container))
    spec = _pb(1, 0) + _pb(2, _pb(1, _pb(1, "app") + _pb(2, "web"))) + _pb(3, template) + _pb(4, b"") + _pb(7, 0)
    raw = _pb(1, meta) + _pb(2, spec) + _pb(3, b"")
    body = protobuf.MAGIC + _pb(1, _pb(1, "apps/v1") + _pb(2, "Deployment")) + _pb(2, raw)
    assert protobuf.decode(body) == {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "echo", "image": "netplane/echo",
                                                       "ports": [{"containerPort": 8080}], "resources": {}}]}}},
        "status": {}}
    port = _pb(3, 80) + _pb(4, _pb(1, 1) + _pb(3, "http")) + _pb(5, 0)
    service = protobuf.MAGIC + _pb(1, _pb(1, "v1") + _pb(2, "Service")) + _pb(2, _pb(1, _pb(1, "s")) + _pb(2, _pb(1, port)))
    assert protobuf.decode(service)["spec"] == {"ports": [{"port": 80, "targetPort": "http"}]}
    secret = protobuf.MAGIC + _pb(1, _pb(1, "v1") + _pb(2, "Secret")) + _pb(2, _pb(1, _pb(1, "s")) + _pb(
        2, _pb(1, "key") + _pb(2, b"\x00\xff")) + _pb(3, "Opaque"))
    assert protobuf.decode(secret) == {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                       "data": {"key": "AP8="}, "type": "Opaque"}  # []byte: base64 in JSON
    for bad, code in [(b"{}", 400), (protobuf.MAGIC + _pb(1, _pb(1, "v1") + _pb(2, "PodTemplate")), 415),
                      (protobuf.MAGIC + _pb(1, _pb(1, "v1") + _pb(2, "Namespace")) + _pb(2, _pb(99, "x")), 400)]:
        with pytest.raises(ApiError) as e:
            protobuf.decode(bad)
        assert e.value.code == code


# -- tables (kubectl's columns)


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (150, "2m30s"), (599, "9m59s"),
    (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (5 * 3600 + 30 * 60, "5h30m"), (30 * 3600, "30h"),
    (3 * 86400, "3d"), (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
    (3 * 365 * 86400, "3y"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y"),
])
def test_ages_read_like_kubectls(seconds, text):
    assert tables.human_duration(seconds) == text


def _pod_row(status: dict, spec: dict | None = None, meta: dict | None = None) -> list:
    obj = {"metadata": {"name": "p", "creationTimestamp": ago(90), **(meta or {})},
           "spec": spec or {"containers": [{"name": "a"}, {"name": "b"}]}, "status": status}
    columns, cells = tables.printer(resources.by_plural("pods"))
    row = cells(obj, NOW)
    assert len(row) == len(columns)
    return row


def test_pod_rows_summarise_like_kubectl():
    running = {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
        {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}},
         "lastState": {"terminated": {"finishedAt": ago(300)}}},
        {"name": "b", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    assert _pod_row(running)[:5] == ["p", "1/2", "CrashLoopBackOff", "2 (5m ago)", "90s"]
    assert _pod_row(running, {"nodeName": "node-1", "containers": [{}, {}]})[5:7] == ["10.244.1.5", "node-1"]
    assert _pod_row({"phase": "Pending"})[2:4] == ["Pending", "0"]
    init = {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]}
    assert _pod_row(init, {"initContainers": [{"name": "i"}], "containers": [{}]})[2] == "Init:0/1"
    failed_init = {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"terminated": {"exitCode": 3}}}]}
    assert _pod_row(failed_init, {"initContainers": [{"name": "i"}], "containers": [{}]})[2] == "Init:ExitCode:3"
    done = {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}
    assert _pod_row(done)[2] == "Completed"
    assert _pod_row({"phase": "Running"}, meta={"deletionTimestamp": ago(0)})[2] == "Terminating"
    gates = _pod_row({"conditions": [{"type": "x", "status": "True"}]},
                     {"containers": [], "readinessGates": [{"conditionType": "x"}, {"conditionType": "y"}]})
    assert gates[-1] == "1/2" and gates[-2] == "<none>"


def test_service_node_and_workload_rows():
    def row(plural: str, obj: dict) -> list:
        obj.setdefault("metadata", {}).setdefault("creationTimestamp", ago(3600 * 5))
        return tables.printer(resources.by_plural(plural))[1](obj, NOW)

    svc = {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                                                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                                           {"port": 53, "protocol": "UDP"}]}}
    assert row("services", svc) == ["web", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP,53/UDP", "5h", "app=web"]
    lb = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11"}}
    assert row("services", lb)[3:5] == ["<pending>", "<none>"]
    node = {"metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "172.30.0.11"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian 12", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "netplane://0.1"}}}
    assert row("nodes", node) == ["node-1", "Ready,SchedulingDisabled", "control-plane,edge", "5h", "v1.32.0",
                                  "172.30.0.11", "<none>", "Debian 12", "6.1", "netplane://0.1"]
    deploy = deployment()
    deploy["status"] = {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}
    assert row("deployments", deploy) == ["web", "1/2", 2, 1, "5h", "echo", "netplane/echo", "app=web"]
    slices = {"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"port": 80}],
              "endpoints": [{"addresses": [f"10.0.0.{i}"]} for i in range(5)]}
    assert row("endpointslices", slices)[1:4] == ["IPv4", "80", "10.0.0.0,10.0.0.1,10.0.0.2 + 2 more..."]
    endpoints = {"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
    assert row("endpoints", endpoints)[1] == "10.0.0.1:80"
    event = {"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff", "message": " restarting ",
             "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{a}"},
             "source": {"component": "kubelet", "host": "node-1"}, "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 4}
    assert row("events", event) == ["60s", "Warning", "BackOff", "pod/web-1", "spec.containers{a}", "kubelet, node-1",
                                    "restarting", "10m", 4, "e1"]
    assert row("leases", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "n"}}) == ["l", "n", "5h"]


def test_table_columns_have_kubectls_names_and_wide_priority():
    for plural, normal, wide in [
        ("pods", ["Name", "Ready", "Status", "Restarts", "Age"], ["IP", "Node", "Nominated Node", "Readiness Gates"]),
        ("services", ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], ["Selector"]),
        ("nodes", ["Name", "Status", "Roles", "Age", "Version"],
         ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]),
        ("deployments", ["Name", "Ready", "Up-to-date", "Available", "Age"], ["Containers", "Images", "Selector"]),
        ("replicasets", ["Name", "Desired", "Current", "Ready", "Age"], ["Containers", "Images", "Selector"]),
        ("namespaces", ["Name", "Status", "Age"], []),
    ]:
        table = tables.table(resources.by_plural(plural), [], {"resourceVersion": "1"}, now=NOW)
        columns = table["columnDefinitions"]
        assert [c["name"] for c in columns if c["priority"] == 0] == normal
        assert [c["name"] for c in columns if c["priority"] == 1] == wide
        assert all(c["type"] and c["description"] for c in columns) and columns[0]["format"] == "name"
    res = resources.by_plural("pods")
    obj = {"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {}}
    assert tables.table(res, [obj], {}, "None", NOW)["rows"][0].keys() == {"cells"}
    assert tables.table(res, [obj], {}, "Object", NOW)["rows"][0]["object"] is obj
    assert tables.table(res, [obj], {}, now=NOW)["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


# -- over HTTP: PATCH


def test_patch_in_three_formats_on_objects_and_status(tmp_path):
    def admit(verb, plural, obj, old, store):
        if obj["metadata"].get("labels", {}).get("refuse"):
            raise ApiError(422, "Invalid", "refused by admission")
        return obj

    async def main():
        async with serving(tmp_path, admit=admit) as (_, api, port):
            made = await api.create("pods", pod("a", {"app": "web"}))
            assert made["metadata"]["generation"] == 1
            two = {"spec": {"containers": [{"name": "echo", "image": "v2"}, {"name": "side", "image": "s"}]}}
            out = await api.patch("pods", "a", two, patch_type="strategic")
            assert [(c["name"], c["image"]) for c in out["spec"]["containers"]] == [("echo", "v2"), ("side", "s")]
            assert out["metadata"]["generation"] == 2
            out = await api.patch("pods", "a", {"spec": {"containers": [{"name": "only", "image": "x"}]},
                                                "metadata": {"labels": {"tier": "front"}}})  # merge: lists replaced
            assert [c["name"] for c in out["spec"]["containers"]] == ["only"]
            assert out["metadata"]["labels"] == {"app": "web", "tier": "front"} and out["metadata"]["generation"] == 3
            out = await api.patch("pods", "a", [{"op": "remove", "path": "/metadata/labels/tier"}], patch_type="json")
            assert out["metadata"]["labels"] == {"app": "web"} and out["metadata"]["generation"] == 3

            out = await api.patch("pods", "a", {"status": {"phase": "Running"}, "spec": {"nodeName": "x"}},
                                  subresource="status", patch_type="strategic")
            assert out["status"]["phase"] == "Running" and "nodeName" not in out["spec"]
            assert out["metadata"]["generation"] == 3
            out = await api.patch("pods", "a", {"status": {"phase": "Failed"}})  # the main resource keeps status
            assert out["status"]["phase"] == "Running"

            stale = {"metadata": {"resourceVersion": made["metadata"]["resourceVersion"], "labels": {"x": "1"}}}
            with pytest.raises(ApiError) as e:
                await api.patch("pods", "a", stale)
            assert (e.value.code, e.value.reason) == (409, "Conflict")
            current = {"metadata": {"resourceVersion": out["metadata"]["resourceVersion"], "labels": {"x": "1"}}}
            assert (await api.patch("pods", "a", current))["metadata"]["labels"]["x"] == "1"
            for doc, kind, code in [({"metadata": {"labels": {"refuse": "y"}}}, "merge", 422),  # admission runs
                                    ([{"op": "test", "path": "/spec/nodeName", "value": "n"}], "json", 422),
                                    ({"metadata": {"name": "b"}}, "merge", 400),
                                    ({"op": "add"}, "json", 400)]:
                with pytest.raises(ApiError) as e:
                    await api.patch("pods", "a", doc, patch_type=kind)
                assert e.value.code == code, doc
            with pytest.raises(ApiError) as e:
                await api.patch("pods", "missing", {})
            assert e.value.code == 404
            for body, ctype, code, reason in [
                ("{}", "application/apply-patch+yaml", 422, "Invalid"),  # an apply without a fieldManager
                ("{}", "text/plain", 415, "UnsupportedMediaType"),
                ("{not json", "application/merge-patch+json", 400, "BadRequest"),
                ("[]", "application/strategic-merge-patch+json", 400, "BadRequest"),
            ]:
                status, body, _ = await http(port, "PATCH", f"{PODS}/a", body, ctype)
                assert status == code
                assert_status(body, code, reason)

    asyncio.run(main())


def test_generation_counts_spec_changes_only(tmp_path):
    async def main():
        async with serving(tmp_path) as (store, api, _port):
            made = await api.create("deployments", deployment())
            assert made["metadata"]["generation"] == 1
            labelled = await api.update("deployments", {**made, "metadata": {**made["metadata"], "labels": {"a": "b"}}})
            assert labelled["metadata"]["generation"] == 1
            status = await api.update_status("deployments", {**labelled, "status": {"replicas": 2}})
            assert status["metadata"]["generation"] == 1
            scaled = await api.update("deployments", {**status, "spec": {**status["spec"], "replicas": 5}})
            assert scaled["metadata"]["generation"] == 2
            same = await api.update("deployments", scaled)
            assert same["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]
            sent = {**scaled, "metadata": {**scaled["metadata"], "generation": 99, "uid": "forged"}}
            kept = await api.update("deployments", sent)
            assert kept["metadata"]["generation"] == 2 and kept["metadata"]["uid"] == made["metadata"]["uid"]

    asyncio.run(main())


# -- over HTTP: Tables and other representations


def test_tables_for_lists_single_gets_and_watches(tmp_path):
    async def main():
        async with serving(tmp_path) as (store, api, port):
            a = await api.create("pods", pod("a", {"app": "web"}, node="node-1"))
            await api.update_status("pods", {**a, "status": {"phase": "Running", "podIP": "10.244.1.5"}})
            await api.create("pods", pod("b"))
            status, table, _ = await http(port, "GET", PODS, accept=TABLE)
            assert status == 200 and (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
            assert [c["name"] for c in table["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
            assert [r["cells"][:3] for r in table["rows"]] == [["a", "0/1", "Running"], ["b", "0/1", "Pending"]]
            assert table["rows"][0]["cells"][5:7] == ["10.244.1.5", "node-1"]
            assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
            assert table["rows"][0]["object"]["metadata"]["labels"] == {"app": "web"}
            assert table["metadata"]["resourceVersion"] == str(store.resource_version)

            _, full, _ = await http(port, "GET", f"{PODS}?includeObject=Object&limit=1", accept=TABLE)
            assert full["rows"][0]["object"]["kind"] == "Pod" and full["metadata"]["continue"]
            _, bare, _ = await http(port, "GET", f"{PODS}?includeObject=None", accept=TABLE)
            assert "object" not in bare["rows"][0]
            _, one, _ = await http(port, "GET", f"{PODS}/b", accept=TABLE)
            assert one["kind"] == "Table" and [r["cells"][0] for r in one["rows"]] == ["b"]
            _, beta, _ = await http(port, "GET", f"{PODS}/b", accept="application/json;as=Table;v=v1beta1;g=meta.k8s.io")
            assert beta["apiVersion"] == "meta.k8s.io/v1beta1"
            _, partial, _ = await http(port, "GET", PODS,
                                       accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
            assert partial["kind"] == "PartialObjectMetadataList" and "spec" not in partial["items"][0]
            _, plain, _ = await http(port, "GET", f"{PODS}/b", accept="application/vnd.kubernetes.protobuf,*/*")
            assert plain["kind"] == "Pod"
            status, body, _ = await http(port, "GET", PODS, accept="application/vnd.kubernetes.protobuf")
            assert status == 406 and body["reason"] == "NotAcceptable"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}{PODS}/b", headers={"Accept": "application/yaml"}) as r:
                    assert yaml.safe_load(await r.text())["kind"] == "Pod"
                url = f"http://127.0.0.1:{port}{PODS}?watch=true&resourceVersion={store.resource_version}&timeoutSeconds=1"
                async with session.get(url, headers={"Accept": TABLE}) as resp:
                    await api.create("pods", pod("c"))
                    await api.delete("pods", "c")
                    events = [json.loads(line) async for line in resp.content if line.strip()]
            assert [(e["type"], e["object"]["kind"], e["object"]["rows"][0]["cells"][0]) for e in events] == [
                ("ADDED", "Table", "c"), ("DELETED", "Table", "c")]
            assert events[0]["object"]["columnDefinitions"] and not events[1]["object"]["columnDefinitions"]

    asyncio.run(main())


# -- over HTTP: lists in chunks, resourceVersion semantics


def test_chunked_lists_stay_consistent_with_their_first_page(tmp_path):
    async def main():
        async with serving(tmp_path, log_size=12) as (store, api, port):
            for i in range(6):
                await api.create("pods", pod(f"p{i}", {"even": str(i % 2 == 0).lower()}))
            first = await api.list("pods", "default", limit=2)
            rv = first["metadata"]["resourceVersion"]
            assert [p["metadata"]["name"] for p in first["items"]] == ["p0", "p1"]
            assert first["metadata"]["remainingItemCount"] == 4

            await api.delete("pods", "p3")
            await api.create("pods", pod("p9"))
            p4 = await api.get("pods", "p4")
            await api.update("pods", {**p4, "metadata": {**p4["metadata"], "labels": {"changed": "yes"}}})

            second = await api.list("pods", "default", limit=2, continue_=first["metadata"]["continue"])
            third = await api.list("pods", "default", limit=2, continue_=second["metadata"]["continue"])
            assert [p["metadata"]["name"] for p in second["items"] + third["items"]] == ["p2", "p3", "p4", "p5"]
            assert third["items"][0]["metadata"]["labels"] == {"even": "true"}  # p4 as it was at rv
            assert second["metadata"]["resourceVersion"] == rv and "continue" not in third["metadata"]
            exact = await api.list("pods", "default", resource_version=rv, resource_version_match="Exact")
            assert [p["metadata"]["name"] for p in exact["items"]] == [f"p{i}" for i in range(6)]

            even = await api.list("pods", "default", label_selector="even=true", limit=2)
            assert [p["metadata"]["name"] for p in even["items"]] == ["p0", "p2"]
            assert "remainingItemCount" not in even["metadata"]

            for i in range(12):  # the log moves past rv
                await api.create("pods", pod(f"q{i}"))
            with pytest.raises(Gone):
                await api.list("pods", "default", limit=2, continue_=first["metadata"]["continue"])
            status, body, _ = await http(port, "GET", f"{PODS}?limit=2&continue={first['metadata']['continue']}")
            assert status == 410 and body["reason"] == "Expired" and "too old" in body["message"]
            fresh = await api.list("pods", "default", limit=3, continue_=body["metadata"]["continue"])
            assert [p["metadata"]["name"] for p in fresh["items"]] == ["p2", "p4", "p5"]  # now: p3 gone
            with pytest.raises(Gone):
                await api.list("pods", "default", resource_version=rv, resource_version_match="Exact")

            latest = await api.list("pods", "default", resource_version=0)
            assert len(latest["items"]) == 18
            for query, code in [("resourceVersionMatch=Exact", 422), ("resourceVersion=0&resourceVersionMatch=Exact", 422),
                                ("resourceVersion=1&resourceVersionMatch=Newest", 422), ("sendInitialEvents=true", 422),
                                (f"continue={first['metadata']['continue']}&resourceVersion=5", 400),
                                ("continue=garbage", 400), ("limit=-1", 400),
                                ("resourceVersion=999999&resourceVersionMatch=NotOlderThan", 504)]:
                status, body, _ = await http(port, "GET", f"{PODS}?{query}")
                assert status == code, query
                assert body["kind"] == "Status"

    asyncio.run(main())


# -- over HTTP: subresources


def test_scale_subresource_of_deployments_and_replicasets(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            made = await api.create("deployments", deployment(replicas=2))
            await api.update_status("deployments", {**made, "status": {"replicas": 1}})
            scale = await api.get_scale("deployments", "web")
            assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
            assert scale["spec"] == {"replicas": 2} and scale["status"] == {"replicas": 1, "selector": "app=web"}
            scale["spec"]["replicas"] = 4
            assert (await api.update_scale("deployments", scale))["spec"]["replicas"] == 4
            after = await api.get("deployments", "web")
            assert after["spec"]["replicas"] == 4 and after["metadata"]["generation"] == 2
            assert after["status"] == {"replicas": 1}
            with pytest.raises(ApiError) as e:
                await api.update_scale("deployments", scale)  # its resourceVersion is stale now
            assert e.value.code == 409
            assert (await api.patch("deployments", "web", {"spec": {"replicas": 1}}, subresource="scale"))["spec"]["replicas"] == 1
            ops = [{"op": "replace", "path": "/spec/replicas", "value": 3}]
            assert (await api.patch("deployments", "web", ops, patch_type="json", subresource="scale"))["spec"]["replicas"] == 3
            assert (await api.patch("deployments", "web", {"spec": {"replicas": 9}}, subresource="scale",
                                    dry_run=True))["spec"]["replicas"] == 9
            assert (await api.get("deployments", "web"))["spec"]["replicas"] == 3
            with pytest.raises(ApiError) as e:
                await api.patch("deployments", "web", {"spec": {"replicas": -1}}, subresource="scale")
            assert e.value.code == 422

            rs = deployment("rs")
            rs["kind"] = "ReplicaSet"
            await api.create("replicasets", rs)
            assert (await api.patch("replicasets", "rs", {"spec": {"replicas": 0}}, subresource="scale"))["spec"]["replicas"] == 0
            await api.create("pods", pod("a"))
            status, body, _ = await http(port, "GET", f"{PODS}/a/scale")
            assert status == 404
            status, body, _ = await http(port, "PATCH", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/x/status",
                                         "{}", "application/merge-patch+json")
            assert status == 404

            core = (await http(port, "GET", "/apis/apps/v1"))[1]["resources"]
            entry = next(r for r in core if r["name"] == "deployments/scale")
            assert (entry["group"], entry["version"], entry["kind"]) == ("autoscaling", "v1", "Scale")
            assert "patch" in next(r for r in core if r["name"] == "deployments")["verbs"]
            assert next(r for r in core if r["name"] == "deployments")["categories"] == ["all"]

    asyncio.run(main())


def test_status_subresource_of_every_resource_that_has_status(tmp_path):
    samples = {"namespaces": {"metadata": {"name": "team-a"}}, "nodes": {"metadata": {"name": "node-1"}},
               "pods": pod("a"), "services": {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}},
               "deployments": deployment(), "replicasets": {**deployment("rs"), "kind": "ReplicaSet"},
               "daemonsets": {**deployment("ds"), "kind": "DaemonSet"},
               "statefulsets": {**deployment("sts"), "kind": "StatefulSet"},
               "jobs": {"metadata": {"name": "job"}, "spec": {"template": {"spec": {
                   "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
               "cronjobs": {"metadata": {"name": "cron"}, "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {
                   "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}},
               "poddisruptionbudgets": {"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1}}}
    samples["daemonsets"]["spec"].pop("replicas")

    async def main():
        async with serving(tmp_path) as (_, api, port):
            for res in resources.RESOURCES:
                if not res.has_status:
                    continue
                obj = await api.create(res.plural, samples[res.plural])
                ns = obj["metadata"].get("namespace")
                doc = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {"labels": {"x": "y"}}}
                out = await api.patch(res.plural, obj["metadata"]["name"], doc, ns, "strategic", "status")
                assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}], res.plural
                assert "x" not in (out["metadata"].get("labels") or {}), res.plural
                path = f"{resources.base_path(res, ns)}/{obj['metadata']['name']}/status"
                status, got, _ = await http(port, "GET", path)
                assert status == 200 and got["status"]["conditions"][0]["type"] == "Ready"

    asyncio.run(main())


# -- over HTTP: deletion


def test_bound_pods_are_deleted_gracefully(tmp_path):
    async def main():
        async with serving(tmp_path) as (store, api, port):
            events = api.watch("pods", store.resource_version, "default")
            bound = pod("a", node="node-1")
            bound["spec"]["terminationGracePeriodSeconds"] = 15
            await api.create("pods", bound)
            before = datetime.now(timezone.utc)
            marked = await api.delete("pods", "a")
            meta = marked["metadata"]
            assert meta["deletionGracePeriodSeconds"] == 15
            due = datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
            assert timedelta(seconds=13) <= due - before <= timedelta(seconds=16)
            assert (await api.get("pods", "a"))["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]
            again = await api.delete("pods", "a")  # nothing new: no event
            assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
            status, gone, _ = await http(port, "DELETE", f"{PODS}/a", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                                     "gracePeriodSeconds": 0})
            assert status == 200 and gone["metadata"]["name"] == "a"
            with pytest.raises(ApiError):
                await api.get("pods", "a")
            assert await take(events, 3) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
            await events.aclose()

            await api.create("pods", pod("loose"))  # no node: no kubelet to wait for
            assert "deletionTimestamp" not in (await api.delete("pods", "loose"))["metadata"]
            await api.create("pods", pod("quick", node="node-1"))
            status, _, _ = await http(port, "DELETE", f"{PODS}/quick?gracePeriodSeconds=0")
            assert status == 200 and not (await api.list("pods"))["items"]

    asyncio.run(main())


def test_finalizers_hold_a_deleted_object_until_they_are_emptied(tmp_path):
    async def main():
        async with serving(tmp_path) as (store, api, _port):
            svc = {"metadata": {"name": "web", "finalizers": ["example.com/hold"]}, "spec": {"ports": [{"port": 80}]}}
            await api.create("services", svc)
            held = await api.delete("services", "web")
            assert held["metadata"]["deletionTimestamp"] and held["metadata"]["deletionGracePeriodSeconds"] == 0
            with pytest.raises(ApiError) as e:  # no new finalizers once deleting
                await api.patch("services", "web", {"metadata": {"finalizers": ["example.com/other"]}})
            assert e.value.code == 422
            relabelled = await api.patch("services", "web", {"metadata": {"labels": {"a": "b"}}})
            assert relabelled["metadata"]["deletionTimestamp"] == held["metadata"]["deletionTimestamp"]
            rv = store.resource_version
            freed = await api.patch("services", "web", [{"op": "remove", "path": "/metadata/finalizers"}], patch_type="json")
            assert freed["metadata"]["name"] == "web"
            with pytest.raises(ApiError):
                await api.get("services", "web")
            assert [(t, p) for _, t, p, _ in store.events_since(rv)] == [("DELETED", "services")]

            held_pod = pod("p", node="node-1")
            held_pod["metadata"]["finalizers"] = ["example.com/hold"]
            await api.create("pods", held_pod)
            await api.delete("pods", "p", grace_period_seconds=0)
            current = await api.get("pods", "p")  # grace over, finalizer left
            assert current["metadata"]["deletionGracePeriodSeconds"] == 0
            await api.update("pods", {**current, "metadata": {**current["metadata"], "finalizers": []}})
            assert not (await api.list("pods"))["items"]

    asyncio.run(main())


def test_delete_preconditions_orphans_and_namespaces(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            made = await api.create("pods", pod("a"))
            for pre in ({"uid": "not-it"}, {"resourceVersion": "1"}):
                with pytest.raises(ApiError) as e:
                    await api.delete("pods", "a", preconditions=pre)
                assert (e.value.code, e.value.reason) == (409, "Conflict")
            status, _, _ = await http(port, "DELETE", f"{PODS}/a?preconditions.uid={made['metadata']['uid']}")
            assert status == 200

            owner = await api.create("deployments", deployment())
            ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner["metadata"]["uid"],
                   "controller": True}
            for name in ("kept", "freed"):
                rs = {**deployment(name), "kind": "ReplicaSet"}
                rs["metadata"] = {**rs["metadata"], "ownerReferences": [ref]}
                await api.create("replicasets", rs)
            await api.delete("deployments", "web", propagation_policy="Orphan")
            for name in ("kept", "freed"):
                assert "ownerReferences" not in (await api.get("replicasets", name))["metadata"]
            status, body, _ = await http(port, "DELETE", f"{PODS}/x", {"propagationPolicy": "Sideways"})
            assert status == 422 and body["reason"] == "Invalid"  # the options are checked first

            await api.create("namespaces", {"metadata": {"name": "team-a"}})
            await api.create("pods", pod("b", node="node-1", ns="team-a"))
            await api.delete("namespaces", "team-a")
            assert not (await api.list("pods", "team-a"))["items"]

    asyncio.run(main())


# -- over HTTP: dry run


def test_dry_run_admits_and_validates_but_never_persists(tmp_path):
    def admit(verb, plural, obj, old, store):
        if obj["metadata"].get("labels", {}).get("refuse"):
            raise ApiError(422, "Invalid", "refused by admission")
        obj["metadata"].setdefault("annotations", {})["admitted"] = verb
        return obj

    async def main():
        async with serving(tmp_path, admit=admit) as (store, api, port):
            made = await api.create("pods", pod("a", node="node-1"))
            rv = store.resource_version
            ghost = await api.create("pods", {"metadata": {"generateName": "web-"}, "spec": pod("x")["spec"]}, dry_run=True)
            assert ghost["metadata"]["name"].startswith("web-") and ghost["metadata"]["annotations"]["admitted"] == "create"
            with pytest.raises(ApiError) as e:
                await api.create("pods", pod("b", {"refuse": "y"}), dry_run=True)
            assert e.value.code == 422
            with pytest.raises(ApiError) as e:
                await api.create("pods", pod("Bad_Name"), dry_run=True)
            assert e.value.code == 422
            changed = await api.update("pods", {**made, "metadata": {**made["metadata"], "labels": {"x": "1"}}}, dry_run=True)
            assert changed["metadata"]["labels"] == {"x": "1"}
            assert (await api.patch("pods", "a", {"metadata": {"labels": {"y": "2"}}}, dry_run=True))["metadata"]["labels"] == {"y": "2"}
            assert (await api.delete("pods", "a", dry_run=True))["metadata"]["deletionTimestamp"]
            status, _, _ = await http(port, "DELETE", f"{PODS}/a", {"dryRun": ["All"], "gracePeriodSeconds": 0})
            assert status == 200
            assert store.resource_version == rv and store.events_since(rv) == []
            assert await api.get("pods", "a") == made
            status, body, _ = await http(port, "POST", f"{PODS}?dryRun=Some", pod("c"))
            assert status == 400

    asyncio.run(main())


# -- over HTTP: request bodies and field validation


def test_yaml_bodies_and_field_validation(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            manifest = """
apiVersion: v1
kind: Pod
metadata:
  name: from-yaml
  annotations: {when: 2024-01-01T00:00:00Z}
spec:
  containers: [{name: c, image: netplane/echo}]
"""
            status, made, _ = await http(port, "POST", PODS, manifest, "application/yaml")
            assert status == 201 and made["metadata"]["annotations"]["when"] == "2024-01-01T00:00:00Z"
            for body, ctype in [("kind: [", "application/yaml"), ('{"kind": "Pod", ', "application/json")]:
                status, error, _ = await http(port, "POST", PODS, body, ctype)
                assert_status(error, 400, "BadRequest")

            typo = pod("typo")
            typo["spec"]["containers"][0]["imagee"] = "x"
            typo["spec"]["bogus"] = 1
            status, error, _ = await http(port, "POST", f"{PODS}?fieldValidation=Strict", typo)
            assert_status(error, 400, "BadRequest")
            assert error["message"] == ('Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
                                        'unknown field "spec.containers[0].imagee", unknown field "spec.bogus"')
            status, warned, warnings = await http(port, "POST", PODS, typo)  # Warn is the default
            assert status == 201 and warnings == ['299 - "unknown field \\"spec.containers[0].imagee\\""',
                                                  '299 - "unknown field \\"spec.bogus\\""']
            assert "imagee" not in warned["spec"]["containers"][0] and "bogus" not in warned["spec"]
            status, quiet, warnings = await http(port, "POST", f"{PODS}?fieldValidation=Ignore",
                                                 {**typo, "metadata": {"name": "typo-2"}})
            assert status == 201 and warnings == [] and "bogus" not in quiet["spec"]
            doubled = '{"metadata": {"name": "dup", "name": "dup"}, "spec": {"containers": []}}'
            status, error, _ = await http(port, "POST", f"{PODS}?fieldValidation=Strict", doubled)
            assert status == 400 and 'duplicate field "name"' in error["message"]
            status, error, _ = await http(port, "POST", f"{PODS}?fieldValidation=Loose", pod("x"))
            assert status == 400
            status, error, _ = await http(port, "PATCH", f"{PODS}/typo-2?fieldValidation=Strict",
                                          {"spec": {"nodeNamee": "n"}}, "application/merge-patch+json")
            assert status == 400 and 'unknown field "spec.nodeNamee"' in error["message"]

    asyncio.run(main())


# -- over HTTP: watch


async def _stream(port: int, query: str) -> list[dict]:
    """Every event of a watch until the server ends it."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{PODS}?watch=true&{query}") as resp:
            assert resp.status == 200, await resp.text()
            async with asyncio.timeout(5):
                return [json.loads(line) async for line in resp.content if line.strip()]


def test_watch_bookmarks_initial_events_and_timeout(tmp_path):
    async def main():
        async with serving(tmp_path, bookmark_interval=0.2) as (store, api, port):
            await api.create("pods", pod("a"))
            await api.create("pods", pod("b"))
            rv = store.resource_version
            started = asyncio.get_running_loop().time()
            events = await _stream(port, "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&"
                                         "allowWatchBookmarks=true&timeoutSeconds=1")
            assert 0.9 < asyncio.get_running_loop().time() - started < 3
            assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:2]] == [("ADDED", "a"), ("ADDED", "b")]
            end = events[2]
            assert end["type"] == "BOOKMARK" and end["object"]["kind"] == "Pod"
            assert end["object"]["metadata"] == {"resourceVersion": str(rv),
                                                 "annotations": {"k8s.io/initial-events-end": "true"}}
            periodic = events[3:]
            assert 2 <= len(periodic) <= 6 and {e["type"] for e in periodic} == {"BOOKMARK"}
            assert all(e["object"]["metadata"] == {"resourceVersion": str(rv)} for e in periodic)

            quiet = await _stream(port, "timeoutSeconds=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan")
            assert quiet == []  # nothing changed, no initial events, no bookmarks asked for
            for query in ("sendInitialEvents=true", "resourceVersionMatch=NotOlderThan",
                          "sendInitialEvents=true&resourceVersionMatch=Exact"):
                status, body, _ = await http(port, "GET", f"{PODS}?watch=true&{query}")
                assert status == 422 and body["reason"] == "Invalid", query

            marks = []
            async for event in api.watch("pods", rv, "default", allow_bookmarks=True, timeout_seconds=1):
                marks.append(event["type"])
                if len(marks) == 1:
                    await api.create("pods", pod("c"))
            assert "ADDED" in marks and "BOOKMARK" in marks

    asyncio.run(main())


def test_a_watchs_bookmarks_move_past_the_writes_it_does_not_want(tmp_path):
    """As the apiserver's progress notifications do: a watch of the pods on one node hears nothing of
    other writes (a Service, another node's pod), yet its bookmarks carry their resourceVersion, and
    a watch resumed from the last one replays none of them."""
    async def main():
        async with serving(tmp_path, bookmark_interval=0.2) as (store, api, port):
            start = str(store.resource_version)
            mine = "spec.nodeName=node-1"
            events = []

            async def watch() -> None:
                async for event in api.watch("pods", start, "default", field_selector=mine, allow_bookmarks=True,
                                             timeout_seconds=2):
                    events.append(event)

            watching = asyncio.create_task(watch())
            await asyncio.sleep(0.3)
            await api.create("services", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
            await api.create("pods", pod("elsewhere", node="node-2"))
            written = store.resource_version
            await watching
            assert {e["type"] for e in events} == {"BOOKMARK"}, events
            last = events[-1]["object"]["metadata"]["resourceVersion"]
            assert int(last) == written
            await api.create("pods", pod("here", node="node-1"))
            resumed = [e async for e in api.watch("pods", last, "default", field_selector=mine, timeout_seconds=1)]
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [("ADDED", "here")]

    asyncio.run(main())


def test_a_watch_loses_no_event_to_its_bookmark_timer(tmp_path):
    """Bookmarks due every millisecond: the wait for the next event times out all the time, often
    just as an event arrives, and every event the watch wants still reaches it, once."""
    async def main():
        async with serving(tmp_path, bookmark_interval=0.001) as (store, api, port):
            start = str(store.resource_version)
            seen: list[str] = []

            async def watch() -> None:
                async for event in api.watch("pods", start, "default", field_selector="spec.nodeName=node-1",
                                             allow_bookmarks=True, timeout_seconds=4):
                    if event["type"] == "ADDED":
                        seen.append(event["object"]["metadata"]["name"])

            watching = asyncio.create_task(watch())
            made = []
            for n in range(150):
                await api.create("pods", pod(f"p{n}", node="node-1"))
                made.append(f"p{n}")
                await api.create("pods", pod(f"q{n}", node="node-2"))
                await asyncio.sleep(0.002 * (n % 3))
            await watching
            assert seen == made

    asyncio.run(main())


# -- OpenAPI


def test_openapi_v3_tells_kubectl_the_server_validates_fields(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, _api, port):
            _, index, _ = await http(port, "GET", "/openapi/v3")
            assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/discovery.k8s.io/v1", "apis/coordination.k8s.io/v1",
                                          "apis/networking.k8s.io/v1", "apis/events.k8s.io/v1", "apis/batch/v1",
                                          "apis/policy/v1", "apis/scheduling.k8s.io/v1"}
            for gv, entry in index["paths"].items():
                url = entry["serverRelativeURL"]
                assert url.startswith(f"/openapi/v3/{gv}?hash=")
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{port}{url}") as resp:
                        assert resp.headers["Cache-Control"] == "public, immutable"
                        doc = json.loads(await resp.read())
                served = [r for r in resources.RESOURCES if resources.group_path(r).lstrip("/") == gv]
                for res in served:
                    gvk = {"group": res.group, "version": res.version, "kind": res.kind}
                    patches = [op["patch"] for op in doc["paths"].values()
                               if "patch" in op and op["patch"]["x-kubernetes-group-version-kind"] == gvk]
                    assert patches, res.kind
                    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patches[0]["parameters"])
                    assert set(patches[0]["requestBody"]["content"]) == {*patch.CONTENT_TYPES, "application/apply-patch+yaml"}
                tagged = {g["kind"] for s in doc["components"]["schemas"].values()
                          for g in s.get("x-kubernetes-group-version-kind", [])}
                assert {r.kind for r in served} <= tagged  # kubectl explain and apply find each kind by it
            schemas = json.loads(openapi.document("api/v1"))["components"]["schemas"]
            containers = schemas["io.netplane.PodSpec"]["properties"]["containers"]
            assert containers["x-kubernetes-patch-merge-key"] == "name"
            assert containers["x-kubernetes-list-map-keys"] == ["name"] and containers["description"]
            ports = schemas["io.netplane.Container"]["properties"]["ports"]
            assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
            status, body, _ = await http(port, "GET", "/openapi/v3/apis/storage.k8s.io/v1")
            assert status == 404

    asyncio.run(main())


# -- real clients: kubectl 1.32 and the official Python client, against a server in a thread


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: echo
        image: netplane/echo
        ports: [{containerPort: 8080}]
"""
WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  containers: [{name: echo, image: netplane/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {node-role.kubernetes.io/control-plane: ""}}
"""


def _lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_kubectl_apply_create_patch_label_scale_get_describe_delete(tmp_path):
    with Cluster(tmp_path) as c:
        assert c.kubectl("apply", "-f", "-", stdin=MANIFEST).stdout.strip() == "deployment.apps/web created"
        assert c.kubectl("apply", "-f", "-", stdin=MANIFEST).stdout.strip() == "deployment.apps/web unchanged"
        changed = MANIFEST.replace("replicas: 2", "replicas: 3").replace("8080", "8081")
        assert c.kubectl("apply", "-f", "-", stdin=changed).stdout.strip() == "deployment.apps/web configured"
        assert c.kubectl("apply", "-f", "-", stdin=changed).stdout.strip() == "deployment.apps/web unchanged"
        web = json.loads(c.kubectl("get", "deploy", "web", "-o", "json").stdout)
        assert web["spec"]["replicas"] == 3 and web["metadata"]["generation"] == 2
        assert web["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8081, "protocol": "TCP"}]
        typo = c.kubectl("apply", "-f", "-", stdin=changed.replace("image:", "imagee:"), ok=False)
        assert typo.returncode != 0 and 'strict decoding error: unknown field "spec.template.spec.containers[0].imagee"' in typo.stderr

        # kubectl's typed clients send protobuf (protobuf.py)
        assert c.kubectl("create", "namespace", "team-a").stdout.strip() == "namespace/team-a created"
        c.kubectl("create", "deployment", "api", "-n", "team-a", "--image=netplane/echo", "--replicas=0", "--port=8080")
        c.kubectl("create", "service", "nodeport", "api", "-n", "team-a", "--tcp=80:8080", "--node-port=30080")
        api = json.loads(c.kubectl("get", "deploy,svc", "-n", "team-a", "-o", "json").stdout)["items"]
        assert api[0]["spec"]["replicas"] == 0 and api[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "netplane/echo"
        assert api[1]["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080,
                                            "nodePort": 30080}]

        created = c.kubectl("create", "-f", "-", stdin=WORKLOAD).stdout.split("\n")
        assert created[:3] == ["pod/web-1 created", "service/web created", "node/node-1 created"]
        c.kubectl("patch", "pod", "web-1", "-p", '{"spec":{"containers":[{"name":"echo","image":"netplane/echo:2"}]}}')
        c.kubectl("patch", "pod", "web-1", "--type=merge", "-p", '{"metadata":{"labels":{"tier":"front"}}}')
        c.kubectl("patch", "pod", "web-1", "--type=json", "-p", '[{"op":"add","path":"/metadata/labels/x","value":"y"}]')
        assert c.kubectl("label", "pod", "web-1", "team=net").stdout.strip() == "pod/web-1 labeled"
        assert c.kubectl("annotate", "pod", "web-1", "note=hi").stdout.strip() == "pod/web-1 annotated"
        c.kubectl("label", "pod", "web-1", "x-")
        got = json.loads(c.kubectl("get", "pod", "web-1", "-o", "json").stdout)
        assert got["metadata"]["labels"] == {"app": "web", "tier": "front", "team": "net"}
        assert got["metadata"]["annotations"] == {"note": "hi"}
        assert [(x["name"], x["image"]) for x in got["spec"]["containers"]] == [("echo", "netplane/echo:2")]
        assert c.kubectl("scale", "deploy/web", "--replicas=5").stdout.strip() == "deployment.apps/web scaled"
        assert c.kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "5"

        pods = _lines(c.kubectl("get", "pods").stdout)
        assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and pods[1][:4] == ["web-1", "0/1", "Pending", "0"]
        wide = c.kubectl("get", "pods", "-o", "wide").stdout.splitlines()[0].split()
        assert wide == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
        assert _lines(c.kubectl("get", "svc", "-o", "wide").stdout)[1][-1] == "app=web"
        assert _lines(c.kubectl("get", "nodes").stdout)[1][:3] == ["node-1", "Unknown", "control-plane"]
        assert _lines(c.kubectl("get", "deploy", "-o", "wide").stdout)[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
        assert _lines(c.kubectl("get", "pods", "--show-labels").stdout)[1][-1] == "app=web,team=net,tier=front"
        assert c.kubectl("get", "pods", "-l", "app=web", "-o", "name").stdout.split() == ["pod/web-1"]
        assert c.kubectl("get", "pods", "-l", "app=db").stderr.strip() == "No resources found in default namespace."
        everything = c.kubectl("get", "all").stdout
        assert "pod/web-1" in everything and "service/web" in everything and "deployment.apps/web" in everything
        assert c.kubectl("get", "pods", "--chunk-size=1", "-o", "name").stdout.split() == ["pod/web-1"]

        described = c.kubectl("describe", "pod", "web-1").stdout
        assert "Status:       Pending" in described and "Image:        netplane/echo:2" in described
        assert "Port:         8080/TCP" in described and "Events:" in described
        service = c.kubectl("describe", "svc", "web").stdout
        assert re.search(r"^Selector: +app=web$", service, re.M)
        assert re.search(r"^Internal Traffic Policy: +Cluster$", service, re.M)  # a default, as upstream's
        assert "Roles:              control-plane" in c.kubectl("describe", "node", "node-1").stdout

        c.kubectl("apply", "-f", "-", "--dry-run=server", stdin=MANIFEST)
        assert c.kubectl("delete", "deploy", "web", "--dry-run=server").stdout.strip() == 'deployment.apps "web" deleted (server dry run)'
        assert c.kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "5"
        assert c.kubectl("delete", "pod", "web-1").stdout.strip() == 'pod "web-1" deleted'
        assert "NotFound" in c.kubectl("get", "pod", "web-1", ok=False).stderr


def test_kubectl_get_watch_and_delete_waiting_for_a_terminating_pod(tmp_path):
    with Cluster(tmp_path) as c:
        c.kubectl("create", "-f", "-", stdin=WORKLOAD)
        watcher = subprocess.Popen(c.argv("get", "pods", "-w"), stdout=subprocess.PIPE, text=True)
        try:
            lines = [watcher.stdout.readline(), watcher.stdout.readline()]  # the header and web-1
            c.kubectl("run", "bound", "--image=netplane/echo", "--overrides", '{"spec":{"nodeName":"node-1"}}')
            lines.append(watcher.stdout.readline())
        finally:
            watcher.kill()
            watcher.wait()
        assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert lines[1].split()[:3] == ["web-1", "0/1", "Pending"] and lines[2].split()[:3] == ["bound", "0/1", "Pending"]

        deleting = subprocess.Popen(c.argv("delete", "pod", "bound"), stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while "deletionTimestamp" not in c.store.get("pods", "default", "bound")["metadata"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            assert deleting.poll() is None  # kubectl waits for the pod to be gone
            c.store.delete("pods", "default", "bound", DeleteOptions(grace_period_seconds=0))  # what the kubelet does
            assert deleting.wait(10) == 0
        finally:
            deleting.kill()
        assert deleting.stdout.read().strip() == 'pod "bound" deleted'


def test_official_python_client(tmp_path):
    import kubernetes
    with Cluster(tmp_path) as c, kubernetes.client.ApiClient(kubernetes.client.Configuration(host=c.url)) as client:
        core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
        for i in range(3):
            core.create_namespaced_pod("default", pod(f"p{i}", {"app": "web"}))
        bound = core.create_namespaced_pod("default", pod("bound", {"app": "web"}, node="node-1"))
        assert bound.metadata.generation == 1 and bound.status.phase == "Pending"

        names, token = [], None
        while True:
            page = core.list_namespaced_pod("default", limit=2, _continue=token)
            names += [p.metadata.name for p in page.items]
            token = page.metadata._continue
            if not token:
                break
        assert names == ["bound", "p0", "p1", "p2"]
        watch = kubernetes.watch.Watch()
        stream = watch.stream(core.list_namespaced_pod, "default", label_selector="app=web", timeout_seconds=1,
                              allow_watch_bookmarks=True)
        events = list(stream)
        assert [(e["type"], e["object"].metadata.name) for e in events if e["type"] != "BOOKMARK"] == \
            [("ADDED", n) for n in names]
        assert events[-1]["type"] == "BOOKMARK" and watch.resource_version == str(c.store.resource_version)

        patched = core.patch_namespaced_pod("p0", "default", {  # a dict is sent as a strategic merge patch
            "metadata": {"labels": {"tier": "front"}},
            "spec": {"containers": [{"name": "echo", "image": "netplane/echo:2"}, {"name": "side", "image": "x"}]}})
        assert patched.metadata.labels == {"app": "web", "tier": "front"}
        assert [(x.name, x.image) for x in patched.spec.containers] == [("echo", "netplane/echo:2"), ("side", "x")]

        terminating = core.delete_namespaced_pod("bound", "default")
        assert terminating.metadata.deletion_grace_period_seconds == 30 and terminating.metadata.deletion_timestamp
        assert core.read_namespaced_pod("bound", "default").metadata.deletion_timestamp
        core.delete_namespaced_pod("bound", "default", grace_period_seconds=0)
        core.delete_namespaced_pod("p1", "default")  # unbound: at once
        with pytest.raises(kubernetes.client.ApiException) as e:
            core.read_namespaced_pod("bound", "default")
        assert e.value.status == 404

        apps.create_namespaced_deployment("default", deployment())
        scale = apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
        assert (scale.kind, scale.spec.replicas, scale.status.selector) == ("Scale", 4, "app=web")
        assert apps.read_namespaced_deployment_scale("web", "default").spec.replicas == 4
        assert apps.read_namespaced_deployment("web", "default").spec.replicas == 4
        with pytest.raises(kubernetes.client.ApiException) as e:
            apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": -2}})
        assert e.value.status == 422


def test_delete_collection_through_the_official_client_and_kubectl(tmp_path):
    """deletecollection deletes what the selectors match, each as a DELETE would (a pod bound to a
    node is only marked), and lists what it deleted; namespaces have no deletecollection, as upstream."""
    import kubernetes
    with Cluster(tmp_path) as c, kubernetes.client.ApiClient(kubernetes.client.Configuration(host=c.url)) as client:
        core = kubernetes.client.CoreV1Api(client)
        for name, labels in (("a", {"app": "web"}), ("b", {"app": "web"}), ("c", {"app": "db"})):
            core.create_namespaced_pod("default", pod(name, labels))
        core.create_namespaced_pod("default", pod("bound", {"app": "web"}, node="node-1"))
        core.delete_collection_namespaced_pod("default", label_selector="app=web")  # the client reads a Status
        left = {p.metadata.name: p.metadata.deletion_timestamp for p in core.list_namespaced_pod("default").items}
        assert set(left) == {"bound", "c"} and left["bound"] is not None and left["c"] is None
        status, body, _ = asyncio.run(http(c.port, "DELETE", f"{PODS}?fieldSelector=metadata.name%3Dc"))
        assert status == 200 and body["kind"] == "PodList"  # kube-apiserver's answer: the list of what went
        assert [p["metadata"]["name"] for p in body["items"]] == ["c"]
        status, _, _ = asyncio.run(http(c.port, "DELETE", "/api/v1/namespaces"))
        assert status == 405
        verbs = {r.name: r.verbs for r in core.get_api_resources().resources}
        assert "deletecollection" in verbs["pods"] and "deletecollection" not in verbs["namespaces"]


def test_every_kind_gets_upstreams_defaults(tmp_path):
    """What `kubectl get -o json` shows of objects made by kubectl's own generators, field for field
    as kube-apiserver v1.32 defaults them (pkg/apis/core/v1 and apps/v1 defaults.go, and the Priority
    and DefaultTolerationSeconds admission plugins)."""
    def got(c: Cluster, *what: str) -> dict:
        return json.loads(c.kubectl("get", *what, "-o", "json").stdout)

    with Cluster(tmp_path) as c:
        c.kubectl("create", "deployment", "web", "--image=nginx")
        deploy = got(c, "deployment", "web")["spec"]
        assert deploy["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        assert (deploy["replicas"], deploy["revisionHistoryLimit"], deploy["progressDeadlineSeconds"]) == (1, 10, 600)
        template = deploy["template"]["spec"]
        assert {k: template[k] for k in ("restartPolicy", "dnsPolicy", "terminationGracePeriodSeconds", "schedulerName",
                                          "securityContext")} == {
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "schedulerName": "default-scheduler", "securityContext": {}}
        container = template["containers"][0]
        assert {k: container[k] for k in ("imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy",
                                           "resources")} == {
            "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File", "resources": {}}

        c.kubectl("run", "box", "--image=busybox:1.36", "--port=8080", "--", "sleep", "3600")
        c.kubectl("patch", "pod", "box", "-p", '{"spec":{"containers":[{"name":"box","readinessProbe":'
                                                '{"httpGet":{"port":8080}}}]}}')
        pod = got(c, "pod", "box")
        box = pod["spec"]["containers"][0]
        assert box["imagePullPolicy"] == "IfNotPresent" and box["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
        assert box["readinessProbe"] == {"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                         "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
        assert (pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
        assert pod["spec"]["tolerations"] == [
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
        assert pod["status"]["qosClass"] == "BestEffort"
        described = c.kubectl("describe", "pod", "box").stdout
        assert "http-get http://:8080/ delay=0s timeout=1s period=10s #success=1 #failure=3" in described

        c.kubectl("create", "service", "nodeport", "web", "--tcp=80:8080")
        service = got(c, "service", "web")["spec"]
        assert (service["internalTrafficPolicy"], service["externalTrafficPolicy"], service["sessionAffinity"]) == (
            "Cluster", "Cluster", "None")
        c.kubectl("create", "namespace", "team-a")
        namespace = got(c, "namespace", "team-a")
        assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
        assert namespace["spec"] == {"finalizers": ["kubernetes"]} and namespace["status"] == {"phase": "Active"}
        c.kubectl("apply", "-f", "-", stdin="""
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: netplane/echo}]}
""")
        daemonset = got(c, "daemonset", "agent")["spec"]
        assert daemonset["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
        assert daemonset["revisionHistoryLimit"] == 10


def test_kubectl_events_for_an_object_and_field_selector_values_as_upstream_parses_them(tmp_path):
    """`kubectl events --for deployment/web` selects on involvedObject.apiVersion=apps/v1: a value
    with a slash. Values hold anything, a backslash escapes `,` `=` `!`; an unknown field label is
    400 with upstream's words."""
    def event(name: str, kind: str, version: str, reason: str) -> dict:
        return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": kind, "apiVersion": version, "name": "web", "namespace": "default"},
                "reason": reason, "message": f"{reason} happened, x=1,y", "type": "Normal",
                "source": {"component": "tests"}, "count": 1,
                "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"}

    with Cluster(tmp_path) as c:
        c.kubectl("create", "deployment", "web", "--image=nginx")
        c.kubectl("run", "web", "--image=nginx")
        for e in (event("e1", "Deployment", "apps/v1", "ScalingReplicaSet"), event("e2", "Pod", "v1", "Scheduled")):
            assert asyncio.run(http(c.port, "POST", "/api/v1/namespaces/default/events", e))[0] == 201
        shown = c.kubectl("events", "--for", "deployment/web").stdout
        assert "ScalingReplicaSet" in shown and "Scheduled" not in shown
        shown = c.kubectl("events", "--for", "pod/web").stdout
        assert "Scheduled" in shown and "ScalingReplicaSet" not in shown
        path = "/api/v1/namespaces/default/events?fieldSelector="
        status, body, _ = asyncio.run(http(c.port, "GET", path + "involvedObject.apiVersion%3Dapps%2Fv1"))
        assert status == 200 and [e["metadata"]["name"] for e in body["items"]] == ["e1"]
        status, body, _ = asyncio.run(http(c.port, "GET", path + "reason!%3DScheduled,type%3D%3DNormal"))
        assert [e["metadata"]["name"] for e in body["items"]] == ["e1"]
        status, body, _ = asyncio.run(http(c.port, "GET", path + "spec.nodeName%3Dx"))
        assert (status, body["reason"]) == (400, "BadRequest")
        assert body["message"] == "field label not supported: spec.nodeName"


SSA_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: "nginx:1.25"}]
"""


def test_server_side_apply_with_kubectl_conflicts_force_and_managed_fields(tmp_path):
    """`kubectl apply --server-side` as against kube-apiserver: fields another manager set to other
    values are a conflict worded as upstream's, --force-conflicts takes them over, and a field the
    applier stops applying goes (back to its default)."""
    def managers(c: Cluster) -> list[tuple[str, str]]:
        shown = c.kubectl("get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout
        meta = json.loads(shown)["metadata"]
        return [(m["manager"], m["operation"]) for m in meta["managedFields"]]

    with Cluster(tmp_path) as c:
        c.kubectl("create", "deployment", "web", "--image=nginx")
        assert managers(c) == [("kubectl-create", "Update")]
        refused = c.kubectl("apply", "--server-side", "-f", "-", stdin=SSA_DEPLOYMENT, ok=False)
        assert refused.returncode != 0
        assert ('error: Apply failed with 2 conflicts: conflicts with "kubectl-create" using apps/v1:\n'
                '- .spec.replicas\n- .spec.template.spec.containers[name="nginx"].image') in refused.stderr
        assert c.kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}").stdout == "1"
        applied = c.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=SSA_DEPLOYMENT)
        assert applied.stdout.strip() == "deployment.apps/web serverside-applied"
        assert managers(c) == [("kubectl", "Apply"), ("kubectl-create", "Update")]
        obj = json.loads(c.kubectl("get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout)
        assert obj["spec"]["replicas"] == 3
        assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
        mine = next(m for m in obj["metadata"]["managedFields"] if m["manager"] == "kubectl")
        assert mine["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"nginx"}'] == {
            ".": {}, "f:image": {}, "f:name": {}}
        create = next(m for m in obj["metadata"]["managedFields"] if m["manager"] == "kubectl-create")
        assert "f:replicas" not in create["fieldsV1"]["f:spec"]  # taken over by the forced apply

        rv = obj["metadata"]["resourceVersion"]
        assert "serverside-applied" in c.kubectl("apply", "--server-side", "-f", "-", stdin=SSA_DEPLOYMENT).stdout
        assert c.kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.resourceVersion}").stdout == rv
        c.kubectl("apply", "--server-side", "-f", "-", stdin=SSA_DEPLOYMENT.replace("  replicas: 3\n", ""))
        assert c.kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}").stdout == "1"  # the default
        another = SSA_DEPLOYMENT.replace("name: web}", "name: api}")
        created = c.kubectl("apply", "--server-side", "-f", "-", stdin=another)
        assert created.stdout.strip() == "deployment.apps/api serverside-applied"


def test_server_side_apply_from_the_python_client_shares_equal_fields_and_conflicts_on_others(tmp_path):
    import kubernetes
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}
    with Cluster(tmp_path) as c, kubernetes.client.ApiClient(kubernetes.client.Configuration(host=c.url)) as client:
        services = kubernetes.dynamic.DynamicClient(client).resources.get(api_version="v1", kind="Service")
        made = services.server_side_apply(body=service, namespace="default", field_manager="team-a")
        assert made.spec.ports[0].port == 80 and made.spec.type == "ClusterIP"
        same = dict(service, metadata={"name": "web", "labels": {"team": "a", "tier": "front"}})
        shared = services.server_side_apply(body=same, namespace="default", field_manager="team-b")
        owners = {m["manager"]: m["fieldsV1"] for m in shared.to_dict()["metadata"]["managedFields"]}
        assert owners["team-a"]["f:metadata"]["f:labels"] == {"f:team": {}}
        assert owners["team-b"]["f:metadata"]["f:labels"] == {"f:team": {}, "f:tier": {}}
        other = dict(service, metadata={"name": "web", "labels": {"team": "b"}})
        with pytest.raises(kubernetes.dynamic.exceptions.ConflictError) as conflict:
            services.server_side_apply(body=other, namespace="default", field_manager="team-b")
        status = json.loads(conflict.value.body)
        assert (status["code"], status["reason"]) == (409, "Conflict")
        assert status["message"] == 'Apply failed with 1 conflict: conflict with "team-a": .metadata.labels.team'
        assert status["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".metadata.labels.team",
                                                "message": 'conflict with "team-a"'}]
        status, body, _ = asyncio.run(http(c.port, "PATCH", "/api/v1/namespaces/default/services/web",
                                           json.dumps(service), "application/apply-patch+yaml"))
        assert (status, body["message"]) == (422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                                                  'value: is required for apply patch')
        kubernetes.client.CoreV1Api(client).create_namespaced_service("default", dict(service, metadata={"name": "x"}))
        made_by = c.kubectl("get", "service", "x", "-o", "jsonpath={.metadata.managedFields[0].manager}",
                            "--show-managed-fields").stdout
        assert made_by == "OpenAPI-Generator"  # no fieldManager: the User-Agent's product, as upstream


def test_the_proxy_subresources_reach_a_pod_and_a_services_endpoint(tmp_path):
    """pods/NAME[:PORT]/proxy/PATH and services/NAME:PORT/proxy/PATH pass a request on and its answer
    back (status, headers, body); here the server's own namespace is the network and the "pod" is an
    HTTP server on 127.0.0.1 (tests/test_kubectl_lab.py goes through a lab with kubectl proxy)."""
    import socketserver
    from http.server import BaseHTTPRequestHandler

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = f"{self.command} {self.path}".encode()
            self.send_response(418 if "teapot" in self.path else 200)
            self.send_header("X-Backend", "echo")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    backend = socketserver.TCPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = backend.server_address[1]
    try:
        with Cluster(tmp_path) as c:
            made = c.store.create("pods", {"metadata": {"name": "web", "namespace": "default"}, "spec": {
                "containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": port}]}]}})
            c.store.update("pods", {**made, "status": {"phase": "Running", "podIP": "127.0.0.1"}}, "status")
            c.store.create("services", {"metadata": {"name": "web", "namespace": "default"}, "spec": {
                "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": port}]}})
            c.store.create("endpointslices", {"metadata": {"name": "web-1", "namespace": "default", "labels": {
                "kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
            for path in ("pods/web/proxy/a/b?x=1", f"pods/web:{port}/proxy/a/b?x=1", "pods/web:http/proxy/a/b?x=1",
                         "services/web:http/proxy/a/b?x=1"):
                status, body = asyncio.run(raw_get(c.port, f"/api/v1/namespaces/default/{path}"))
                assert (status, body) == (200, b"GET /a/b?x=1"), path
            assert asyncio.run(raw_get(c.port, "/api/v1/namespaces/default/pods/web/proxy/teapot"))[0] == 418
            status, body = asyncio.run(raw_get(c.port, "/api/v1/namespaces/default/services/web:nope/proxy/"))
            assert status == 503 and b'no service port \\"nope\\" found for service \\"web\\"' in body
            status, listed, _ = asyncio.run(http(c.port, "GET", "/api/v1"))
            assert {"pods/proxy", "services/proxy"} <= {r["name"] for r in listed["resources"]}
    finally:
        backend.shutdown()


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.read()


def test_kubectl_drain_evicts_through_the_eviction_subresource_in_protobuf(tmp_path):
    """kubectl drain cordons the node, then POSTs a policy/v1 Eviction per pod (in protobuf, as
    client-go's typed client sends it); each eviction deletes its pod with the Eviction's options."""
    with Cluster(tmp_path) as c:
        c.kubectl("apply", "-f", "-", stdin=WORKLOAD)
        c.store.create("pods", {**pod("stray", {"app": "x"}, node="node-1")})
        drained = c.kubectl("drain", "node-1", "--force", "--grace-period=0", "--timeout=30s")
        assert "evicting pod default/stray" in drained.stdout and "pod/stray evicted" in drained.stdout
        assert "node/node-1 drained" in drained.stdout
        assert c.kubectl("get", "pods", "-o", "name").stdout == "pod/web-1\n"  # not on node-1
        assert json.loads(c.kubectl("get", "node", "node-1", "-o", "json").stdout)["spec"]["unschedulable"] is True
        c.kubectl("run", "late", "--image=nginx", "--overrides", '{"spec":{"nodeName":"node-1"}}')
        status, body, _ = asyncio.run(http(c.port, "POST", f"{PODS}/late/eviction", {
            "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "late"},
            "deleteOptions": {"gracePeriodSeconds": 30}}))
        assert (status, body["status"], body["code"]) == (201, "Success", 201)
        assert json.loads(c.kubectl("get", "pod", "late", "-o", "json").stdout)["metadata"]["deletionTimestamp"]
        eviction = _pb(1, _pb(1, "late")) + _pb(2, _pb(1, 0))  # metadata.name, deleteOptions.gracePeriodSeconds 0
        wire = b"k8s\x00" + _pb(1, _pb(1, "policy/v1") + _pb(2, "Eviction")) + _pb(2, eviction)
        status, body, _ = asyncio.run(http(c.port, "POST", f"{PODS}/late/eviction", wire,
                                           "application/vnd.kubernetes.protobuf"))
        assert (status, body["status"]) == (201, "Success")  # client-go's typed clients send protobuf
        assert c.kubectl("get", "pods", "-o", "name").stdout == "pod/web-1\n"


EVERY_FIELD_KIND = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [
        {matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
      volumes: [{name: v, emptyDir: {sizeLimit: 1Gi}}]
      securityContext: {runAsUser: 1000}
      containers:
      - name: web
        image: nginx
        resources: {limits: {cpu: 100m, memory: 64Mi}}
        readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 5}
        volumeMounts: [{name: v, mountPath: /v}]
"""


def test_kubectl_explain_and_apply_read_the_served_schemas(tmp_path):
    """Each kind's schema carries its group-version-kind and every field, with upstream's
    descriptions (read from the official client's models): kubectl explain prints them, and
    kubectl apply computes its patches from them without a warning, down to affinity and probes."""
    with Cluster(tmp_path) as c:
        explained = c.kubectl("explain", "pod.spec.containers.ports").stdout
        assert "FIELD: ports <[]ContainerPort>" in explained and "List of ports to expose" in explained
        assert "containerPort\t<integer> -required-" in explained and "hostIP\t<string>\n" in explained
        assert "maxSurge" in c.kubectl("explain", "deployment.spec.strategy.rollingUpdate").stdout
        assert "involvedObject" in c.kubectl("explain", "events").stdout
        c.kubectl("apply", "-f", "-", stdin=EVERY_FIELD_KIND)
        changed = EVERY_FIELD_KIND.replace("periodSeconds: 5", "periodSeconds: 7")
        changed = changed.replace("values: [a]", "values: [a, b]")
        applied = c.kubectl("apply", "-f", "-", stdin=changed.replace("memory: 64Mi", "memory: 128Mi"))
        assert applied.stdout.strip() == "deployment.apps/web configured" and applied.stderr == ""
        spec = json.loads(c.kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["template"]["spec"]
        assert spec["containers"][0]["readinessProbe"]["periodSeconds"] == 7
        assert spec["containers"][0]["resources"]["limits"]["memory"] == "128Mi"
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == ["a", "b"]


def test_openapi_v2_is_a_swagger_document_of_every_served_path(tmp_path):
    """/openapi/v2 as JSON, which Swagger's editor opens (the seeds read the API that way): Swagger
    2.0, every served path, references into ``definitions`` that all resolve; protobuf is not served."""
    async def main():
        async with serving(tmp_path) as (_, _api, port):
            status, doc, _ = await http(port, "GET", "/openapi/v2")
            assert status == 200 and doc["swagger"] == "2.0"
            assert "/api/v1/namespaces/{namespace}/pods/{name}" in doc["paths"]
            assert "/apis/apps/v1/namespaces/{namespace}/deployments" in doc["paths"]
            refs = set(re.findall(r'"\$ref":"#/definitions/([^"]+)"', json.dumps(doc, separators=(",", ":"))))
            assert refs and refs <= set(doc["definitions"])
            create = doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"]
            assert any(p["in"] == "body" and p["schema"]["$ref"] == "#/definitions/io.k8s.api.core.v1.Pod"
                       for p in create["parameters"])
            status, body, _ = await http(port, "GET", "/openapi/v2", accept="text/csv")
            assert (status, body["reason"]) == (406, "NotAcceptable")

    asyncio.run(main())


def test_a_kind_the_server_does_not_serve_is_no_match_for_kubectl_as_upstream_says(tmp_path):
    """kubectl validates a kind that OpenAPI v3 lacks against /openapi/v2 in protobuf; served (as
    kube-openapi serves it), that ends in kubectl's own words instead of "failed to download openapi"."""
    with Cluster(tmp_path) as c:
        for manifest, kind, version in (("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: x}\n",
                                         "PersistentVolumeClaim", "v1"),
                                        ("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
                                         "Widget", "example.com/v1")):
            refused = c.kubectl("apply", "-f", "-", stdin=manifest, ok=False)
            assert refused.returncode != 0
            assert f'no matches for kind "{kind}" in version "{version}"' in refused.stderr, refused.stderr
            assert "openapi" not in refused.stderr


def test_a_client_side_apply_then_a_server_side_one_takes_over_without_conflict(tmp_path):
    """kubectl's move from client-side to server-side apply: the fields the last-applied annotation
    covers go to the `kubectl` manager without a conflict, and the annotation follows the new config;
    another manager's field still conflicts."""
    with Cluster(tmp_path) as c:
        c.kubectl("apply", "-f", "-", stdin=SSA_DEPLOYMENT)
        c.kubectl("annotate", "deployment", "web", "owner=ops", "--field-manager=ops")
        four = SSA_DEPLOYMENT.replace("replicas: 3", "replicas: 4")
        moved = c.kubectl("apply", "--server-side", "-f", "-", stdin=four)
        assert moved.stdout.strip() == "deployment.apps/web serverside-applied", moved.stderr
        obj = json.loads(c.kubectl("get", "deployment", "web", "-o", "json").stdout)
        assert obj["spec"]["replicas"] == 4
        last = json.loads(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
        assert last["spec"]["replicas"] == 4
        clash = SSA_DEPLOYMENT.replace("metadata: {name: web}", "metadata: {name: web, annotations: {owner: dev}}")
        refused = c.kubectl("apply", "--server-side", "-f", "-", stdin=clash, ok=False)
        assert refused.returncode != 0
        assert 'conflict with "ops" using apps/v1: .metadata.annotations.owner' in refused.stderr


def test_ephemeral_containers_are_added_through_their_subresource_and_never_changed(tmp_path):
    import kubernetes
    from kubernetes.client import ApiException
    with Cluster(tmp_path) as c, kubernetes.client.ApiClient(kubernetes.client.Configuration(host=c.url)) as client:
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespaced_pod("default", pod("web", {"app": "web"}, node="node-1"))
        debugger = {"name": "debugger", "image": "busybox", "command": ["sh"], "stdin": True, "tty": True,
                    "targetContainerName": "echo"}
        added = core.patch_namespaced_pod_ephemeralcontainers(
            "web", "default", {"spec": {"ephemeralContainers": [debugger]}})
        made = added.spec.ephemeral_containers[0]
        assert (made.name, made.target_container_name, made.termination_message_policy) == \
            ("debugger", "echo", "File")  # defaulted as a container
        assert core.read_namespaced_pod_ephemeralcontainers("web", "default").spec.ephemeral_containers[0].stdin

        def refused(body: dict) -> list[str]:
            with pytest.raises(ApiException) as err:
                core.replace_namespaced_pod_ephemeralcontainers("web", "default", body)
            assert err.value.status == 422
            return [f"{cause['field']}: {cause['message']}" for cause in json.loads(err.value.body)["details"]["causes"]]

        current = core.read_namespaced_pod("web", "default").to_dict()
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                "spec": {**client.sanitize_for_serialization(added.spec)}}
        body["spec"]["ephemeralContainers"] = []
        assert refused(body) == ['spec.ephemeralContainers: Forbidden: existing ephemeral containers "debugger" '
                                 "may not be removed"]
        body["spec"]["ephemeralContainers"] = [{**debugger, "image": "debian"}]
        assert "may not be changed" in refused(body)[0]
        body["spec"]["ephemeralContainers"] = [
            client.sanitize_for_serialization(made),
            {"name": "echo", "image": "busybox", "ports": [{"containerPort": 80}], "targetContainerName": "nope"}]
        assert refused(body) == [
            'spec.ephemeralContainers[1].name: Duplicate value: "echo"',
            "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
            'spec.ephemeralContainers[1].targetContainerName: Not found: "nope"']
        assert current["spec"]["containers"] == core.read_namespaced_pod("web", "default").to_dict()["spec"]["containers"]
        discovered = json.loads(c.kubectl("get", "--raw", "/api/v1").stdout)["resources"]
        assert {"name": "pods/ephemeralcontainers", "kind": "Pod"}.items() <= \
            next(r for r in discovered if r["name"] == "pods/ephemeralcontainers").items()
