"""The storage backends: the API's behaviour on SQLite and on etcd alike, and durability. Conventions:

- ``store_url`` is parametrized over ``sqlite`` and ``etcd``: a SQLite file in ``tmp_path``, or a
  fresh key prefix (``/t<hex>/registry``) on one throw-away etcd per module (127.0.0.1, free ports,
  a temp data dir; the fixture kills it and removes the directory even when a test fails);
- behaviour tests serve the store in-process on port 0, with the helpers of tests/support; the
  durability tests run ``python -m netplane.api.main`` as a subprocess and ``kill -9`` it;
- resourceVersions are compared, never spelled out: etcd's revisions are not SQLite's counter.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from labtools import eventually_async
from support.api import assert_status, take
from support.objects import SAMPLES, pod

from netplane.api import resources
from netplane.api.client import Client
from netplane.api.errors import ApiError, Gone
from netplane.api.etcd import MAX_TXN_OPS, Gateway, local_etcd
from netplane.api.informer import Informer
from netplane.api.server import start
from netplane.api.store import Store

BACKENDS = ("sqlite", "etcd")


@pytest.fixture(scope="module")
def etcd() -> Iterator[str]:
    with local_etcd() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'api.db'}"
    return f"{request.getfixturevalue('etcd')}/t{secrets.token_hex(4)}/registry"


@asynccontextmanager
async def serving(url: str, **store_args) -> AsyncIterator[tuple[Store, Client, int]]:
    store = Store(url, **store_args)
    runner, port = await start(store)
    try:
        async with Client(f"http://127.0.0.1:{port}") as client:
            yield store, client, port
    finally:
        await runner.cleanup()
        store.close()


async def raw(port: int, method: str, path: str, data: bytes | None = None) -> tuple[int, dict]:
    """(HTTP status, decoded JSON body) of one request, bypassing the client."""
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/json"}
        async with http.request(method, f"http://127.0.0.1:{port}{path}", data=data, headers=headers) as resp:
            return resp.status, json.loads(await resp.read())


def rv_of(obj: dict) -> int:
    return int(obj["metadata"]["resourceVersion"])


# -- the API on both backends


def test_crud_on_every_resource(store_url):
    async def main():
        async with serving(store_url) as (_, api, _port):
            for plural, sample in sorted(SAMPLES.items()):
                res = resources.by_plural(plural)
                made = await api.create(plural, sample)
                name, ns = made["metadata"]["name"], made["metadata"].get("namespace")
                assert made["kind"] == res.kind and made["metadata"]["uid"] and rv_of(made) > 0
                assert await api.get(plural, name, ns) == made
                listed = await api.list(plural, ns)
                assert made in listed["items"] and int(listed["metadata"]["resourceVersion"]) >= rv_of(made)
                made["metadata"].setdefault("labels", {})["changed"] = "yes"
                updated = await api.update(plural, made)
                assert updated["metadata"]["labels"]["changed"] == "yes" and rv_of(updated) > rv_of(made)
                assert updated["metadata"]["uid"] == made["metadata"]["uid"]
                deleted = await api.delete(plural, name, ns)
                assert deleted["metadata"]["uid"] == made["metadata"]["uid"]
                with pytest.raises(ApiError) as e:
                    await api.get(plural, name, ns)
                assert e.value.code == 404

    asyncio.run(main())


def test_not_found_conflicts_and_invalid(store_url):
    async def main():
        async with serving(store_url) as (_, api, port):
            pods = "/api/v1/namespaces/default/pods"
            code, body = await raw(port, "GET", f"{pods}/nope")
            assert code == 404
            assert_status(body, 404, "NotFound")

            first = await api.create("pods", pod("a"))
            code, body = await raw(port, "POST", pods, json.dumps(pod("a")).encode())
            assert code == 409
            assert_status(body, 409, "AlreadyExists")

            await api.update("pods", {**first, "metadata": {**first["metadata"], "labels": {"x": "1"}}})
            code, body = await raw(port, "PUT", f"{pods}/a", json.dumps(first).encode())  # stale rv
            assert code == 409
            assert_status(body, 409, "Conflict")

            code, body = await raw(port, "POST", pods, json.dumps(pod("Bad_Name")).encode())
            assert code == 422
            assert_status(body, 422, "Invalid")

            code, body = await raw(port, "POST", "/api/v1/namespaces/missing/pods",
                                   json.dumps(pod("b", ns="missing")).encode())
            assert code == 404 and body["details"]["kind"] == "namespaces"

    asyncio.run(main())


def test_list_with_selectors_and_namespaces(store_url):
    async def main():
        async with serving(store_url) as (_, api, _port):
            await api.create("namespaces", {"metadata": {"name": "other"}})
            await api.create("namespaces", {"metadata": {"name": "other-b"}})
            await api.create("pods", pod("web-1", {"app": "web", "tier": "front"}, "node-1"))
            await api.create("pods", pod("web-2", {"app": "web"}, "node-2"))
            await api.create("pods", pod("db-1", {"app": "db"}))
            await api.create("pods", pod("web-3", {"app": "web"}, "node-1", ns="other"))
            await api.create("pods", pod("web-4", {"app": "web"}, ns="other-b"))

            async def names(namespace=None, **selectors):
                listed = await api.list("pods", namespace, **selectors)
                return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed["items"]]

            # sorted by namespace, then name, whatever order the keys have in etcd ("other-b/" < "other/")
            assert await names() == [("default", "db-1"), ("default", "web-1"), ("default", "web-2"),
                                     ("other", "web-3"), ("other-b", "web-4")]
            assert await names("default", label_selector="app=web") == [("default", "web-1"), ("default", "web-2")]
            assert await names(label_selector="app==web,tier") == [("default", "web-1")]
            assert await names(label_selector="!tier,app=web") == [
                ("default", "web-2"), ("other", "web-3"), ("other-b", "web-4")]
            assert await names(field_selector="spec.nodeName=node-1") == [("default", "web-1"), ("other", "web-3")]
            assert await names("other") == [("other", "web-3")]

    asyncio.run(main())


def test_list_at_an_older_resource_version(store_url):
    store = Store(store_url)
    try:
        a = store.create("pods", pod("a"))
        store.create("pods", pod("b"))
        store.delete("pods", "default", "a")
        items, rv = store.list("pods", "default", resource_version=rv_of(a))
        assert rv == rv_of(a) and [p["metadata"]["name"] for p in items] == ["a"]
        assert [p["metadata"]["name"] for p in store.list("pods")[0]] == ["b"]
    finally:
        store.close()


def test_deleting_a_big_namespace_takes_everything_along(store_url):
    """More objects than one etcd txn may hold (--max-txn-ops): the delete goes in several."""
    async def main():
        async with serving(store_url) as (store, api, _port):
            await api.create("namespaces", {"metadata": {"name": "team-a"}})
            count = MAX_TXN_OPS + 20
            await asyncio.gather(*(api.create("pods", pod(f"p{i}", ns="team-a")) for i in range(count)))
            await api.create("pods", pod("stays"))
            events = api.watch("pods", (await api.list("pods"))["metadata"]["resourceVersion"])
            await api.delete("namespaces", "team-a")
            assert [p["metadata"]["name"] for p in (await api.list("pods"))["items"]] == ["stays"]
            deleted = []
            async with asyncio.timeout(10):  # take()'s 2 s is tight for 148 events on a busy machine
                async for event in events:
                    deleted.append((event["type"], event["object"]["metadata"]["name"]))
                    if len(deleted) == count:
                        break
            assert {t for t, _ in deleted} == {"DELETED"} and len(set(deleted)) == count
            await events.aclose()

    asyncio.run(main())


# -- watch on both backends


def test_watch_lists_then_follows_with_a_selector(store_url):
    async def main():
        async with serving(store_url) as (_, api, _port):
            await api.create("pods", pod("a", {"app": "web"}))
            await api.create("pods", pod("b", {"app": "db"}))
            events = api.watch("pods", None, "default", label_selector="app=web")
            assert await take(events, 1) == [("ADDED", "a")]
            await api.create("pods", pod("c", {"app": "db"}))
            d = await api.create("pods", pod("d", {"app": "web"}))
            await api.update_status("pods", {**d, "status": {"phase": "Running"}})
            await api.delete("pods", "d")
            assert await take(events, 3) == [("ADDED", "d"), ("MODIFIED", "d"), ("DELETED", "d")]
            await events.aclose()

    asyncio.run(main())


def test_watch_from_a_resource_version_replays_then_follows(store_url):
    async def main():
        async with serving(store_url) as (store, api, _port):
            a = await api.create("pods", pod("a"))
            await api.create("services", SAMPLES["services"])
            await api.create("pods", pod("b"))
            deleted = await api.delete("pods", "a")
            events = api.watch("pods", rv_of(a))
            got = []
            async with asyncio.timeout(2):
                async for event in events:
                    got.append((event["type"], event["object"]["metadata"]["name"], rv_of(event["object"])))
                    if len(got) == 2:
                        break
            assert [g[:2] for g in got] == [("ADDED", "b"), ("DELETED", "a")]
            assert got[1][2] == rv_of(deleted) and got[0][2] < got[1][2]
            await asyncio.to_thread(store.create, "pods", pod("c"))  # a write from another thread
            assert await take(events, 1) == [("ADDED", "c")]
            await events.aclose()

    asyncio.run(main())


def test_watch_from_a_compacted_resource_version_is_gone(store_url):
    async def main():
        async with serving(store_url, log_size=3) as (store, api, port):
            first = await api.create("pods", pod("p0"))
            for i in range(1, 6):
                last = await api.create("pods", pod(f"p{i}"))
            with pytest.raises(Gone):
                store.events_since(rv_of(first))
            assert [e[3]["metadata"]["name"] for e in store.events_since(rv_of(last) - 1)] == ["p5"]
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/api/v1/pods?watch=true&resourceVersion={rv_of(first)}"
                async with http.get(url) as resp:
                    event = json.loads(await resp.read())
            assert event["type"] == "ERROR"
            assert_status(event["object"], 410, "Gone")

    asyncio.run(main())


def test_informer_adds_modifies_and_deletes(store_url):
    async def main():
        async with serving(store_url) as (store, api, _port):
            seen: list[tuple[str, str, bool]] = []

            async def record(kind, obj, old):
                seen.append((kind, obj["metadata"]["name"], old is not None))

            await api.create("pods", pod("a"))
            informer = Informer(api, "pods", "default")
            informer.add_handler(record)
            task = asyncio.create_task(informer.run())
            await asyncio.wait_for(informer.synced.wait(), 5)
            b = await api.create("pods", pod("b"))
            await api.update("pods", {**b, "metadata": {**b["metadata"], "labels": {"v": "2"}}})
            await api.delete("pods", "a")
            await eventually_async(lambda: len(seen) == 4)
            assert seen == [("ADDED", "a", False), ("ADDED", "b", False), ("MODIFIED", "b", True),
                            ("DELETED", "a", True)]
            assert set(informer.cache) == {("default", "b")}
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


# -- etcd only


def test_etcd_keys_are_the_apiservers(etcd):
    prefix = f"/t{secrets.token_hex(4)}/registry"
    store = Store(f"{etcd}{prefix}")
    try:
        store.create("nodes", SAMPLES["nodes"])
        store.create("pods", pod("a"))
        store.create("services", SAMPLES["services"])
        gateway = Gateway([etcd.removeprefix("etcd://")])
        reply = gateway.call("/v3/kv/range", {"key": _b64(prefix + "/"), "range_end": _b64(prefix + "0"),
                                              "keys_only": True})
        keys = sorted(_unb64(kv["key"])[len(prefix):] for kv in reply["kvs"])
        assert keys == ["/minions/node-1", "/namespaces/default", "/namespaces/kube-system",
                        "/pods/default/a", "/services/specs/default/web"]
        value = json.loads(_unb64(gateway.call("/v3/kv/range", {"key": _b64(prefix + "/pods/default/a")})
                                  ["kvs"][0]["value"]))
        assert value["kind"] == "Pod" and "resourceVersion" not in value["metadata"]
    finally:
        store.close()


def test_etcd_compaction_makes_older_versions_gone_after_a_restart(etcd):
    url = f"{etcd}/t{secrets.token_hex(4)}/registry"
    store = Store(url)
    first = store.create("pods", pod("a"))
    store.create("pods", pod("b"))
    last = store.create("pods", pod("c"))
    store._backend.compact(rv_of(last))  # as `etcdctl compact` would: revisions before it go
    store.close()
    store = Store(url)  # a fresh watch cache: refilled from what etcd's history still has
    try:
        with pytest.raises(Gone):
            store.events_since(rv_of(first))
        assert [p["metadata"]["name"] for p in store.list("pods")[0]] == ["a", "b", "c"]
        with pytest.raises(Gone):
            store.list("pods", resource_version=rv_of(first))
    finally:
        store.close()


def test_two_api_servers_share_one_etcd(etcd):
    url = f"{etcd}/t{secrets.token_hex(4)}/registry"

    async def main():
        async with serving(url) as (_, one, _port), serving(url) as (_, two, _port2):
            events = two.watch("pods", (await two.list("pods"))["metadata"]["resourceVersion"])
            made = await one.create("pods", pod("a"))
            assert await take(events, 1) == [("ADDED", "a")]  # seen by the other server's watch
            assert await two.get("pods", "a") == made
            await two.update("pods", {**made, "metadata": {**made["metadata"], "labels": {"by": "two"}}})
            with pytest.raises(ApiError) as e:
                await one.update("pods", made)  # its resourceVersion is stale now
            assert e.value.reason == "Conflict"
            with pytest.raises(ApiError) as e:
                await two.create("pods", pod("a"))
            assert e.value.reason == "AlreadyExists"
            assert await take(events, 1) == [("MODIFIED", "a")]
            await events.aclose()

    asyncio.run(main())


def test_etcd_endpoints_fail_over(etcd):
    """The first endpoint refuses (nothing listens there): calls and the watch go to the next."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    url = f"etcd://127.0.0.1:{dead},{etcd.removeprefix('etcd://')}/t{secrets.token_hex(4)}/registry"

    async def main():
        async with serving(url) as (_, api, _port):
            events = api.watch("pods", (await api.list("pods"))["metadata"]["resourceVersion"])
            await api.create("pods", pod("a"))
            assert await take(events, 1) == [("ADDED", "a")]
            await events.aclose()

    asyncio.run(main())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


