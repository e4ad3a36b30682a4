"""Conntrack entries, removed the way kube-proxy removes them: when a UDP endpoint goes away, the
flows that were translated to it are deleted, or clients would keep sending into the void until
the entry times out (UDP has no connection for the kernel to see closing)."""
from __future__ import annotations

import asyncio

from netplane.kernel import netns


def delete_argv(address: str, port: int, endpoint: str) -> list[str]:
    """`conntrack -D` for UDP flows to address:port (any local address when empty) NATed to endpoint."""
    match = ["--orig-dst", address, "--orig-port-dst", str(port)] if address else ["--orig-port-dst", str(port)]
    return ["conntrack", "-D", "-p", "udp", *match, "--dst-nat", endpoint]


async def delete_udp(namespace: str | None, stale: set[tuple[str, int, str]]) -> None:
    """Delete the flows of every stale (address, port, endpoint); a miss is not an error (exit 1)."""
    for address, port, endpoint in sorted(stale):
        proc = await asyncio.create_subprocess_exec(
            *netns.command(namespace, delete_argv(address, port, endpoint)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()
