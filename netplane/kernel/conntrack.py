"""Conntrack entries, removed the way kube-proxy removes them: when a UDP endpoint goes away, the
flows that were translated to it are deleted, or clients would keep sending into the void until
the entry times out (UDP has no connection for the kernel to see closing)."""
from __future__ import annotations

from collections.abc import Mapping

from netplane.kernel import commands
from netplane.kernel.commands import K

LIST_TIMEOUT = 2.0


def delete_argv(address: str, port: int, endpoint: str) -> list[str]:
    """`conntrack -D` for UDP flows to address:port (any local address when empty) NATed to endpoint."""
    match = ["--orig-dst", address, "--orig-port-dst", str(port)] if address else ["--orig-port-dst", str(port)]
    return ["conntrack", "-D", "-p", "udp", *match, "--dst-nat", endpoint]


async def delete_udp(namespace: str | None, stale: set[tuple[str, int, str]]) -> None:
    """Delete the flows of every stale (address, port, endpoint); a miss is not an error (exit 1)."""
    for address, port, endpoint in sorted(stale):
        await commands.run(namespace, delete_argv(address, port, endpoint))


def flow_argv(proto: str, src: str, sport: int) -> list[str]:
    """`conntrack -L` of one flow (by protocol, source and source port or ICMP id), as XML."""
    selector = ["--icmp-id", str(sport)] if proto == "icmp" else ["--sport", str(sport)]
    return ["conntrack", "-L", "-p", proto, "-s", src, *selector, "-o", "xml"]


def listed_in(spaces: Mapping[K, str], argv: list[str]) -> dict[K, str]:
    """What ``conntrack`` argv prints in each namespace, listed at once; those where it fails are left out."""
    ran = commands.run_all({key: (space, argv) for key, space in spaces.items()}, timeout=LIST_TIMEOUT)
    return {key: result.out for key, result in ran.items() if result.ok}
