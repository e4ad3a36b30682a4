"""`netplane bench api`: the API server on SQLite and on etcd, side by side in one run.

Each backend gets a fresh store and its own server process (``python -m netplane.api.main``), so
that the benchmark's client does not share the server's CPU and GIL; etcd is a throw-away one on
loopback (etcd.local_etcd). Measured from one client process over HTTP, as a controller sees it:

- creates/s: PODS pods created with CONCURRENCY requests in flight;
- LIST: one GET of all PODS pods (the client's JSON decoding included), median of LISTS;
- watch latency: WATCHERS watches (each its own connection) opened at the current resourceVersion,
  then WRITES creates one after the other, each waiting until every watcher has its event; the
  latency of one delivery is the time from the write's 2xx reaching the client to one watcher's
  receipt of the event (an event that arrives before the 2xx counts as 0).

Targets on the reference machine: >= 1,000 creates/s on SQLite, LIST of 10,000 pods < 1 s, watch
p99 < 50 ms.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from netplane.api.client import Client
from netplane.api.etcd import local_etcd
from netplane.bench import percentile

NAMESPACE = "bench"
BACKENDS = ("sqlite", "etcd")


@dataclass(frozen=True)
class Options:
    pods: int = 10_000
    concurrency: int = 20
    watchers: int = 100
    writes: int = 200
    lists: int = 5


@dataclass(frozen=True)
class Result:
    backend: str
    creates_per_s: float
    list_s: float  # median
    watch_ms: list[float]  # every delivery's latency
    early: int  # deliveries that beat the 2xx to the client

    def percentile(self, p: float) -> float:
        return percentile(self.watch_ms, p)


@contextmanager
def api_server(storage: str) -> Iterator[str]:
    """A ``netplane.api.main`` process on a free loopback port, stopped on exit; its URL."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netplane.api.main", "--storage", storage, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        env={**os.environ, "NETPLANE_LOG": "WARNING"},
    )
    try:
        found = re.match(r"listening on (http://\S+)", proc.stdout.readline())
        if not found:
            log.seek(0)
            raise RuntimeError(f"the API server on {storage} did not start: {log.read()[-2000:]}")
        yield found.group(1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.stdout.close()
        log.close()


@contextmanager
def storage(backend: str) -> Iterator[str]:
    if backend == "etcd":
        with local_etcd() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="netplane-bench-") as work:
            yield f"sqlite://{work}/api.db"


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "echo", "image": "netplane/echo", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
    }


async def _creates(url: str, opts: Options) -> float:
    async with Client(url) as api:
        await api.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        gate = asyncio.Semaphore(opts.concurrency)

        async def one(i: int) -> None:
            async with gate:
                await api.create("pods", _pod(f"pod-{i:06d}"))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(opts.pods)))
        return opts.pods / (time.perf_counter() - started)


async def _lists(url: str, opts: Options) -> float:
    times = []
    async with Client(url) as api:
        for _ in range(opts.lists):
            started = time.perf_counter()
            listed = await api.list("pods", NAMESPACE)
            times.append(time.perf_counter() - started)
            if len(listed["items"]) != opts.pods:
                raise RuntimeError(f"LIST returned {len(listed['items'])} pods, not {opts.pods}")
    return statistics.median(times)


async def _watch_latency(url: str, opts: Options) -> tuple[list[float], int]:
    acked: dict[str, float] = {}
    received: dict[str, int] = {}
    latencies: list[float] = []  # ms
    early = 0
    everyone = asyncio.Event()
    clients = [Client(url) for _ in range(opts.watchers)]  # one connection each, as separate informers
    async with Client(url) as api:
        rv = (await api.list("pods", NAMESPACE, label_selector="app=none"))["metadata"]["resourceVersion"]

        async def watcher(client: Client) -> None:
            nonlocal early
            async for event in client.watch("pods", rv, NAMESPACE, label_selector="watch=yes"):
                now = time.perf_counter()
                name = event["object"]["metadata"]["name"]
                received[name] = received.get(name, 0) + 1
                if name in acked:
                    early += now < acked[name]
                    latencies.append(max(0.0, now - acked[name]) * 1000)
                if received[name] == opts.watchers:
                    everyone.set()

        async def write(name: str) -> None:
            obj = _pod(name)
            obj["metadata"]["labels"]["watch"] = "yes"
            everyone.clear()
            made = await api.create("pods", obj)
            if name != "warm-up":
                acked[made["metadata"]["name"]] = time.perf_counter()
            await asyncio.wait_for(everyone.wait(), 30)

        tasks = [asyncio.create_task(watcher(c)) for c in clients]
        try:
            # every watch starts at rv, so each gets this write whenever it connects; once all have
            # it, all are connected and live
            await write("warm-up")
            for i in range(opts.writes):
                await write(f"watched-{i:05d}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.close()
    return latencies, early


def run(backend: str, opts: Options) -> Result:
    with storage(backend) as store_url, api_server(store_url) as url:
        creates = asyncio.run(_creates(url, opts))
        listed = asyncio.run(_lists(url, opts))
        latencies, early = asyncio.run(_watch_latency(url, opts))
    return Result(backend, creates, listed, latencies, early)


def table(results: list[Result], opts: Options) -> list[str]:
    """The report, one backend per column, the targets last."""
    rows = [
        ("", [r.backend for r in results], "target"),
        (f"creates/s ({opts.pods} pods, {opts.concurrency} at once)",
         [f"{r.creates_per_s:,.0f}" for r in results], ">= 1,000 (sqlite)"),
        (f"LIST of {opts.pods} pods (median of {opts.lists})", [f"{r.list_s * 1000:,.0f} ms" for r in results],
         "< 1 s (10,000 pods)"),
        (f"watch p50 ({opts.watchers} watchers x {opts.writes} writes)",
         [f"{r.percentile(50):.1f} ms" for r in results], ""),
        ("watch p99", [f"{r.percentile(99):.1f} ms" for r in results], "< 50 ms"),
        ("watch max", [f"{max(r.watch_ms):.1f} ms" for r in results], ""),
    ]
    width = max(len(label) for label, _, _ in rows)
    return [f"{label:<{width}}  " + "".join(f"{v:>12}" for v in values) + f"  {target}"
            for label, values, target in rows]
