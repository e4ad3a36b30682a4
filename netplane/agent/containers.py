"""How the kubelet runs a container: a process inside the pod's network namespace.

Image `netplane/echo` without a command runs the built-in echo server (netplane.agent.echo) on the
container's ports (HTTP 8080 and UDP 8081 when it declares none), forked by the node's echo
launcher (see echo.py: a millisecond and little memory per pod, where a fresh Python takes tens of
milliseconds and its own interpreter's pages). A container with `command` runs that command,
whatever its image. Any other image without a command has nothing to run and is reported as
running, like a pause container.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from netplane.agent import echo
from netplane.kernel import netns

ECHO_IMAGE = "netplane/echo"
ECHO_FILE = echo.__file__
START_TIMEOUT = 10.0
ADOPTED_POLL = 0.5


@dataclass(frozen=True)
class EchoSpec:
    """What the echo image serves for one container."""

    name: str
    tcp: tuple[int, ...]
    udp: tuple[int, ...]


def echo_spec(container: dict, pod_name: str) -> EchoSpec | None:
    """The echo server a container runs, or None when it is not the echo image or has a command."""
    if container.get("command"):
        return None
    if container.get("image", "").split(":")[0] not in (ECHO_IMAGE, f"docker.io/{ECHO_IMAGE}"):
        return None
    ports = container.get("ports") or []
    tcp = tuple(p["containerPort"] for p in ports if p.get("protocol", "TCP") == "TCP")
    udp = tuple(p["containerPort"] for p in ports if p.get("protocol") == "UDP")
    return EchoSpec(pod_name, tcp, udp) if ports else EchoSpec(pod_name, (8080,), (8081,))


def argv_for(container: dict, pod_name: str) -> list[str] | None:
    """The command line of a container, or None when the image has nothing to run. The echo image's
    is what its server would be run as alone; the kubelet forks it from the launcher instead."""
    if container.get("command"):
        return [str(a) for a in container["command"]] + [str(a) for a in container.get("args", [])]
    spec = echo_spec(container, pod_name)
    if spec is None:
        return None
    argv = [sys.executable, "-I", "-S", ECHO_FILE, "--name", pod_name]
    return argv + [a for p in spec.tcp for a in ("--tcp", str(p))] + [a for p in spec.udp for a in ("--udp", str(p))]


@dataclass
class Running:
    """A started container. `process` is ours when this agent started it as a subprocess; `exited`
    when the echo launcher forked it (the launcher reports its exit status); a container adopted
    after a restart of the agent has only its pid (its parent is gone, it is nobody's child)."""

    name: str
    pid: int | None  # None: nothing runs (an image without a command)
    log_path: str
    started_at: str = ""
    process: asyncio.subprocess.Process | None = None
    exited: asyncio.Future | None = None  # its exit status, from the echo launcher

    def alive(self) -> bool:
        if self.pid is None:
            return True
        if self.process is not None:
            return self.process.returncode is None
        if self.exited is not None and not _orphaned(self.exited):
            return not self.exited.done()  # the launcher's word: no /proc read per status pass
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    async def wait(self) -> int | None:
        """Wait for the container to exit: its exit code, or None when that cannot be known."""
        if self.process is not None:
            return await self.process.wait()
        if self.exited is not None:
            code = await asyncio.shield(self.exited)
            if code is not ORPHANED:
                return code
        while self.alive():  # adopted, or its launcher has gone: only /proc can tell
            await asyncio.sleep(ADOPTED_POLL)
        return None


ORPHANED = object()  # the exit status of a server whose launcher ended first: unknown


def _orphaned(exited: asyncio.Future) -> bool:
    return exited.done() and exited.result() is ORPHANED


class Launcher:
    """A node's echo launcher (echo.py --launcher), started on first use inside the node's namespace
    (host_netns, None on a real host) and again if it ends. Requests and replies are JSON lines;
    a reply names the request's id; exits come as they happen."""

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
                    self.proc = await asyncio.create_subprocess_exec(
                        *netns.command(self.host_netns, [sys.executable, "-I", "-S", ECHO_FILE, "--launcher"]),
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=out,
                        start_new_session=True)
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
            if "error" not in message:  # started: its exit is reported later on this stream
                self.exits[message["pid"]] = message["exited"] = loop.create_future()
            reply = self.replies.pop(message["id"], None)
            if reply is not None and not reply.done():
                reply.set_result(message)
        for reply in self.replies.values():  # the launcher ended: what it was asked is lost
            if not reply.done():
                reply.set_exception(RuntimeError(f"the echo launcher ended; see {self.log_path}"))
        self.replies.clear()
        for exited in self.exits.values():  # its servers live on, their exits unreported
            if not exited.done():
                exited.set_result(ORPHANED)
        self.exits.clear()

    async def start(self, spec: EchoSpec, pod_netns: str, log_path: str) -> tuple[int, asyncio.Future]:
        """Fork a server into the pod's namespace: its pid and the future of its exit status."""
        proc = await self._ensure()
        request_id = next(self.ids)
        reply = self.replies[request_id] = asyncio.get_running_loop().create_future()
        request = {"id": request_id, "name": spec.name, "tcp": list(spec.tcp), "udp": list(spec.udp),
                   "netns": netns.path(pod_netns), "log": log_path}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        answer = await asyncio.wait_for(reply, START_TIMEOUT + 5)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["pid"], answer["exited"]

    async def close(self) -> None:
        """End the launcher (the servers it forked go on)."""
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            await self.proc.wait()
        if self.reader is not None:
            await self.reader


async def start(container: dict, pod_name: str, pod_netns: str, log_path: str, started_at: str,
                launcher: Launcher | None = None) -> Running:
    """Start one container in the pod's namespace; the echo image's server is up (its ports bound)
    when this returns. Without a launcher the echo server runs as a process of its own."""
    argv = argv_for(container, pod_name)
    if argv is None:
        return Running(container["name"], None, log_path, started_at)
    spec = echo_spec(container, pod_name)
    if spec is not None and launcher is not None:
        try:
            pid, exited = await launcher.start(spec, pod_netns, log_path)
        except (RuntimeError, OSError, asyncio.TimeoutError) as err:
            raise RuntimeError(f"container {container['name']} did not start: {err}; see {log_path}") from None
        return Running(container["name"], pid, log_path, started_at, exited=exited)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod_name}
    env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", []) if "name" in e})
    with open(log_path, "ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *netns.command(pod_netns, argv), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if spec else log_file, stderr=log_file, start_new_session=True,
        )
    if spec is not None:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line != b"listening\n":
            proc.kill()
            raise RuntimeError(f"container {container['name']} did not start; see {log_path}")
    return Running(container["name"], proc.pid, log_path, started_at, proc)


def _signal(running: Running, sig: int) -> None:
    try:
        os.kill(running.pid, sig)
    except ProcessLookupError:
        pass


async def stop(running: Running, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after the grace period, as the kubelet stops a container."""
    if running.pid is None or not running.alive():
        return
    _signal(running, signal.SIGTERM)
    try:
        await asyncio.wait_for(running.wait(), grace)
    except asyncio.TimeoutError:
        _signal(running, signal.SIGKILL)
        await running.wait()
