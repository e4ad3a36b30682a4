"""Bringing a lab up and down: namespaces, the control-plane process, manifests, and the wait for
Ready nodes and Running pods, with a line per phase and the counts as they change (or, given a
`progress` callback, the counts to draw a bar from). A failed `up` removes what it made; `clean`
removes every lab's namespaces, processes and state, and nothing else.

`up` follows nodes and pods through watches, not by listing them again and again: a LIST of 500
pods every 50 ms costs the lab's one control-plane process more than the pods themselves."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from netplane import names
from netplane.api import manifests, objects
from netplane.api.client import Client
from netplane.api.errors import ApiError
from netplane.api.serviceaccounts import DEFAULT_ACCOUNT
from netplane.api.informer import Informer
from netplane.kernel import cgroups, netns, programs, steps
from netplane.lab import addons, converge, topology
from netplane.lab.model import Lab
from netplane.lab.state import LabState, known_labs

Say = Callable[[str], None]
MANY_OBJECTS = 20  # more objects than this in the manifests: a line per kind, not per object
APPLY_AT_ONCE = 16  # creates in flight while applying manifests
START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
PROFILED = """import cProfile, runpy, time
profile = cProfile.Profile(time.thread_time)
profile.enable()
try:
    runpy.run_module("netplane.lab.daemon", run_name="__main__")
finally:
    profile.disable()
    profile.dump_stats({out!r})
