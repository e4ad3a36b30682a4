"""`netplane bench cni`: netplane's bridge + host-local plugins against Debian's reference `bridge` +
`host-local` (containernetworking-plugins), same config, same runtime, same machine, in one run.

Per plugin set, in a throw-away node namespace: RUNS pods attached one at a time (each ADD timed),
then detached one at a time (each DEL timed), then PARALLEL pods attached at once (the wall time,
and whether every pod got its own address). Target on the reference machine: netplane's median ADD
at most 1.5x the reference's, its DEL no slower. netplane's plugins run through their resident
server (started by the warm-up ADD); ``NETPLANE_CNI_SERVER=off netplane bench cni`` measures them
in-process instead.
"""
from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from netplane import names
from netplane.agent.node import cni_config
from netplane.bench import percentile
from netplane.cni.runtime import Attachment, Runtime, plugin_dir
from netplane.kernel import netns

REFERENCE_PLUGINS = "/usr/lib/cni"
POD_CIDR = "10.250.0.0/22"  # room for the parallel pods; the node namespace is a throw-away one
MTU = 1450
WARMUP_SECONDS = 2.0  # time for a CNI server started by the warm-up ADD to begin listening


@dataclass(frozen=True)
class Result:
    label: str
    adds: list[float]
    dels: list[float]
    parallel: float  # wall time of the parallel ADDs
    distinct: bool  # every parallel pod got its own address


def reference_config(pod_cidr: str, mtu: int, data_dir: Path) -> dict:
    conf = cni_config(pod_cidr, mtu, data_dir)
    conf["plugins"][0]["type"] = "bridge"
    conf["plugins"][0]["ipam"]["type"] = "host-local"
    return conf


def plugin_sets(work: Path) -> list[tuple[str, dict, list[str]]]:
    """(label, conflist, plugin directories) of the reference plugins and of netplane's."""
    return [
        ("reference bridge + host-local", reference_config(POD_CIDR, MTU, work / "ref-ipam"), [REFERENCE_PLUGINS]),
        ("netplane-bridge + netplane-host-local", cni_config(POD_CIDR, MTU, work / "np-ipam"), [plugin_dir()]),
    ]


async def _one_by_one(step, conf: dict, pods: list[str], ids: list[str]) -> list[float]:
    """Time `step` (the runtime's add or delete) for each pod in turn."""
    times = []
    for pod, cid in zip(pods, ids):
        start = time.monotonic()
        await step(conf, Attachment(cid, netns.path(pod)))
        times.append(time.monotonic() - start)
    return times


async def _measure(label: str, conf: dict, dirs: list[str], node: str, runs: int, parallel: int,
                   work: Path) -> Result:
    runtime = Runtime(dirs, str(work / "cache"), exec_netns=node)
    pods = [f"{node}.pod.{i}" for i in range(max(runs, parallel))]
    for pod in pods:
        await asyncio.to_thread(netns.create, pod)
    try:
        # One untimed ADD and DEL first: page cache for either set, netplane's CNI server started.
        await _one_by_one(runtime.add, conf, pods[:1], ["warmup"])
        await _one_by_one(runtime.delete, conf, pods[:1], ["warmup"])
        await asyncio.sleep(WARMUP_SECONDS)
        ids = [f"bench{i:04d}" for i in range(runs)]
        adds = await _one_by_one(runtime.add, conf, pods[:runs], ids)
        dels = await _one_by_one(runtime.delete, conf, pods[:runs], ids)
        together = [f"together{i:04d}" for i in range(parallel)]
        start = time.monotonic()
        results = await asyncio.gather(*(runtime.add(conf, Attachment(cid, netns.path(pod)))
                                         for pod, cid in zip(pods, together)))
        wall = time.monotonic() - start
        addresses = {r["ips"][0]["address"] for r in results}
        await _one_by_one(runtime.delete, conf, pods[:parallel], together)
        return Result(label, adds, dels, wall, len(addresses) == parallel)
    finally:
        for pod in pods:
            netns.delete(pod)


def compare(runs: int, parallel: int, work: Path) -> list[Result]:
    """The two plugin sets, each in its own throw-away node namespace."""
    lab = f"bench-{secrets.token_hex(2)}"
    results = []
    for label, conf, dirs in plugin_sets(work):
        tag = label.split()[0]
        node = f"{names.lab_prefix(lab)}{tag}"
        netns.create(node)
        try:
            results.append(asyncio.run(_measure(label, conf, dirs, node, runs, parallel, work / tag)))
        finally:
            netns.kill_all_in([node])
            netns.delete(node)
    return results


def lines(results: list[Result]) -> list[str]:
    """The report: medians and p90s, and the ratios the target is about."""
    ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
    out = [f"{r.label}: ADD median {ms(statistics.median(r.adds))}, p90 {ms(percentile(r.adds, 90))}; "
           f"DEL median {ms(statistics.median(r.dels))}, p90 {ms(percentile(r.dels, 90))} ({len(r.adds)} runs); "
           f"parallel ADDs {r.parallel:.2f} s, "
           f"{'every pod its own address' if r.distinct else 'ADDRESSES SHARED'}" for r in results]
    ref, own = results
    out.append(f"ratio netplane / reference: ADD median {statistics.median(own.adds) / statistics.median(ref.adds):.2f} "
               f"(target <= 1.5), DEL median {statistics.median(own.dels) / statistics.median(ref.dels):.2f} "
               "(target <= 1.0)")
    return out
