"""Control groups for pods and containers, as the kubelet lays them out (a cgroup per pod, one per
container below it) in the kernel's cgroup v1 hierarchies (memory, cpu, cpuacct, pids) under
``/sys/fs/cgroup/<controller>/netplane/...``.

A container's limits are written before its process joins (the launcher's child writes 0 to each
``cgroup.procs``, so the process is in its cgroups before it execs): memory.limit_in_bytes (with
swap off for it, so the limit is a limit), cpu.cfs_quota_us over a 100 ms period, cpu.shares from
the CPU request as upstream computes them. A process the kernel killed for going over its memory
limit shows in memory.oom_control's ``oom_kill`` count.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ.get("NETPLANE_CGROUP_ROOT", "/sys/fs/cgroup"))
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
TOP = "netplane"
CFS_PERIOD_US = 100_000
MIN_SHARES, SHARES_PER_CPU = 2, 1024


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes
    cpu_millis: int | None = None  # a quota, in thousandths of a CPU
    cpu_request_millis: int = 0  # the weight, as cpu.shares


def available() -> bool:
    """Whether this machine has the cgroup v1 hierarchies the pods' cgroups are made in."""
    return all((ROOT / c / "cgroup.procs").exists() for c in CONTROLLERS)


def shares(request_millis: int) -> int:
    """cpu.shares of a CPU request, as the kubelet's MilliCPUToShares."""
    return max(request_millis * SHARES_PER_CPU // 1000, MIN_SHARES) if request_millis else MIN_SHARES


def _dir(controller: str, relative: str) -> Path:
    return ROOT / controller / TOP / relative


def create(relative: str, limits: Limits = Limits()) -> list[str]:
    """Make the cgroup ``relative`` (below netplane's) in every controller with its limits; the
    ``cgroup.procs`` files a process writes 0 to, to join it."""
    for controller in CONTROLLERS:
        _dir(controller, relative).mkdir(parents=True, exist_ok=True)
    memory, cpu = _dir("memory", relative), _dir("cpu", relative)
    if limits.memory is not None:
        (memory / "memory.swappiness").write_text("0")
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory))
    (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    quota = -1 if limits.cpu_millis is None else max(limits.cpu_millis * CFS_PERIOD_US // 1000, 1000)
    (cpu / "cpu.cfs_quota_us").write_text(str(quota))
    (cpu / "cpu.shares").write_text(str(shares(limits.cpu_request_millis)))
    return [str(_dir(c, relative) / "cgroup.procs") for c in CONTROLLERS]


def oom_kills(relative: str) -> int:
    """How many processes of the cgroup the kernel's OOM killer has ended (0 when it is gone)."""
    try:
        text = (_dir("memory", relative) / "memory.oom_control").read_text()
    except FileNotFoundError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)


@dataclass(frozen=True)
class Usage:
    """What a cgroup uses, as cAdvisor reads it for the kubelet's stats."""
    cpu_nanoseconds: int  # CPU time used since it was made (cpuacct.usage)
    memory_bytes: int  # memory.usage_in_bytes
    working_set_bytes: int  # usage less the inactive file cache: what cannot be taken back
    rss_bytes: int
    page_faults: int
    major_page_faults: int
    memory_limit: int | None  # memory.limit_in_bytes, None when unlimited


UNLIMITED = 1 << 62  # the kernel's "no limit" is 9223372036854771712, a page short of 2^63


def usage(relative: str) -> Usage | None:
    """The cgroup's use of CPU and memory (with those below it); None when it is gone."""
    memory = _dir("memory", relative)
    try:
        used = int((memory / "memory.usage_in_bytes").read_text())
        limit = int((memory / "memory.limit_in_bytes").read_text())
        stat = dict(line.split() for line in (memory / "memory.stat").read_text().splitlines())
        cpu = int((_dir("cpuacct", relative) / "cpuacct.usage").read_text())
    except FileNotFoundError:
        return None
    return Usage(cpu, used, max(used - int(stat.get("total_inactive_file", 0)), 0), int(stat.get("total_rss", 0)),
                 int(stat.get("total_pgfault", 0)), int(stat.get("total_pgmajfault", 0)),
                 None if limit >= UNLIMITED else limit)


def _pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def scopes() -> list[str]:
    """The cgroups directly below netplane's (one per node of a lab: ``np.<lab>.<node>``)."""
    top = ROOT / "memory" / TOP
    return sorted(p.name for p in top.iterdir() if p.is_dir()) if top.exists() else []


def prune() -> None:
    """Remove netplane's own cgroup where nothing is below it any more (no lab left)."""
    for controller in CONTROLLERS:
        try:
            (ROOT / controller / TOP).rmdir()
        except OSError:  # gone already, or a lab's cgroups are still there
            pass


def remove(relative: str, timeout: float = 2.0) -> None:
    """Remove a cgroup and those below it in every controller, killing what still runs in them
    (a container's leftover children); a missing one is fine."""
    for controller in CONTROLLERS:
        top = _dir(controller, relative)
        if not top.exists():
            continue
        for directory in sorted((p for p in [top, *top.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
            deadline = time.monotonic() + timeout
            while True:
                for pid in _pids(directory):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
