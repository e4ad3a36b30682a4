"""nftables, the one door: a transaction (one script) per sync, listings as text or JSON, in a
namespace; and the ruleset's generation, which every nf_tables transaction in the namespace moves on.

Transactions run in this process through libnftables (the library `nft` itself is built on),
through one context per named namespace: a context opens its netlink socket where it is made, so
it is made in a thread inside the namespace and used from any thread after that, one command at a
time. That saves what each `nft -f` process pays before its first byte reaches the kernel (about
13 ms here: the process, the context, its caches). A context keeps its namespace alive, so one
whose namespace was deleted (or replaced under the same name) is freed at the next call, or by
``release``. No namespace (None) means the calling thread's: the process's own namespace has a
kept context too (used from the worker threads, which never change namespace), but a thread that
entered another one (the CNI server's do) gets a context for the one command. ``apply_by_command``
is the old way, `nft -f -` per transaction, kept as the benchmark's peer.

``Kernel`` is what owners of a table (the proxy) hold: typed transactions in, the table's objects
and the generation out; nftfake.Fake answers the same three calls without root.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import socket
import struct
import threading

from netplane.kernel import commands, netns
from netplane.kernel.nftobjects import Table, Transaction

NETLINK_NETFILTER = 12
GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
NLMSG_ERROR, NLM_F_REQUEST, NFTA_GEN_ID = 2, 1, 1
LIBRARY = "libnftables.so.1"  # Debian's libnftables1, which the nft command is built on
OUTPUT_JSON, OUTPUT_TERSE = 1 << 4, 1 << 11  # NFT_CTX_OUTPUT_JSON, NFT_CTX_OUTPUT_TERSE (nft -j, -t)


class NftError(RuntimeError):
    pass


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBRARY)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


class _Context:
    """A libnftables context whose netlink socket lives in one namespace."""

    lib: ctypes.CDLL | None = None

    def __init__(self, namespace: str | None) -> None:
        if _Context.lib is None:
            _Context.lib = _load()
        self.namespace, self.inode = namespace, netns.inode(namespace) if namespace else None
        made = lambda: _Context.lib.nft_ctx_new(0)  # noqa: E731
        self.pointer = made() if namespace is None else netns.run_in(namespace, made)
        if not self.pointer:
            raise NftError(f"libnftables could not make a context in {namespace or 'this namespace'}")
        _Context.lib.nft_ctx_buffer_output(self.pointer)
        _Context.lib.nft_ctx_buffer_error(self.pointer)
        try:
            self.netfilter = _netfilter_socket(namespace)  # for the generation
        except OSError:
            _Context.lib.nft_ctx_free(self.pointer)
            raise
        self.lock = threading.Lock()

    def run(self, text: str, flags: int = 0) -> str:
        lib = _Context.lib
        with self.lock:
            lib.nft_ctx_output_set_flags(self.pointer, flags)
            code = lib.nft_run_cmd_from_buffer(self.pointer, text.encode())
            out = (lib.nft_ctx_get_output_buffer(self.pointer) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(self.pointer) or b"").decode()
        if code != 0:
            what = text if len(text) < 80 and "\n" not in text.strip() else "-f"
            raise NftError(f"nft {what.strip()} in {self.namespace or 'this namespace'} failed: {err.strip()}")
        return out

    def generation(self) -> int:
        with self.lock:
            return _ask_generation(self.netfilter, self.namespace)

    def alive(self) -> bool:
        return self.namespace is None or netns.inode(self.namespace) == self.inode

    def close(self) -> None:
        with self.lock:
            _Context.lib.nft_ctx_free(self.pointer)
            self.netfilter.close()


_contexts: dict[str | None, _Context] = {}  # by namespace name; None: the process's own
_contexts_lock = threading.Lock()


def _context(namespace: str | None) -> _Context:
    """The namespace's context, made on first use (or again when the namespace of that name is
    another one now); making one frees those of namespaces that are gone. None: the process's own
    namespace (call from a thread that is in it)."""
    with _contexts_lock:
        found = _contexts.get(namespace)
        if found is not None and found.alive():
            return found
        for name in [n for n, c in _contexts.items() if not c.alive()]:
            _contexts.pop(name).close()
        if namespace is not None and not netns.exists(namespace):
            raise NftError(f"no namespace {namespace}")
        _contexts[namespace] = _Context(namespace)
        return _contexts[namespace]


def release(namespace: str | None) -> None:
    """Free the namespace's context (and with it the namespace, if it was deleted meanwhile)."""
    with _contexts_lock:
        found = _contexts.pop(namespace, None)
    if found is not None:
        found.close()


def _run_here(text: str, flags: int) -> str:
    """One command through a context made for it in this thread's namespace."""
    context = _Context(None)
    try:
        return context.run(text, flags)
    finally:
        context.close()


