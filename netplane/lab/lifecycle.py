"""Bringing a lab up and down: namespaces, the control-plane process, manifests, and the wait for
Ready nodes and Running pods, with a line per phase. A failed `up` removes what it made;
`clean` removes every lab's namespaces, processes and state, and nothing else."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from netplane import names
from netplane.api import manifests
from netplane.api.client import Client
from netplane.kernel import netns
from netplane.lab import converge, topology
from netplane.lab.model import Lab
from netplane.lab.state import LabState, known_labs

Say = Callable[[str], None]
START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class LabFailure(RuntimeError):
    pass


@dataclass(frozen=True)
class UpSummary:
    seconds: float
    nodes: int
    pods: int
    kubeconfig: str


def is_up(name: str) -> bool:
    return LabState(name).exists() or bool(topology.lab_namespaces(name))


def up(lab: Lab, say: Say, timeout: float = CONVERGE_TIMEOUT) -> UpSummary:
    state = LabState(lab.name)
    if state.exists() and state.pid() is None and topology.lab_namespaces(lab.name):
        return resume(state, say, timeout)
    if is_up(lab.name):
        raise LabFailure(f"lab {lab.name!r} is already up; run `netplane down --lab {lab.name}` first")
    started = time.monotonic()
    try:
        state.save_lab(lab)
        say(f"creating {len(lab.nodes)} nodes and the underlay switch ({lab.network.underlay})")
        topology.apply(topology.plan(lab))
        say("starting the API server, controllers and node agents")
        _start_control_plane(state)
        objects = [obj for path in lab.manifests for obj in manifests.load(path)]
        pods = asyncio.run(_converge(lab, state, objects, say, started + timeout))
    except BaseException as err:
        if not isinstance(err, LabFailure) and state.log.exists():
            say(f"bring-up failed; the control plane's log ends with:\n{_tail(state)}")
        say("bring-up failed: removing what was made")
        _remove(lab.name)
        raise
    return UpSummary(time.monotonic() - started, len(lab.nodes), pods, str(state.kubeconfig))


def resume(state: LabState, say: Say, timeout: float = CONVERGE_TIMEOUT) -> UpSummary:
    """Start the control plane of a lab whose process died (kill -9, a reboot of nothing else): the
    store and the kernel state are kept, the agents adopt the pods they find."""
    started = time.monotonic()
    lab = state.load_lab()
    say(f"the control plane of lab {lab.name!r} had stopped: starting it again on its store")
    state.kubeconfig.unlink(missing_ok=True)
    _start_control_plane(state)
    pods = asyncio.run(_converge(lab, state, [], say, started + timeout))
    return UpSummary(time.monotonic() - started, len(lab.nodes), pods, str(state.kubeconfig))


def _start_control_plane(state: LabState) -> None:
    with open(state.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "netplane.lab.daemon", state.name], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
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


async def _converge(lab: Lab, state: LabState, objects: list[dict], say: Say, deadline: float) -> int:
    async with Client(*state.connection()) as client:
        for obj in objects:
            say(f"{manifests.describe(obj)} {await manifests.apply(client, obj)}")
        last = ""
        while True:
            nodes = (await client.list("nodes"))["items"]
            pods = (await client.list("pods"))["items"]
            ready = sum(any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                        for n in nodes)
            running = sum(p.get("status", {}).get("phase") == "Running" for p in pods)
            line = f"nodes Ready {ready}/{len(lab.nodes)}, pods Running {running}/{len(pods)}"
            if line != last:
                say(line)
                last = line
            if ready == len(lab.nodes) and running == len(pods):
                services = (await client.list("services"))["items"]
                slices = (await client.list("endpointslices"))["items"]
                lagging = await converge.lagging_nodes(lab.name, lab.network, nodes, services, slices)
                line = (f"data plane: routes and rules in place on {len(nodes) - len(lagging)}/{len(nodes)} nodes "
                        f"(waiting for {'; '.join(f'{n}: {m}' for n, m in lagging.items())})"
                        if lagging else "data plane: routes and rules in place on every node")
                if line != last:
                    say(line)
                    last = line
                if not lagging:
                    return len(pods)
            if state.pid() is None:
                raise LabFailure(f"the control plane stopped; its log:\n{_tail(state)}")
            if time.monotonic() > deadline:
                raise LabFailure(f"timed out: {line}; the control plane's log:\n{_tail(state)}")
            await asyncio.sleep(0.05)


def _stop_control_plane(state: LabState) -> None:
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
    _stop_control_plane(state)
    removed = topology.teardown(name)
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
    return sorted(labs)


def clean(labs: list[str] | None = None) -> dict[str, list[str]]:
    """Remove the given labs (all of them when None): processes, namespaces, state.
    Returns lab -> namespaces removed."""
    found = existing_labs()
    return {lab: _remove(lab) for lab in found if labs is None or lab in labs}