# -- durability: kill -9 of the API server


class ApiServer:
    """``python -m netplane.api.main`` as a subprocess on a free port, its log in a file."""

    def __init__(self, storage: str, log: Path):
        with open(log, "a") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netplane.api.main", "--storage", storage, "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
            )
        line = self.proc.stdout.readline()  # the server prints it once it listens
        found = re.match(r"listening on (http://\S+)", line)
        if not found:
            self.kill()
            raise RuntimeError(f"the API server did not start: {line!r} {log.read_text()[-2000:]}")
        self.url = found.group(1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def api_servers() -> Iterator[list[ApiServer]]:
    """Started servers go in the list; every one is killed afterwards, also on failure."""
    started: list[ApiServer] = []
    yield started
    for server in started:
        server.kill()


@pytest.mark.parametrize("total, parallel, kill_after", [(1000, 20, 400)])
def test_acknowledged_creates_survive_kill_9(store_url, api_servers, tmp_path, total, parallel, kill_after):
    server = ApiServer(store_url, tmp_path / "server.log")
    api_servers.append(server)
    acknowledged: dict[str, int] = {}
    failed: list[str] = []

    def kill_in_the_middle() -> None:  # from another thread, whatever the client loop is doing
        deadline = time.monotonic() + 60
        while len(acknowledged) < kill_after and time.monotonic() < deadline:
            time.sleep(0.0005)
        os.kill(server.proc.pid, signal.SIGKILL)

    async def create_all() -> None:
        gate = asyncio.Semaphore(parallel)
        async with Client(server.url) as api:
            async def one(i: int) -> None:
                async with gate:
                    try:
                        made = await api.create("pods", pod(f"p{i:04d}"))
                    except (aiohttp.ClientError, ApiError, OSError) as err:
                        failed.append(f"p{i:04d}: {err!r}")
                        return
                    acknowledged[made["metadata"]["name"]] = rv_of(made)

            await asyncio.gather(*(one(i) for i in range(total)))

    killer = threading.Thread(target=kill_in_the_middle)
    killer.start()
    asyncio.run(create_all())
    killer.join()
    assert kill_after <= len(acknowledged) < total and failed  # the kill did land in the middle

    restarted = ApiServer(store_url, tmp_path / "server.log")
    api_servers.append(restarted)

    async def check() -> None:
        async with Client(restarted.url) as api:
            stored = {p["metadata"]["name"]: rv_of(p) for p in (await api.list("pods"))["items"]}
            missing = sorted(set(acknowledged) - set(stored))
            assert not missing, f"{len(missing)} acknowledged creates lost: {missing[:10]}"
            assert all(stored[name] == rv for name, rv in acknowledged.items())
            assert len(set(stored.values())) == len(stored), "two objects share a resourceVersion"
            after = await api.create("pods", pod("after-restart"))  # and the counter went on
            assert rv_of(after) > max(stored.values())
            print(f"{len(acknowledged)} creates acknowledged before kill -9, {len(failed)} failed, "
                  f"{len(stored)} stored after the restart; none lost")

    asyncio.run(check())
