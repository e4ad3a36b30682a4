"""Container probes as the kubelet runs them: tcpSocket and httpGet from the node to the pod's IP
(so a probe crosses cni0 like the kubelet's does), exec inside the container."""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from netplane.kernel import commands, netns, nsenter


@dataclass
class ProbeState:
    """Thresholds applied to a stream of results: Ready flips after successThreshold successes or
    failureThreshold failures in a row."""

    spec: dict
    ready: bool = False
    streak: int = 0
    last: bool | None = None

    def record(self, ok: bool) -> bool:
        """Add one result; returns whether `ready` changed."""
        self.streak = self.streak + 1 if ok == self.last else 1
        self.last = ok
        need = int(self.spec.get("successThreshold", 1)) if ok else int(self.spec.get("failureThreshold", 3))
        if ok != self.ready and self.streak >= need:
            self.ready = ok
            return True
        return False


def resolve_port(port: int | str, container: dict) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"container {container['name']} has no port named {port!r}")


async def _connect(node_netns: str | None, ip: str, port: int, timeout: float) -> socket.socket:
    sock = netns.socket_in(node_netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def _http_get(node_netns: str | None, ip: str, port: int, path: str, timeout: float) -> bool:
    sock = await _connect(node_netns, ip, port, timeout)
    loop = asyncio.get_running_loop()
    try:
        request = f"GET {path or '/'} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.32\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        head = await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout)
    finally:
        sock.close()
    parts = head.split(b" ", 2)
    return len(parts) > 1 and parts[1].isdigit() and 200 <= int(parts[1]) < 400


async def _exec(pid: int, command: list[str], timeout: float) -> bool:
    proc = await commands.start(None, nsenter.command(pid, command))
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def run_probe(spec: dict, container: dict, pod_ip: str, node_netns: str | None, pid: int) -> bool:
    """One probe (``pid``: the container's process, where an exec probe runs); any error is a
    failure, as for the kubelet."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "tcpSocket" in spec:
            port = resolve_port(spec["tcpSocket"]["port"], container)
            (await _connect(node_netns, pod_ip, port, timeout)).close()
            return True
        if "httpGet" in spec:
            get = spec["httpGet"]
            return await _http_get(node_netns, pod_ip, resolve_port(get["port"], container), get.get("path", "/"), timeout)
        if "exec" in spec:
            return await _exec(pid, [str(a) for a in spec["exec"]["command"]], timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    return False


async def run_hook(handler: dict, container: dict, pod_ip: str, node_netns: str | None, pid: int,
                   timeout: float) -> bool:
    """A lifecycle hook (postStart, preStop): exec, httpGet, tcpSocket or sleep, given at most
    ``timeout`` seconds; whether it succeeded."""
    if "sleep" in handler:
        await asyncio.sleep(min(float(handler["sleep"].get("seconds", 0)), timeout))
        return True
    return await run_probe({**handler, "timeoutSeconds": timeout}, container, pod_ip, node_netns, pid)
