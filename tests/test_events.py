"""Events as the components record them: the recorder against a real API server (repeats counted on
one Event, written in the background), the scheduler's words, and the hour an Event lives."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from netplane.api.events import NORMAL, Recorder
from netplane.controllers.eventttl import expired
from netplane.controllers.scheduler import unschedulable_message
from test_api import serving


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
    assert unschedulable_message([not_ready, cordoned]) == (
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