def _in_own_namespace() -> bool:
    """Whether the calling thread is in the process's network namespace (the thread group leader's)."""
    return os.stat("/proc/thread-self/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino


async def _run(namespace: str | None, text: str, flags: int = 0) -> str:
    if namespace is None and not _in_own_namespace():  # a thread that entered another namespace
        return _run_here(text, flags)
    return await asyncio.to_thread(lambda: _context(namespace).run(text, flags))


async def apply(namespace: str | None, script: str) -> None:
    """Run the script as one atomic nft transaction in the namespace (None: the current one)."""
    await _run(namespace, script)


async def apply_by_command(namespace: str | None, script: str) -> None:
    """``apply`` as it was done before libnftables in process: one `nft -f -` per transaction."""
    result = await commands.run(namespace, ["nft", "-f", "-"], script)
    if not result.ok:
        raise NftError(f"nft -f in {namespace or 'this namespace'} failed: {result.err.strip()}")


async def list_ruleset(namespace: str | None) -> str:
    return await _run(namespace, "list ruleset")


async def list_table(namespace: str | None, table: str) -> str:
    """`nft list table <family> <name>` in the namespace; NftError when there is no such table."""
    return await _run(namespace, f"list table {table}")


async def table_objects(namespace: str | None, table: str) -> tuple[set[str], dict[str, int | None]] | None:
    """A table's chain names and its sets (not maps) with their timeouts, without listing rules or
    elements; None when the table has no chain (or does not exist)."""
    family, name = table.split()
    chains, sets = await asyncio.gather(_list_json(namespace, f"list chains {family}", "chain", name),
                                        _list_json(namespace, f"list sets {family}", "set", name))
    return ({c["name"] for c in chains}, {s["name"]: s.get("timeout") for s in sets}) if chains else None


async def _list_json(namespace: str | None, command: str, kind: str, table: str) -> list[dict]:
    return [i[kind] for i in await listed_json(namespace, command, terse=True)
            if kind in i and i[kind]["table"] == table]


async def listed_json(namespace: str | None, command: str, terse: bool = False) -> list[dict]:
    """The objects `nft -j [-t] <command>` prints, e.g. "list map ip t m" (NftError when nft
    refuses, e.g. there is no such table)."""
    return json.loads(await _run(namespace, command, OUTPUT_JSON | (OUTPUT_TERSE if terse else 0)))["nftables"]


def _netfilter_socket(namespace: str | None) -> socket.socket:
    sock = netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.settimeout(5)
    return sock


def _ask_generation(sock: socket.socket, namespace: str | None) -> int:
    """One NFT_MSG_GETGEN request on a netfilter netlink socket of the namespace."""
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
    sync knows in one netlink round trip whether anyone touched the ruleset since. It is asked on
    the namespace's kept socket (making a socket in a namespace costs milliseconds, asking on a kept
    one microseconds)."""
    if namespace is None and not _in_own_namespace():  # a thread that entered another namespace
        with _netfilter_socket(None) as sock:
            return _ask_generation(sock, None)
    return await asyncio.to_thread(lambda: _context(namespace).generation())


OWN_KEPT = 4096  # generations remembered per namespace
_own: dict[str | None, list[int]] = {}  # namespace -> the generations this process's commits made, oldest first


async def committed(namespace: str | None) -> int:
    """The generation right after a commit of this process (a table's, iptables-restore's): kept as
    its own, so that the owners of the namespace's other tables (the proxy's, the policies') do not
    take it for someone else's change."""
    found = await generation(namespace)
    own = _own.setdefault(namespace, [])
    own.append(found)
    del own[:-OWN_KEPT]
    return found


async def touched_by_others(namespace: str | None, since: int) -> bool:
    """Whether a transaction this process did not make was committed in the namespace after the
    generation `since` (nft by hand, another program, a trace's table)."""
    now = await generation(namespace)
    own = set(_own.get(namespace, ()))
    return any(g not in own for g in range(since + 1, now + 1)) if now >= since else True


class Kernel:
    """The real nf_tables of a namespace, as a table's owner uses it (nftfake.Fake is its stand-in)."""

    def __init__(self, by_command: bool = False) -> None:
        self.by_command = by_command  # `nft -f -` per transaction: the benchmark's peer

    async def transact(self, namespace: str | None, tx: Transaction) -> int:
        """Commit the transaction; the generation it made."""
        await (apply_by_command if self.by_command else apply)(namespace, tx.text())
        return await committed(namespace)

    async def touched_by_others(self, namespace: str | None, since: int) -> bool:
        return await touched_by_others(namespace, since)

    async def table_objects(self, namespace: str | None, table: Table) -> tuple[set[str], dict[str, int | None]] | None:
        return await table_objects(namespace, table.text())
