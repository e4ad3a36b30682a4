"""The only code that pipes a transaction into nft: one `nft -f -` per sync, in a namespace; and
the ruleset's generation, which every nf_tables transaction in the namespace moves on."""
from __future__ import annotations

import asyncio
import json
import socket
import struct

from netplane.kernel import netns

NETLINK_NETFILTER = 12
GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
NLMSG_ERROR, NLM_F_REQUEST, NFTA_GEN_ID = 2, 1, 1


class NftError(RuntimeError):
    pass


async def _nft(namespace: str | None, argv: list[str], stdin: str | None = None) -> str:
    """What `nft <argv>` prints in the namespace (None: the current one); NftError when it refuses."""
    proc = await asyncio.create_subprocess_exec(
        *netns.command(namespace, ["nft", *argv]), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(argv)} in {namespace or 'this namespace'} failed: {err.decode().strip()}")
    return out.decode()


async def apply(namespace: str | None, script: str) -> None:
    """Run the script as one atomic nft transaction in the namespace (None: the current one)."""
    await _nft(namespace, ["-f", "-"], script)


async def list_ruleset(namespace: str | None) -> str:
    return await _nft(namespace, ["list", "ruleset"])


async def list_table(namespace: str | None, table: str) -> str:
    """`nft list table <family> <name>` in the namespace; NftError when there is no such table."""
    return await _nft(namespace, ["list", "table", *table.split()])


async def table_objects(namespace: str | None, table: str) -> tuple[set[str], dict[str, int | None]] | None:
    """A table's chain names and its sets (not maps) with their timeouts, without listing rules or
    elements; None when the table has no chain (or does not exist)."""
    family, name = table.split()
    chains, sets = await asyncio.gather(_list_json(namespace, ["chains", family], "chain", name),
                                        _list_json(namespace, ["sets", family], "set", name))
    return ({c["name"] for c in chains}, {s["name"]: s.get("timeout") for s in sets}) if chains else None


async def _list_json(namespace: str | None, what: list[str], kind: str, table: str) -> list[dict]:
    return [i[kind] for i in await listed_json(namespace, ["-t", "list", *what])
            if kind in i and i[kind]["table"] == table]


async def listed_json(namespace: str | None, argv: list[str]) -> list[dict]:
    """The objects `nft -j <argv>` prints, e.g. argv ["list", "map", ...] (NftError when nft
    refuses, e.g. there is no such table)."""
    return json.loads(await _nft(namespace, ["-j", *argv]))["nftables"]


def _generation(namespace: str | None) -> int:
    """One NFT_MSG_GETGEN request on a netfilter netlink socket made in the namespace."""
    with netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.send(struct.pack("=IHHII", 20, GETGEN, NLM_F_REQUEST, 1, 0) + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
        reply = sock.recv(4096)
    length, kind = struct.unpack_from("=IH", reply)
    if kind == NLMSG_ERROR:
        raise NftError(f"nf_tables generation in {namespace or 'this namespace'}: error "
                       f"{-struct.unpack_from('=i', reply, 16)[0]}")
    offset = 20  # nlmsghdr (16) + nfgenmsg (4), then the attributes
    while offset + 4 <= length:
        size, attr = struct.unpack_from("=HH", reply, offset)
        if attr & 0x3FFF == NFTA_GEN_ID:
            return struct.unpack_from("!I", reply, offset + 4)[0]
        offset += (size + 3) & ~3
    raise NftError("nf_tables answered without a generation")


async def generation(namespace: str | None) -> int:
    """The namespace's nf_tables generation: a number every committed transaction changes, whoever
    made it (nft, iptables-nft, another program), so a proxy that remembers the one after its own
    sync knows in one netlink round trip whether anyone touched the ruleset since."""
    return await asyncio.to_thread(_generation, namespace)
