"""The only code that runs iptables-restore and iptables-save: one `iptables-restore --noflush` per
sync, in a namespace, with either backend: `nft` (iptables-nft: the rules live in nf_tables tables
`ip nat` / `ip filter`, so `nft monitor trace` sees them) or `legacy` (the x_tables tables).

No `-w`: iptables-nft takes no lock (nf_tables has transactions), and iptables-legacy-restore 1.8.9
already waits for /run/xtables.lock, a file, hence one lock for the whole machine: legacy restores
of different nodes run one after the other.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import NamedTuple

from netplane.kernel import commands

BACKENDS = ("nft", "legacy")
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


class IptablesError(RuntimeError):
    pass


class Jump(NamedTuple):
    """A rule in a built-in chain that jumps to a user-defined chain."""

    table: str
    chain: str
    target: str
    spec: str  # the rule's matches and target, what follows `-A <chain> `


@dataclass(frozen=True)
class Saved:
    """What iptables-save shows of one backend: its user-defined chains with how many rules each
    holds (not the rules), and the built-in chains' jumps to them."""

    chains: frozenset[str]  # "<table> <chain>" of every user-defined chain
    jumps: tuple[Jump, ...]
    rules: dict[str, int] = field(default_factory=dict)  # "<table> <chain>" -> its number of rules


def tool(backend: str, verb: str) -> str:
    """iptables-nft-restore, iptables-legacy-save, ..."""
    return f"iptables-{backend}-{verb}"


async def _run(namespace: str | None, argv: list[str], stdin: str | None = None) -> str:
    result = await commands.run(namespace, argv, stdin)
    if not result.ok:
        raise IptablesError(f"{argv[0]} in {namespace or 'this namespace'} failed: {result.err.strip()}")
    return result.out


async def restore(namespace: str | None, backend: str, text: str) -> None:
    """Load the text as one iptables-restore transaction, leaving the chains it does not name alone."""
    await _run(namespace, [tool(backend, "restore"), "--noflush"], text)


async def save(namespace: str | None, backend: str) -> Saved:
    return parse(await save_text(namespace, backend))


async def save_text(namespace: str | None, backend: str) -> str:
    """iptables-save's whole output in the namespace."""
    return await _run(namespace, [tool(backend, "save")])


def parse(text: str) -> Saved:
    """The user-defined chains, their rule counts and the built-in chains' jumps to them, from
    iptables-save output."""
    chains: set[str] = set()
    jumps: list[Jump] = []
    rules: dict[str, int] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if name not in BUILTIN_CHAINS:
                chains.add(f"{table} {name}")
                rules[f"{table} {name}"] = 0
        elif line.startswith("-A "):
            _, chain, spec = line.split(" ", 2)
            if chain not in BUILTIN_CHAINS:
                rules[f"{table} {chain}"] = rules.get(f"{table} {chain}", 0) + 1
            target = _target(spec) if chain in BUILTIN_CHAINS else None
            if target and f"{table} {target}" in chains:
                jumps.append(Jump(table, chain, target, spec))
    return Saved(frozenset(chains), tuple(jumps), rules)


def _target(spec: str) -> str | None:
    words = shlex.split(spec)
    for flag, value in zip(words, words[1:]):
        if flag in ("-j", "-g"):
            return value
    return None
