"""The API server as tests drive it: served in-process on a free port (`serving`, on the test's
event loop; `Cluster`, on its own loop in a thread for the blocking clients, kubectl and the
official Python client), and what its answers are checked with."""
from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from netplane.api.client import Client
from netplane.api.server import start
from netplane.api.store import Store


@asynccontextmanager
async def serving(
    tmp_path: Path, token: str | None = None, bookmark_interval: float = 60.0, **store_args
) -> AsyncIterator[tuple[Store, Client, int]]:
    """A store in tmp_path, a server for it on a free port and a client of that server."""
    store = Store(str(tmp_path / "api.db"), **store_args)
    runner, port = await start(store, token=token, bookmark_interval=bookmark_interval)
    try:
        async with Client(f"http://127.0.0.1:{port}", token) as client:
            yield store, client, port
    finally:
        await runner.cleanup()
        store.close()


def assert_status(body: dict, code: int, reason: str) -> None:
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert (body["code"], body["reason"]) == (code, reason)
    assert body["message"]


async def take(events: AsyncIterator[dict], n: int) -> list[tuple[str, str]]:
    """(type, name) of the next n events, within two seconds."""
    got = []
    async with asyncio.timeout(2):
        async for event in events:
            got.append((event["type"], event["object"]["metadata"]["name"]))
            if len(got) == n:
                return got
    return got


class Cluster:
    """A server on its own loop in a thread (the clients below block), its store, and a kubeconfig
    for plain HTTP without a token: kubectl sends no bearer token over plain HTTP."""

    def __init__(self, tmp_path):
        self.store = Store(str(tmp_path / "api.db"))
        self.tmp_path = tmp_path
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        runner, self.port = await start(self.store, bookmark_interval=0.5)
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Cluster:
        self._thread.start()
        assert self._ready.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig = self.tmp_path / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "np",
            "clusters": [{"name": "np", "cluster": {"server": self.url}}],
            "users": [{"name": "np", "user": {}}],
            "contexts": [{"name": "np", "context": {"cluster": "np", "user": "np", "namespace": "default"}}],
        }))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self._loop.close()
        self.store.close()

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.tmp_path / "cache"), *args]

    def kubectl(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=30)
        if ok:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done