"""


class LabFailure(RuntimeError):
    pass


@dataclass(frozen=True)
class Progress:
    """Where a bring-up stands: what a progress bar shows."""

    nodes_ready: int
    nodes: int
    pods_running: int
    pods: int
    seconds: float

    def line(self) -> str:
        return f"nodes Ready {self.nodes_ready}/{self.nodes}, pods Running {self.pods_running}/{self.pods}"


OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class UpSummary:
    seconds: float
    nodes: int
    pods: int
    kubeconfig: str
    phases: tuple[tuple[str, float], ...] = ()  # (phase, seconds), in order

    @property
    def slowest(self) -> tuple[str, float] | None:
        return max(self.phases, key=lambda p: p[1]) if self.phases else None

    def text(self, lab: str) -> str:
        """The summary `up` ends with."""
        line = f"lab {lab!r} is up in {self.seconds:.1f} s: {self.nodes} nodes, {self.pods} pods"
        if self.slowest is not None:
            line += f"; slowest phase: {self.slowest[0]} ({self.slowest[1]:.1f} s)"
        return line

    def phase_text(self) -> str:
        return "phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases)


def bar(progress: Progress, width: int = 80) -> str:
    """One line for a terminal: a bar over nodes Ready plus pods Running, the counts and the time,
    cut to width."""
    total = progress.nodes + progress.pods
    done = progress.nodes_ready + progress.pods_running
    counts = f" {progress.line()} {progress.seconds:5.1f} s"
    cells = max(10, min(40, width - len(counts) - 2))
    filled = cells if total == 0 else cells * done // total
    return (f"[{'#' * filled}{'.' * (cells - filled)}]{counts}")[:width]


class _Phases:
    """Time spent per phase of a bring-up."""

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self.last = time.monotonic()

    def end(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, now - self.last))
        self.last = now


def is_up(name: str) -> bool:
    return LabState(name).exists() or bool(topology.lab_namespaces(name))


def up(lab: Lab, say: Say, timeout: float = CONVERGE_TIMEOUT, progress: OnProgress | None = None) -> UpSummary:
    """Bring the lab up. `say` gets a line per phase; the counts of Ready nodes and Running pods go
    to `progress` when given, else to `say` as a line whenever they change."""
    state = LabState(lab.name)
    if state.exists() and state.pid() is None and topology.lab_namespaces(lab.name):
        return resume(state, say, timeout, progress)
    if is_up(lab.name):
        raise LabFailure(f"lab {lab.name!r} is already up; run `netplane --lab {lab.name} down` first")
    started = time.monotonic()
    phases = _Phases()
    try:
        state.save_lab(lab)
        say(f"creating {len(lab.nodes)} nodes and the underlay switch ({lab.network.underlay})")
        steps.apply(topology.plan(lab))
        phases.end("namespaces and links")
        say("starting the API server, controllers and node agents")
        _start_control_plane(state)
        phases.end("control plane start")
        objects = addons.objects(lab) + [obj for path in lab.manifests for obj in manifests.load(path)]
        pods = asyncio.run(_converge(lab, state, objects, say, started, started + timeout, phases, progress))
    except BaseException as err:
        if not isinstance(err, LabFailure) and state.log.exists():
            say(f"bring-up failed; the control plane's log ends with:\n{_tail(state)}")
        say("bring-up failed: removing what was made")
        _remove(lab.name)
        raise
    return UpSummary(time.monotonic() - started, len(lab.nodes), pods, str(state.kubeconfig), tuple(phases.done))


def resume(state: LabState, say: Say, timeout: float = CONVERGE_TIMEOUT,
           progress: OnProgress | None = None) -> UpSummary:
    """Start the control plane of a lab whose process is not running (it died, kill -9, or a
    snapshot was restored under it): the store and the kernel state are kept, the agents adopt the
    pods they find."""
    started = time.monotonic()
    phases = _Phases()
    lab = state.load_lab()
    say(f"starting the control plane of lab {lab.name!r} again on its store")
    state.kubeconfig.unlink(missing_ok=True)
    _start_control_plane(state)
    phases.end("control plane start")
    pods = asyncio.run(_converge(lab, state, [], say, started, started + timeout, phases, progress))
    return UpSummary(time.monotonic() - started, len(lab.nodes), pods, str(state.kubeconfig), tuple(phases.done))


def _start_control_plane(state: LabState) -> None:
    argv = [sys.executable, "-m", "netplane.lab.daemon", state.name]
    if os.environ.get("NETPLANE_PROFILE"):  # =FILE: profile the control plane's main thread (CPU time) into FILE
        argv = [sys.executable, "-c", PROFILED.format(out=os.environ["NETPLANE_PROFILE"]), state.name]
    with open(state.log, "ab") as log:
        proc = programs.start_daemon(argv, log)
    deadline = time.monotonic() + START_TIMEOUT
    while not state.kubeconfig.exists():
        if proc.poll() is not None:
            raise LabFailure(f"the control plane exited ({proc.returncode}); its log:\n{_tail(state)}")
        if time.monotonic() > deadline:
            raise LabFailure(f"the control plane did not start in {START_TIMEOUT:.0f} s; its log:\n{_tail(state)}")
        time.sleep(0.02)


def _tail(state: LabState, lines: int = 15) -> str:
    try:
        return "\n".join(state.log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


async def _wait_for_default_account(client: Client, deadline: float) -> None:
    """Until the controllers have made the `default` ServiceAccount (a pod is admitted only with
    its account, and with a replicated control plane they start once a leader is elected)."""
    while True:
        try:
            await client.get("serviceaccounts", DEFAULT_ACCOUNT, "default")
            return
        except ApiError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def _apply_all(client: Client, objects: list[dict], say: Say) -> None:
    """Apply the manifests' objects in order; consecutive objects of one kind go in parallel (a
    kind's objects do not depend on each other, while a Namespace must come before what is in it).
    A line per object, or per kind when there are many."""
    many = len(objects) > MANY_OBJECTS
    limit = asyncio.Semaphore(APPLY_AT_ONCE)

    async def one(obj: dict) -> str:
        async with limit:
            return await manifests.apply(client, obj)

    groups: list[list[dict]] = []
    for obj in objects:
        if groups and groups[-1][0]["kind"] == obj["kind"]:
            groups[-1].append(obj)
        else:
            groups.append([obj])
    for group in groups:
        verbs = await asyncio.gather(*(one(obj) for obj in group))
        if not many:
            for obj, verb in zip(group, verbs):
                say(f"{manifests.describe(obj)} {verb}")
            continue
        kind = manifests.describe(group[0]).split("/")[0]
        say(f"{kind}: " + ", ".join(f"{verbs.count(v)} {v}" for v in sorted(set(verbs))))


async def _converge(lab: Lab, state: LabState, objects: list[dict], say: Say, started: float, deadline: float,
                    phases: _Phases, progress: OnProgress | None = None) -> int:
    async with Client(*state.connection()) as client:
        if objects:
            await _wait_for_default_account(client, deadline)
        await _apply_all(client, objects, say)
        if objects:
            phases.end("manifests")
        changed = asyncio.Event()
        watched = {"nodes": Informer(client, "nodes"), "pods": Informer(client, "pods")}

        async def wake(*_: object) -> None:
            changed.set()

        for informer in watched.values():
            informer.add_handler(wake)
        tasks = [asyncio.create_task(i.run()) for i in watched.values()]
        try:
            return await _wait_for_lab(lab, state, client, watched, changed, say, deadline, phases, progress,
                                       started)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_for_lab(lab: Lab, state: LabState, client: Client, watched: dict[str, Informer],
                        changed: asyncio.Event, say: Say, deadline: float, phases: _Phases,
                        progress: OnProgress | None, started: float) -> int:
    last, last_status, nodes_ready_at = "", "", None  # the last counts line said, the last status line
    while True:
        changed.clear()
        nodes = list(watched["nodes"].cache.values())
        pods = [p for p in watched["pods"].cache.values()  # a finished pod (a Job's) runs no more: not waited for
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        ready = sum(objects.ready(n) for n in nodes)
        running = sum(p.get("status", {}).get("phase") == "Running" for p in pods)
        now = Progress(ready, len(lab.nodes), running, len(pods), time.monotonic() - started)
        line = now.line()
        synced = all(i.synced.is_set() for i in watched.values())
        if synced and progress is not None:
            progress(now)
        elif synced and line != last:
            say(line)
            last = line
        if synced and ready == len(lab.nodes) and nodes_ready_at is None:
            nodes_ready_at = time.monotonic()
            phases.end("nodes Ready")
        if synced and ready == len(lab.nodes) and running == len(pods):
            if nodes_ready_at is not None and len(phases.done) and phases.done[-1][0] == "nodes Ready":
                phases.end("pods Running")
            services = (await client.list("services"))["items"]
            slices = (await client.list("endpointslices"))["items"]
            lagging = await converge.lagging_nodes(lab.name, lab.network, nodes, services, slices)
            line = (f"data plane: routes and rules in place on {len(nodes) - len(lagging)}/{len(nodes)} nodes "
                    f"(waiting for {'; '.join(f'{n}: {m}' for n, m in lagging.items())})"
                    if lagging else "data plane: routes and rules in place on every node")
            dns_waits = "dns" in lab.addons and not addons.dns_ready(slices)
            if not lagging and dns_waits:
                line = "cluster DNS: waiting for a coredns pod to be Ready"
            if line != last_status:
                say(line)
                last_status = line
            if not lagging and not any(name == "data plane" for name, _ in phases.done):
                phases.end("data plane")
            if not lagging and not dns_waits:
                if "dns" in lab.addons:
                    phases.end("cluster DNS")
                return len(pods)
        if state.pid() is None:
            raise LabFailure(f"the control plane stopped; its log:\n{_tail(state)}")
        if time.monotonic() > deadline:
            raise LabFailure(f"timed out: {line}; the control plane's log:\n{_tail(state)}")
        try:
            await asyncio.wait_for(changed.wait(), 0.25 if ready == len(lab.nodes) and running == len(pods) else 1.0)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.05)  # a burst of events makes one pass


def stop_control_plane(state: LabState) -> None:
    pid = state.pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while state.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if state.pid() is not None:
        os.kill(pid, signal.SIGKILL)


def _remove(name: str) -> list[str]:
    state = LabState(name)
    stop_control_plane(state)
    removed = topology.teardown(name)
    for scope in cgroups.scopes():  # the cgroups of its pods, once nothing runs in its namespaces
        if names.lab_of_netns(scope) == name:
            cgroups.remove(scope)
    cgroups.prune()
    state.remove()
    return removed


def down(name: str) -> list[str]:
    """Stop a lab and remove everything it made; returns the namespaces removed."""
    if not is_up(name):
        raise LabFailure(f"lab {name!r} is not up")
    return _remove(name)


def existing_labs() -> list[str]:
    """Every lab with a trace on this machine: a state directory or a namespace named np.<lab>.*."""
    labs = set(known_labs())
    labs.update(lab for lab in (names.lab_of_netns(n) for n in netns.listed(names.NETNS_PREFIX)) if lab)
    labs.update(lab for lab in (names.lab_of_netns(s) for s in cgroups.scopes()) if lab)
    return sorted(labs)


def clean(labs: list[str] | None = None) -> dict[str, list[str]]:
    """Remove the given labs (all of them when None): processes, namespaces, state.
    Returns lab -> namespaces removed."""
    found = existing_labs()
    return {lab: _remove(lab) for lab in found if labs is None or lab in labs}
