"""The embedded API server over real HTTP on loopback. Conventions for tests:

- each test runs its own event loop (``asyncio.run``) and starts its own server on port 0 there;
- the store is a SQLite file in ``tmp_path``; nothing is mocked;
- objects live in the ``default`` namespace unless a test is about namespaces.
"""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

from labtools import eventually_async
from support.api import assert_status, serving, take
from support.objects import SAMPLES, pod
from netplane.api import resources
from netplane.api.client import Client, retry_on_conflict
from netplane.api.errors import ApiError, Gone
from netplane.api.informer import Informer
from netplane.api.server import start
from netplane.api.store import Store


SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


async def raw(port: int, method: str, path: str, data: bytes | None = None, token: str | None = None,
              content_type: str = "application/json"):
    """(HTTP status, decoded JSON body) of one request, bypassing the client."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = content_type
    async with aiohttp.ClientSession(headers=headers) as http:
        body = None if data is None else io.BytesIO(data)
        async with http.request(method, f"http://127.0.0.1:{port}{path}", data=body) as resp:
            return resp.status, json.loads(await resp.read())


# -- resources table


def test_lookup_accepts_plural_singular_and_alias_and_lists_the_supported_ones():
    assert resources.lookup("svc") is resources.lookup("Service") is resources.by_plural("services")
    assert resources.lookup("endpointslice").group == "discovery.k8s.io"
    assert resources.by_kind("Node").namespaced is False
    with pytest.raises(KeyError, match="supported: namespaces \\(ns\\)"):
        resources.lookup("widgets")


def test_paths_follow_the_api_groups():
    pods, slices = resources.by_plural("pods"), resources.by_plural("endpointslices")
    assert resources.base_path(pods, "kube-system") == "/api/v1/namespaces/kube-system/pods"
    assert resources.base_path(pods) == "/api/v1/pods"
    assert resources.base_path(resources.lookup("ns"), "ignored") == "/api/v1/namespaces"
    assert resources.base_path(slices, "a") == "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"
    assert resources.api_version(slices) == "discovery.k8s.io/v1"


# -- CRUD and errors


@pytest.mark.parametrize("plural", sorted(SAMPLES))
def test_crud(tmp_path, plural):
    async def main():
        async with serving(tmp_path) as (_, api, _port):
            res = resources.by_plural(plural)
            made = await api.create(plural, SAMPLES[plural])
            meta = made["metadata"]
            assert made["kind"] == res.kind and made["apiVersion"] == resources.api_version(res)
            assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"]) > 0
            assert ("namespace" in meta) == res.namespaced
            name, ns = meta["name"], meta.get("namespace")
            assert await api.get(plural, name, ns) == made

            listed = await api.list(plural, ns)
            assert listed["kind"] == f"{res.kind}List" and listed["metadata"]["resourceVersion"]
            assert made in listed["items"]

            made["metadata"].setdefault("labels", {})["changed"] = "yes"
            updated = await api.update(plural, made)
            assert updated["metadata"]["labels"]["changed"] == "yes"
            assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
            assert updated["metadata"]["uid"] == meta["uid"]

            deleted = await api.delete(plural, name, ns)
            assert deleted["metadata"]["uid"] == meta["uid"]
            with pytest.raises(ApiError) as e:
                await api.get(plural, name, ns)
            assert e.value.code == 404

    asyncio.run(main())


def test_errors_are_status_objects(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            pods = "/api/v1/namespaces/default/pods"
            code, body = await raw(port, "GET", f"{pods}/nope")
            assert code == 404
            assert_status(body, 404, "NotFound")
            assert body["details"] == {"name": "nope", "kind": "pods"}

            await api.create("pods", pod("a"))
            code, body = await raw(port, "POST", pods, json.dumps(pod("a")).encode())
            assert_status(body, 409, "AlreadyExists")

            stale = await api.get("pods", "a")
            await api.update("pods", {**stale, "metadata": {**stale["metadata"], "labels": {"x": "1"}}})
            code, body = await raw(port, "PUT", f"{pods}/a", json.dumps(stale).encode())
            assert code == 409
            assert_status(body, 409, "Conflict")

            code, body = await raw(port, "POST", pods, json.dumps(pod("Bad_Name")).encode())
            assert code == 422
            assert_status(body, 422, "Invalid")
            assert body["details"]["causes"][0]["field"] == "metadata.name"

            code, body = await raw(port, "POST", pods, b'{"kind": "Pod", ')
            assert code == 400
            assert_status(body, 400, "BadRequest")

            node = json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}).encode()
            code, body = await raw(port, "POST", pods, node)
            assert_status(body, 400, "BadRequest")

            orphan = json.dumps(pod("b", ns="missing")).encode()
            code, body = await raw(port, "POST", "/api/v1/namespaces/missing/pods", orphan)
            assert_status(body, 404, "NotFound")
            assert body["details"]["kind"] == "namespaces"

            code, body = await raw(port, "GET", "/api/v1/widgets")
            assert_status(body, 404, "NotFound")
            assert body["details"] == {}  # kubectl debug reads them: present, empty, as kube-apiserver's
            code, body = await raw(port, "GET", "/apis/apps/v1/namespaces/default/deployments/gone")
            assert_status(body, 404, "NotFound")
            assert body["message"] == 'deployments.apps "gone" not found'
            assert body["details"] == {"name": "gone", "group": "apps", "kind": "deployments"}
            code, body = await raw(port, "PATCH", f"{pods}/a", b"{}", content_type="text/plain")
            assert_status(body, 415, "UnsupportedMediaType")
            assert body["message"] == (  # kube-apiserver's words
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, "
                "application/apply-patch+yaml")
            code, body = await raw(port, "POST", pods, json.dumps(pod("c")).encode(), content_type="text/plain")
            assert_status(body, 415, "UnsupportedMediaType")
            code, body = await raw(port, "POST", f"{pods}/a", b"{}")
            assert_status(body, 405, "MethodNotAllowed")
            code, body = await raw(port, "POST", pods, b"x" * (3 * 1024 * 1024 + 1))
            assert_status(body, 413, "RequestEntityTooLarge")
            assert code == 413 and body["message"] == "Request entity too large: limit is 3145728"  # as upstream

    asyncio.run(main())


def test_generate_name_and_default_namespace(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, _port):
            made = await api.create("pods", {"metadata": {"generateName": "web-"}, "spec": pod("x")["spec"]})
            assert made["metadata"]["name"].startswith("web-") and len(made["metadata"]["name"]) == 9
            assert made["metadata"]["namespace"] == "default" and made["kind"] == "Pod"

    asyncio.run(main())


def test_deleting_a_namespace_deletes_what_is_in_it(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, _port):
            await api.create("namespaces", {"metadata": {"name": "team-a"}})
            await api.create("pods", pod("a", ns="team-a"))
            await api.create("pods", pod("b"))
            await api.delete("namespaces", "team-a")
            names = [p["metadata"]["name"] for p in (await api.list("pods"))["items"]]
            assert names == ["b"]

    asyncio.run(main())


def test_status_subresource_keeps_the_other_half(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            made = await api.create("pods", pod("a"))
            ignored_spec = {"nodeName": "ignored"}
            running = await api.update_status("pods", {**made, "spec": ignored_spec, "status": {"phase": "Running"}})
            assert running["status"] == {"phase": "Running"} and running["spec"] == made["spec"]

            relabelled = {**running, "metadata": {**running["metadata"], "labels": {"v": "2"}}, "status": {}}
            after = await api.update("pods", relabelled)
            assert after["status"] == {"phase": "Running"} and after["metadata"]["labels"] == {"v": "2"}
            assert (await api.get("pods", "a"))["status"] == {"phase": "Running"}

            same = await api.update("pods", after)  # a no-op write keeps its resourceVersion
            assert same["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]

            await api.create("endpointslices", SAMPLES["endpointslices"])
            code, body = await raw(port, "PUT", f"{SLICES}/web-abc/status", b"{}")
            assert_status(body, 404, "NotFound")

    asyncio.run(main())


def test_admission_hook_mutates_or_refuses(tmp_path):
    def admit(verb, plural, obj, old, store):
        if plural == "services" and verb == "create":
            taken = len(store.list("services")[0])
            obj["spec"]["clusterIP"] = f"10.96.0.{10 + taken}"
        if obj["metadata"].get("labels", {}).get("refuse"):
            raise ApiError(422, "Invalid", "refused by admission")
        return obj

    async def main():
        async with serving(tmp_path, admit=admit) as (_, api, _port):
            svc = await api.create("services", SAMPLES["services"])
            assert svc["spec"]["clusterIP"] == "10.96.0.10"
            with pytest.raises(ApiError) as e:
                await api.create("pods", pod("a", {"refuse": "yes"}))
            assert e.value.code == 422

    asyncio.run(main())


def test_retry_on_conflict_reapplies_the_change(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, _port):
            await api.create("pods", pod("a"))
            stale = await api.get("pods", "a")
            calls = []

            async def relabel():
                current = stale if not calls else await api.get("pods", "a")
                calls.append(1)
                current["metadata"]["labels"]["n"] = str(len(calls))
                return await api.update("pods", current)

            await api.update("pods", {**stale, "metadata": {**stale["metadata"], "labels": {"other": "x"}}})
            done = await retry_on_conflict(relabel)
            assert len(calls) == 2 and done["metadata"]["labels"] == {"other": "x", "n": "2"}

    asyncio.run(main())


# -- lists and selectors


def test_list_with_label_and_field_selectors(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, port):
            await api.create("namespaces", {"metadata": {"name": "other"}})
            await api.create("pods", pod("web-1", {"app": "web", "tier": "front"}, "node-1"))
            await api.create("pods", pod("web-2", {"app": "web"}, "node-2"))
            await api.create("pods", pod("db-1", {"app": "db"}))
            await api.create("pods", pod("web-3", {"app": "web"}, "node-1", ns="other"))

            async def names(namespace=None, **selectors):
                listed = await api.list("pods", namespace, **selectors)
                return sorted(p["metadata"]["name"] for p in listed["items"])

            assert await names() == ["db-1", "web-1", "web-2", "web-3"]
            assert await names("default", label_selector="app=web") == ["web-1", "web-2"]
            assert await names(label_selector="app==web,tier") == ["web-1"]
            assert await names(label_selector="app!=web") == ["db-1"]
            assert await names(label_selector="!tier,app=web") == ["web-2", "web-3"]
            assert await names(field_selector="spec.nodeName=node-1") == ["web-1", "web-3"]
            assert await names(field_selector="spec.nodeName=") == ["db-1"]
            assert await names(field_selector="metadata.namespace!=default") == ["web-3"]
            assert await names(field_selector="metadata.name==web-2", label_selector="app") == ["web-2"]
            assert await names(label_selector="app in (web,db),tier notin (front)") == ["db-1", "web-2", "web-3"]
            for bad in ("labelSelector=app%20in%20web", "labelSelector=a%3D(b)", "fieldSelector=spec.hostname=x",
                        "fieldSelector=spec.nodeName%20in%20(a)"):
                code, body = await raw(port, "GET", f"/api/v1/pods?{bad}")
                assert_status(body, 400, "BadRequest")

    asyncio.run(main())


# -- watch


def test_watch_without_resource_version_lists_then_follows(tmp_path):
    async def main():
        async with serving(tmp_path) as (_, api, _port):
            await api.create("pods", pod("a", {"app": "web"}))
            await api.create("pods", pod("b", {"app": "db"}))
            events = api.watch("pods", None, "default", label_selector="app=web")
            assert await take(events, 1) == [("ADDED", "a")]
            await api.create("pods", pod("c", {"app": "db"}))  # filtered out
            c = await api.create("pods", pod("d", {"app": "web"}))
            await api.update_status("pods", {**c, "status": {"phase": "Running"}})
            await api.delete("pods", "d")
            assert await take(events, 3) == [("ADDED", "d"), ("MODIFIED", "d"), ("DELETED", "d")]
            await events.aclose()

    asyncio.run(main())


def test_watch_from_resource_version_replays_the_log(tmp_path):
    async def main():
        async with serving(tmp_path) as (store, api, _port):
            a = await api.create("pods", pod("a"))
            await api.create("services", SAMPLES["services"])
            await api.create("pods", pod("b"))
            await api.delete("pods", "a")
            events = api.watch("pods", a["metadata"]["resourceVersion"])
            assert await take(events, 2) == [("ADDED", "b"), ("DELETED", "a")]
            await asyncio.to_thread(store.create, "pods", pod("c"))  # a write from another thread
            assert await take(events, 1) == [("ADDED", "c")]
            await events.aclose()

            ended = [e async for e in api.watch("nodes", "0", timeout_seconds=1)]
            assert ended == []

    asyncio.run(main())


def test_watch_from_a_compacted_resource_version_is_gone(tmp_path):
    async def main():
        async with serving(tmp_path, log_size=3) as (store, api, port):
            for i in range(5):
                await api.create("pods", pod(f"p{i}"))
            with pytest.raises(Gone):
                store.events_since(1)
            assert [e[0] for e in store.events_since(store.resource_version - 3)] == [5, 6, 7]

            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/api/v1/pods?watch=true&resourceVersion=1"
                async with http.get(url) as resp:
                    assert resp.status == 200
                    event = json.loads(await resp.read())
            assert event["type"] == "ERROR"
            assert_status(event["object"], 410, "Gone")
            with pytest.raises(Gone):
                await take(api.watch("pods", 1), 1)

    asyncio.run(main())


# -- informer


def test_informer_follows_changes_and_recovers_after_a_server_restart(tmp_path):
    async def main():
        store = Store(str(tmp_path / "api.db"))
        runner, port = await start(store)
        seen: list[tuple[str, str, bool]] = []

        async def record(kind, obj, old):
            seen.append((kind, obj["metadata"]["name"], old is not None))

        async with Client(f"http://127.0.0.1:{port}") as api:
            await api.create("pods", pod("a"))
            informer = Informer(api, "pods", "default")
            informer.add_handler(record)
            task = asyncio.create_task(informer.run())
            await asyncio.wait_for(informer.synced.wait(), 2)
            assert seen == [("ADDED", "a", False)]

            b = await api.create("pods", pod("b"))
            await api.update("pods", {**b, "metadata": {**b["metadata"], "labels": {"v": "2"}}})
            await api.delete("pods", "a")
            await eventually_async(lambda: len(seen) == 4)
            assert seen[1:] == [("ADDED", "b", False), ("MODIFIED", "b", True), ("DELETED", "a", True)]
            assert set(informer.cache) == {("default", "b")}
            assert informer.cache[("default", "b")]["metadata"]["labels"] == {"v": "2"}

            await runner.cleanup()  # while the server is down, the store moves on
            store.delete("pods", "default", "b")
            store.create("pods", pod("c"))
            runner, _ = await start(store, port=port)
            await eventually_async(lambda: set(informer.cache) == {("default", "c")})
            assert ("DELETED", "b", True) in seen[4:] and ("ADDED", "c", False) in seen[4:]

            await api.create("pods", pod("d"))  # and it watches again
            await eventually_async(lambda: ("default", "d") in informer.cache)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await runner.cleanup()
        store.close()

    asyncio.run(main())


# -- server surface, auth, persistence


def test_discovery_version_and_health(tmp_path):
    async def main():
        async with serving(tmp_path, token="s3cret") as (_, _api, port):
            assert (await raw(port, "GET", "/version", token="s3cret"))[1]["gitVersion"] == "v1.32.0-netplane"
            assert (await raw(port, "GET", "/api", token="s3cret"))[1]["versions"] == ["v1"]
            groups = (await raw(port, "GET", "/apis", token="s3cret"))[1]["groups"]
            assert [g["preferredVersion"]["groupVersion"] for g in groups] == [
                "discovery.k8s.io/v1", "apps/v1", "batch/v1", "coordination.k8s.io/v1", "networking.k8s.io/v1",
                "policy/v1", "scheduling.k8s.io/v1", "events.k8s.io/v1", "metrics.k8s.io/v1beta1"]
            core = (await raw(port, "GET", "/api/v1", token="s3cret"))[1]
            assert {r["name"] for r in core["resources"]} >= {"pods", "pods/status", "services", "namespaces"}
            assert next(r for r in core["resources"] if r["name"] == "services")["shortNames"] == ["svc"]
            slices = (await raw(port, "GET", "/apis/discovery.k8s.io/v1", token="s3cret"))[1]
            assert slices["resources"][0]["kind"] == "EndpointSlice"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200 and await resp.text() == "ok"

    asyncio.run(main())


def test_token_is_required_when_set(tmp_path):
    async def main():
        async with serving(tmp_path, token="s3cret") as (_, api, port):
            assert (await api.list("namespaces"))["items"]
            for token in (None, "wrong"):
                code, body = await raw(port, "GET", "/api/v1/namespaces", token=token)
                assert code == 401
                assert_status(body, 401, "Unauthorized")
            async with Client(f"http://127.0.0.1:{port}", "wrong") as bad:
                with pytest.raises(ApiError) as e:
                    await bad.get("namespaces", "default")
                assert e.value.reason == "Unauthorized"

    asyncio.run(main())


def test_data_survives_reopening_the_store(tmp_path):
    path = str(tmp_path / "api.db")
    store = Store(path)
    made = store.create("pods", pod("a"))
    rv = store.resource_version
    store.close()

    store = Store(path)
    assert store.get("pods", "default", "a") == made
    assert [e[1:3] for e in store.events_since(rv - 1)] == [("ADDED", "pods")]
    assert int(store.create("pods", pod("b"))["metadata"]["resourceVersion"]) == rv + 1
    assert sorted(n["metadata"]["name"] for n in store.list("namespaces")[0]) == ["default", "kube-system"]
    store.close()


def test_official_kubernetes_client(tmp_path):
    import kubernetes
    store = Store(str(tmp_path / "api.db"))
    ready, port = threading.Event(), []

    async def serve(stop: asyncio.Event) -> None:
        runner, bound = await start(store, token="s3cret")
        port.append(bound)
        ready.set()
        await stop.wait()
        await runner.cleanup()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(stop),))
    thread.start()
    try:
        assert ready.wait(5)
        config = kubernetes.client.Configuration(
            host=f"http://127.0.0.1:{port[0]}",
            api_key={"BearerToken": "s3cret"},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        with kubernetes.client.ApiClient(config) as client:
            core = kubernetes.client.CoreV1Api(client)
            core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}})
            core.create_namespaced_pod("lab", pod("web", {"app": "web"}, ns="lab"))
            assert "lab" in [n.metadata.name for n in core.list_namespace().items]
            pods = core.list_namespaced_pod("lab", label_selector="app=web").items
            assert [(p.metadata.name, p.spec.containers[0].image) for p in pods] == [("web", "netplane/echo")]
            stream = kubernetes.watch.Watch().stream(core.list_namespaced_pod, "lab", timeout_seconds=1)
            assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "web")]
            with pytest.raises(kubernetes.client.ApiException) as e:
                core.read_namespaced_pod("missing", "lab")
            assert e.value.status == 404
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
        store.close()


def test_malformed_bodies_and_headers_get_400_and_401_not_500(tmp_path):
    """A JSON or YAML body nested 200,000 deep is a bad request (kube-apiserver's decoder stops at a
    depth of 10,000); an Authorization header that is not UTF-8 carries no token; the scheme
    `bearer` is matched in any case, as kube-apiserver does."""
    import http.client

    async def scenario() -> None:
        async with serving(tmp_path, token="s3cret") as (_, _client, port):
            deep = b"[" * 200_000 + b"]" * 200_000
            status, body = await raw(port, "POST", "/api/v1/namespaces/default/pods", deep, token="s3cret")
            assert status == 400 and body["reason"] == "BadRequest" and "deep" in body["message"]
            status, body = await raw(port, "POST", "/api/v1/namespaces/default/pods", b"a:\n" + b" [" * 100_000,
                                     token="s3cret", content_type="application/yaml")
            assert status == 400 and body["reason"] == "BadRequest"

            def get(header: bytes) -> int:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.putrequest("GET", "/api/v1/namespaces")
                conn.putheader("Authorization", header)
                conn.endheaders()
                status = conn.getresponse().status
                conn.close()
                return status

            assert await asyncio.to_thread(get, b"Bearer \xff\xfe\x80") == 401
            assert await asyncio.to_thread(get, b"bearer s3cret") == 200
            assert await asyncio.to_thread(get, b"BEARER s3cret") == 200
            assert await asyncio.to_thread(get, b"Basic s3cret") == 401

    asyncio.run(scenario())


def test_memory_stays_bounded_under_the_largest_objects_and_200_concurrent_lists(tmp_path):
    """The API server in its own process: five Services as large as the annotation limit lets them
    be (256 KiB), then 200 concurrent LISTs of them. kube-apiserver's limits (3 MiB bodies, 256 KiB
    of annotations) keep each LIST near 1.3 MB, and the server's peak resident memory (VmHWM) must
    stay under its start plus twice the bytes of all LIST responses at once. Before the limits five
    2.9 MB Services took the same 200 LISTs to 6.9 GB."""
    def megabytes(pid: int, key: str) -> float:
        line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(key))
        return int(line.split()[1]) / 1024

    server = subprocess.Popen([sys.executable, "-m", "netplane.api.main", "--storage", str(tmp_path / "api.db"),
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[-1]
        port = int(url.rsplit(":", 1)[1])
        services = "/api/v1/namespaces/default/services"

        def big(name: str, size: int) -> bytes:
            return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {
                "name": name, "annotations": {"notes": "x" * (size - len("notes"))}},
                "spec": {"ports": [{"port": 80}]}}).encode()

        async def scenario() -> list[int]:
            code, body = await raw(port, "POST", services, big("over", 256 * 1024 + 1))
            assert (code, body["details"]["causes"][0]["field"]) == (422, "metadata.annotations")
            for i in range(5):
                assert (await raw(port, "POST", services, big(f"big{i}", 256 * 1024)))[0] == 201
            async with aiohttp.ClientSession() as http:
                async def size_of_a_list() -> int:
                    async with http.get(f"{url}/api/v1/services") as resp:
                        return len(await resp.read())
                return await asyncio.gather(*(size_of_a_list() for _ in range(200)))

        start = megabytes(server.pid, "VmRSS")
        sizes = asyncio.run(scenario())
        peak = megabytes(server.pid, "VmHWM")
        in_flight = sum(sizes) / 2**20
        print(f"\napi memory: start {start:.0f} MB, peak {peak:.0f} MB under 200 LISTs of {sizes[0] / 2**20:.2f} MB")
        assert min(sizes) > 5 * 256 * 1024
        assert peak < start + 2 * in_flight
    finally:
        server.terminate()
        server.wait(10)


def test_health_endpoints_answer_as_kube_apiserver_without_a_token(tmp_path):
    async def main():
        async with serving(tmp_path, token="s3cret") as (store, _api, port):
            async with aiohttp.ClientSession() as http:
                async def get(path: str) -> tuple[int, str]:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        return resp.status, await resp.text()

                plain = [await get(p) for p in ("/healthz", "/livez", "/readyz", "/readyz/etcd")]
                verbose = await get("/readyz?verbose&exclude=log")
                root = (await raw(port, "GET", "/", token="s3cret"))[1]["paths"]
                store.close()  # the storage gone: the etcd check fails
                failing = await get("/healthz?verbose")
                return plain, verbose, root, failing

    plain, verbose, root, failing = asyncio.run(main())
    assert plain == [(200, "ok")] * 4
    assert verbose[0] == 200 and verbose[1].splitlines()[0] == "[+]ping ok" and "[+]log ok" not in verbose[1]
    assert "[+]etcd ok" in verbose[1] and verbose[1].endswith("readyz check passed\n")
    assert {"/healthz", "/livez/etcd", "/readyz", "/api/v1", "/apis/apps/v1", "/openapi/v2", "/version"} <= set(root)
    assert failing[0] == 500 and "[-]etcd failed: reason withheld" in failing[1]
    assert failing[1].endswith("healthz check failed\n")
