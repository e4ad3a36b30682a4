"""Events as the components record them: the recorder against a real API server (repeats counted on
one Event, written in the background), the scheduler's words, and the hour an Event lives."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from netplane.api.events import NORMAL, Recorder
from netplane.controllers.eventttl import expired
from netplane.controllers import scheduler
from netplane.controllers.scheduling import fit
from support.api import Cluster, serving


def test_the_recorder_writes_in_the_background_and_counts_a_repeat_on_the_same_event(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, client, _port):
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-9", "uid": "u9"}}
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}
            await client.create("namespaces", {"metadata": {"name": "shop"}})
            recorder = Recorder(client, "kubelet", "node-9")
            for _ in range(3):
                recorder.record(pod, NORMAL, "Started", "Started container app", "spec.containers{app}")
            recorder.record(node, NORMAL, "NodeReady", "Node node-9 status is now: NodeReady")
            await recorder.flushed()
            recorder.record(pod, NORMAL, "Started", "Started container app", "spec.containers{app}")  # later
            await recorder.flushed()
            in_shop = (await client.list("events", "shop"))["items"]
            in_default = (await client.list("events", "default"))["items"]
            return in_shop, in_default

    in_shop, in_default = asyncio.run(main())
    assert len(in_shop) == 1 and in_shop[0]["count"] == 4 and in_shop[0]["reason"] == "Started"
    assert in_shop[0]["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u1",
                                            "namespace": "shop", "fieldPath": "spec.containers{app}"}
    assert in_shop[0]["source"] == {"component": "kubelet", "host": "node-9"}
    assert in_shop[0]["metadata"]["name"].startswith("web.")
    assert [e["involvedObject"]["kind"] for e in in_default] == ["Node"]  # a Node's Events live in default


def test_the_schedulers_words_for_no_fitting_node():
    not_ready = {"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    cordoned = {"metadata": {"name": "b"}, "spec": {"unschedulable": True},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}
    chosen, verdicts = scheduler.place(pod, fit.Cluster([not_ready, cordoned], []))
    assert chosen is None and fit.message(verdicts, 2) == (
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
        "1 node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for "
        "scheduling.")


def test_an_event_expires_an_hour_after_it_was_last_seen():
    now = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    stamp = lambda delta: (now - delta).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    assert expired({"metadata": {}, "lastTimestamp": stamp(timedelta(minutes=61))}, now)
    assert not expired({"metadata": {}, "lastTimestamp": stamp(timedelta(minutes=59))}, now)
    assert not expired({"metadata": {"creationTimestamp": stamp(timedelta(hours=5))},
                        "lastTimestamp": stamp(timedelta(minutes=1))}, now)


def test_events_k8s_io_v1_serves_the_same_events_in_its_own_words(tmp_path):
    """An Event written through either group is read through both; events.k8s.io/v1 renames the
    fields, maps its field selector labels, watches converted, refuses what upstream refuses."""
    import kubernetes
    from kubernetes.client import EventsV1Api, CoreV1Api, ApiException

    with Cluster(tmp_path) as c, kubernetes.client.ApiClient(kubernetes.client.Configuration(host=c.url)) as client:
        core, events = CoreV1Api(client), EventsV1Api(client)
        core.create_namespaced_event("default", {
            "metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Started", "message": "Started container app", "type": "Normal", "count": 3,
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-12-07T10:00:00Z", "lastTimestamp": "2026-12-07T10:05:00Z"})
        made = events.create_namespaced_event("default", {
            "metadata": {"name": "db.1"}, "regarding": {"kind": "Pod", "name": "db", "namespace": "default"},
            "reason": "Killing", "note": "Stopping container db", "type": "Normal", "action": "Kill",
            "eventTime": "2026-12-07T10:06:00.000000Z", "reportingController": "example.com/operator",
            "reportingInstance": "operator-1"})
        assert (made.regarding.name, made.note, made.reporting_controller) == ("db", "Stopping container db",
                                                                               "example.com/operator")

        # an Event of the core group has no eventTime, which the client's model of this group
        # requires (as against kube-apiserver): read as JSON
        read = json.loads(events.read_namespaced_event("web.1", "default", _preload_content=False).data)
        assert (read["apiVersion"], read["regarding"]["name"], read["note"]) == \
            ("events.k8s.io/v1", "web", "Started container app")
        assert (read["deprecatedCount"], read["deprecatedSource"]["host"]) == (3, "node-1")
        assert "involvedObject" not in read and "message" not in read
        as_core = core.read_namespaced_event("db.1", "default")
        assert (as_core.involved_object.name, as_core.message, as_core.reporting_component) == \
            ("db", "Stopping container db", "example.com/operator")

        about_db = events.list_namespaced_event("default", field_selector="regarding.name=db")
        assert [e.metadata.name for e in about_db.items] == ["db.1"]
        with pytest.raises(ApiException) as refused:
            events.list_namespaced_event("default", field_selector="involvedObject.name=db")
        assert refused.value.status == 400 and "field label not supported: involvedObject.name" in refused.value.body

        patched = events.patch_namespaced_event("db.1", "default", {"note": "Stopped"})
        assert patched.note == "Stopped" and core.read_namespaced_event("db.1", "default").message == "Stopped"
        watched = kubernetes.watch.Watch().stream(events.list_namespaced_event, "default", timeout_seconds=1,
                                                  field_selector="reportingController=example.com/operator")
        assert [(e["type"], e["object"].regarding.name, e["object"].note) for e in watched] == \
            [("ADDED", "db", "Stopped")]

        bare = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "bare"},  # core's rules pass it
                "regarding": {"kind": "Pod", "name": "db"}, "reason": "X", "type": "Normal", "deprecatedCount": 2}
        refused = c.kubectl("create", "-f", "-", stdin=json.dumps(bare), ok=False)
        assert refused.returncode == 1
        for field in ("eventTime: Required value", "deprecatedCount: Invalid value: \"\": needs to be unset",
                      "reportingController: Required value", "reportingInstance: Required value",
                      "action: Required value"):
            assert field in refused.stderr

        table = c.kubectl("get", "events.v1.events.k8s.io", "-o", "custom-columns=NAME:.metadata.name,"
                          "ABOUT:.regarding.name,NOTE:.note").stdout.split("\n")
        assert table[1:3] == ["db.1    db      Stopped", "web.1   web     Started container app"]
        assert "Stopped" in c.kubectl("get", "events.events.k8s.io", "db.1").stdout
        explained = c.kubectl("explain", "events.regarding", "--api-version=events.k8s.io/v1").stdout
        assert "GROUP:      events.k8s.io" in explained and "FIELD: regarding <ObjectReference>" in explained
        plain = json.loads(c.kubectl("get", "events", "-o", "json").stdout)["items"]  # the core group first
        assert {e["apiVersion"] for e in plain} == {"v1"} and all("involvedObject" in e for e in plain)
        c.kubectl("delete", "events.events.k8s.io", "db.1")
        assert [e.metadata.name for e in core.list_namespaced_event("default").items] == ["web.1"]
