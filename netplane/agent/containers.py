"""The kubelet's side of the container runtime: the node's launcher (netplane.agent.launcher), which
makes each pod's sandbox (a pause process holding its UTS, IPC and PID namespaces, in its network
namespace) and forks its containers into it, each with its own mount namespace and root.

The launcher is started on first use inside the node's namespace (None on a real host) and again
if it ends; requests and replies are JSON lines, a reply names its request's id, exits come as
they happen. A process it started reports its exit status through it; one adopted after a restart
of the agent has only its pid (its parent is gone), and /proc tells when it has ended.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from netplane.agent import launcher as launcher_module
from netplane.kernel import commands, netns

LAUNCHER_FILE = launcher_module.__file__
START_TIMEOUT = 15.0
ADOPTED_POLL = 0.5
ORPHANED = object()  # the exit status of a process whose launcher ended first: unknown


def attach_name(log: Path) -> str:
    """The abstract Unix socket, in the node's network namespace, where the copier of the
    container's run that logs to ``log`` lets clients attach."""
    return "netplane/attach/" + hashlib.sha256(str(log).encode()).hexdigest()[:24]


class Unavailable(Exception):
    """What a request about a container (its log, an exec) cannot have; ``code`` the HTTP status
    the kubelet answers with, the message in its words."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


class StartFailed(RuntimeError):
    """A container or sandbox that could not be started; ``reason`` as the kubelet reports it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Running:
    """A started process: a container's, or a pod's pause. ``exited`` is its exit status as the
    launcher reports it; a process adopted after a restart of the agent has only its pid."""

    pid: int
    started_at: str = ""
    exited: asyncio.Future | None = None

    def alive(self) -> bool:
        if self.exited is not None and not _orphaned(self.exited):
            return not self.exited.done()  # the launcher's word: no /proc read per status pass
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    async def wait(self) -> int | None:
        """Wait for the process to exit: its exit code, or None when that cannot be known."""
        if self.exited is not None:
            code = await asyncio.shield(self.exited)
            if code is not ORPHANED:
                return code
        while self.alive():  # adopted, or its launcher has gone: only /proc can tell
            await asyncio.sleep(ADOPTED_POLL)
        return None


def _orphaned(exited: asyncio.Future) -> bool:
    return exited.done() and exited.result() is ORPHANED


class Launcher:
    """A node's launcher process, spoken to over its stdin and stdout."""

    def __init__(self, host_netns: str | None, log_path: Path) -> None:
        self.host_netns, self.log_path = host_netns, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.replies: dict[int, asyncio.Future] = {}
        self.exits: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.lock = asyncio.Lock()
        self.reader: asyncio.Task | None = None

    async def _ensure(self) -> asyncio.subprocess.Process:
        async with self.lock:
            if self.proc is None or self.proc.returncode is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "ab") as out:
                    self.proc = await commands.start(self.host_netns, [sys.executable, "-I", "-S", LAUNCHER_FILE],
                                                     stdin=commands.PIPE, stdout=commands.PIPE, stderr=out,
                                                     session=True)
                self.reader = asyncio.create_task(self._read(self.proc))
            return self.proc

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await proc.stdout.readline():
            message = json.loads(line)
            if "exit" in message:
                done = self.exits.pop(message["exit"], None)
                if done is not None and not done.done():
                    done.set_result(message["code"])
                continue
            if "pid" in message:  # started: its exit is reported later on this stream
                self.exits[message["pid"]] = message["exited"] = loop.create_future()
            reply = self.replies.pop(message["id"], None)
            if reply is not None and not reply.done():
                reply.set_result(message)
        for reply in self.replies.values():  # the launcher ended: what it was asked is lost
            if not reply.done():
                reply.set_exception(StartFailed("StartError", f"the node's launcher ended; see {self.log_path}"))
        self.replies.clear()
        for exited in self.exits.values():  # its processes live on, their exits unreported
            if not exited.done():
                exited.set_result(ORPHANED)
        self.exits.clear()

    async def _ask(self, request: dict) -> dict:
        proc = await self._ensure()
        request_id = next(self.ids)
        reply = self.replies[request_id] = asyncio.get_running_loop().create_future()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**request, "id": request_id}).encode() + b"\n")
        await proc.stdin.drain()
        answer = await asyncio.wait_for(reply, START_TIMEOUT)
        if "error" in answer:
            raise StartFailed(answer.get("reason", "StartError"), answer["error"])
        return answer

    async def sandbox(self, pod_netns: str, hostname: str, started_at: str) -> Running:
        """A pod's pause process: in its network namespace, with new UTS, IPC and PID namespaces."""
        answer = await self._ask({"op": "sandbox", "netns": netns.path(pod_netns), "hostname": hostname})
        return Running(answer["pid"], started_at, answer["exited"])

    async def start(self, request: dict, started_at: str) -> Running:
        """A container in a sandbox (launcher.py says what a request holds); it has exec'd, or its
        built-in server has bound its ports, when this returns."""
        answer = await self._ask({"op": "start", **request})
        return Running(answer["pid"], started_at, answer["exited"])

    async def close(self) -> None:
        """End the launcher (the pods it started go on)."""
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            await self.proc.wait()
        if self.reader is not None:
            await self.reader


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def stop(running: Running, grace: float = 2.0, first: int = signal.SIGTERM) -> None:
    """``first`` (the image's stop signal), then SIGKILL after the grace period, as the kubelet stops
    a container."""
    if not running.alive():
        return
    _signal(running.pid, first)
    try:
        await asyncio.wait_for(running.wait(), grace)
    except asyncio.TimeoutError:
        _signal(running.pid, signal.SIGKILL)
        await running.wait()
