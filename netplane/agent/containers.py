"""How the kubelet runs a container: a process inside the pod's network namespace.

Image `netplane/echo` without a command runs the built-in echo server (netplane.agent.echo) on the
container's ports (HTTP 8080 and UDP 8081 when it declares none). A container with `command`
runs that command, whatever its image. Any other image without a command has nothing to run and
is reported as running, like a pause container.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from netplane.kernel import netns

ECHO_IMAGE = "netplane/echo"
ECHO_READY_LINE = b"listening\n"
START_TIMEOUT = 10.0
ADOPTED_POLL = 0.5


def argv_for(container: dict, pod_name: str) -> list[str] | None:
    """The command line of a container, or None when the image has nothing to run."""
    if container.get("command"):
        return [str(a) for a in container["command"]] + [str(a) for a in container.get("args", [])]
    image = container.get("image", "").split(":")[0]
    if image not in (ECHO_IMAGE, f"docker.io/{ECHO_IMAGE}"):
        return None
    tcp = [p["containerPort"] for p in container.get("ports", []) if p.get("protocol", "TCP") == "TCP"]
    udp = [p["containerPort"] for p in container.get("ports", []) if p.get("protocol") == "UDP"]
    if not container.get("ports"):
        tcp, udp = [8080], [8081]
    argv = [sys.executable, "-I", "-m", "netplane.agent.echo", "--name", pod_name]
    return argv + [a for p in tcp for a in ("--tcp", str(p))] + [a for p in udp for a in ("--udp", str(p))]


def is_echo(argv: list[str]) -> bool:
    return argv[1:4] == ["-I", "-m", "netplane.agent.echo"]


@dataclass
class Running:
    """A started container. `process` is ours when this agent started it; a container adopted
    after a restart of the agent has only its pid (its parent is gone, it is nobody's child)."""

    name: str
    pid: int | None  # None: nothing runs (an image without a command)
    log_path: str
    started_at: str = ""
    process: asyncio.subprocess.Process | None = None

    def alive(self) -> bool:
        if self.pid is None:
            return True
        if self.process is not None:
            return self.process.returncode is None
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    async def wait(self) -> int | None:
        """Wait for the container to exit: its exit code, or None when that cannot be known."""
        if self.process is not None:
            return await self.process.wait()
        while self.alive():
            await asyncio.sleep(ADOPTED_POLL)
        return None


async def start(container: dict, pod_name: str, pod_netns: str, log_path: str, started_at: str) -> Running:
    """Start one container in the pod's namespace; for the echo image, wait until it listens."""
    argv = argv_for(container, pod_name)
    if argv is None:
        return Running(container["name"], None, log_path, started_at)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod_name}
    env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", []) if "name" in e})
    with open(log_path, "ab") as log:
        echo = is_echo(argv)
        proc = await asyncio.create_subprocess_exec(
            *netns.command(pod_netns, argv), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if echo else log, stderr=log, start_new_session=True,
        )
    if echo:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line != ECHO_READY_LINE:
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
