"""The only code that pipes a transaction into nft: one `nft -f -` per sync, in a namespace."""
from __future__ import annotations

import asyncio
import json

from netplane.kernel import netns


class NftError(RuntimeError):
    pass


async def apply(namespace: str | None, script: str) -> None:
    """Run the script as one atomic nft transaction in the namespace (None: the current one)."""
    proc = await asyncio.create_subprocess_exec(
        *netns.command(namespace, ["nft", "-f", "-"]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise NftError(f"nft -f in {namespace or 'this namespace'} failed: {err.decode().strip()}")


async def list_ruleset(namespace: str | None) -> str:
    return await _list(namespace, ["ruleset"])


async def list_table(namespace: str | None, table: str) -> str:
    """`nft list table <family> <name>` in the namespace; NftError when there is no such table."""
    return await _list(namespace, ["table", *table.split()])


async def _list(namespace: str | None, what: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *netns.command(namespace, ["nft", "list", *what]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise NftError(f"nft list {' '.join(what)} failed: {err.decode().strip()}")
    return out.decode()


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
    proc = await asyncio.create_subprocess_exec(
        *netns.command(namespace, ["nft", "-j", *argv]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(argv)} failed: {err.decode().strip()}")
    return json.loads(out)["nftables"]
