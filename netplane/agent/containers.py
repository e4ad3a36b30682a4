"""How the kubelet runs a container: a process inside the pod's network namespace.

Image `netplane/echo` without a command runs the built-in echo server (netplane.agent.echo) on the
container's ports (HTTP 8080 and UDP 8081 when it declares none). A container with `command`
runs that command, whatever its image. Any other image without a command has nothing to run and
is reported as running, like a pause container.
"""
from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from netplane.kernel import netns

ECHO_IMAGE = "netplane/echo"
ECHO_READY_LINE = b"listening\n"
START_TIMEOUT = 10.0


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
    name: str
    process: asyncio.subprocess.Process | None
    log_path: str
    started_at: str = ""


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
    return Running(container["name"], proc, log_path, started_at)


async def stop(running: Running, grace: float = 2.0) -> None:
    proc = running.process
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
