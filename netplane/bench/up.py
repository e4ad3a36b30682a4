"""`netplane bench up`: how long the default lab takes to come up, and what one pod start costs,
side by side with a peer run on the same machine in the same run.

Measured, per round (a fresh default lab each):
- up: `netplane up` to every node Ready and every demo pod Running;
- pod start: PODS extra echo pods created at once (half per node), each timed from its create to
  Running as the API reports it (namespace, CNI ADD, process start, status write included);
- down: `netplane down`.
Peer: the CNI ADD alone, of the reference `bridge` + `host-local` plugins and of netplane's own
(netplane.bench.cni); the ratio is netplane's median over the reference's.
"""
from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass

from netplane.api.client import Client
from netplane.lab import lifecycle, model
from netplane.lab.state import LabState


@dataclass(frozen=True)
class Round:
    up: float
    pod_starts: list[float]
    down: float


def _echo_pod(i: int, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"bench-{i}", "labels": {"app": "bench"}},
            "spec": {"nodeName": node, "containers": [{"name": "echo", "image": "netplane/echo"}]}}


async def _time_pod_starts(state: LabState, nodes: tuple[str, ...], count: int) -> list[float]:
    async with Client(*state.connection()) as client:
        created: dict[str, float] = {}
        for i in range(count):
            await client.create("pods", _echo_pod(i, nodes[i % len(nodes)]))
            created[f"bench-{i}"] = time.monotonic()
        running: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while len(running) < count and time.monotonic() < deadline:
            for pod in (await client.list("pods", "default", label_selector="app=bench"))["items"]:
                name = pod["metadata"]["name"]
                if name not in running and pod.get("status", {}).get("phase") == "Running":
                    running[name] = time.monotonic()
            await asyncio.sleep(0.01)
        if len(running) < count:
            raise RuntimeError(f"only {len(running)}/{count} bench pods ran within 60 s")
        return [running[n] - created[n] for n in created]


def lab_round(pods: int) -> Round:
    lab = model.load(None, name=f"bench-{secrets.token_hex(2)}")
    start = time.monotonic()
    lifecycle.up(lab, lambda line: None)
    up = time.monotonic() - start
    try:
        starts = asyncio.run(_time_pod_starts(LabState(lab.name), lab.nodes, pods))
    finally:
        start = time.monotonic()
        lifecycle.down(lab.name)
    return Round(up, starts, time.monotonic() - start)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms, mean {statistics.fmean(values) * 1000:7.1f} ms"
