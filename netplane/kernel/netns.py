"""Network namespaces: create, delete, list, and the one way to act inside one.

Why a fresh thread and not a fork: the control plane is a multi-threaded asyncio process. A forked
child (pyroute2's ChildProcess, which `IPRoute(netns=...)` uses) can deadlock on a lock another
thread held at fork time, and it inherits asyncio's signal wake-up fd, so the SIGTERM that pyroute2
sends a child that timed out reached our event loop as if the lab had been told to stop (seen:
labs stopping during bring-up). `setns` and `unshare(CLONE_NEWNET)` act on the calling thread
only, so a thread that exists just to enter the namespace, make the socket or the mount, and end,
changes nothing for any other code. Long-lived threads never change namespace.
Commands run in a namespace through `nsenter`, which `command` alone builds.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ_FLAGS = struct.Struct("16sH14x")  # struct ifreq: the name, then ifr_flags
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_mount_lock = threading.Lock()


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(name: str) -> str:
    return str(NETNS_DIR / name)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def run_in(name: str | None, fn: Callable[[], T]) -> T:
    """fn() in a short-lived thread inside the named namespace (a brand-new one when name is None)."""
    box: dict = {}

    def work() -> None:
        try:
            if name is None:
                enter_new()
            else:
                enter(path(name))
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=work, name=f"netns:{name or 'new'}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def enter(ns_path: str) -> None:
    """Move the calling thread into the namespace at ns_path; only for a thread that exists to work
    there (run_in's, or a server's per-request thread) or a process before it starts threads."""
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns into {ns_path}")
    finally:
        os.close(fd)


def enter_new() -> None:
    """Move the calling thread into a brand-new, empty namespace of its own."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def socket_in(name: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in the named namespace (the current one when None)."""
    if name is None:
        return socket.socket(family, kind, proto)
    return run_in(name, lambda: socket.socket(family, kind, proto))


def sockets_in(name: str | None) -> Callable[[tuple], socket.socket]:
    """A socket factory for the named namespace, given an addrinfo tuple (family, type, proto, ...):
    aiohttp's socket_factory and the API server's Outbound."""
    return lambda addrinfo: socket_in(name, *addrinfo[:3])


def listener_in(name: str | None, address: str, port: int) -> socket.socket:
    """A listening TCP socket on address:port in the named namespace."""
    sock = socket_in(name, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so the bind mounts propagate."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"", str(NETNS_DIR).encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(str(NETNS_DIR).encode(), str(NETNS_DIR).encode(), b"none", MS_BIND | MS_REC, None),
           "bind-mount /run/netns")
    _check(_libc.mount(b"", str(NETNS_DIR).encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")


def create(name: str) -> None:
    """Create a named namespace (idempotent) with `lo` up."""
    if not exists(name):
        with _mount_lock:
            _share_netns_dir()
            target = path(name)
            os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            try:
                run_in(None, lambda: _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none",
                                                        MS_BIND, None), f"bind-mount {name}"))
            except BaseException:
                os.unlink(target)
                raise
    _loopback_up(name)


def _loopback_up(name: str) -> None:
    """Bring `lo` up, as `ip link set lo up` does through the old interface ioctls: one socket in the
    namespace, no netlink."""
    with socket_in(name, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = IFREQ_FLAGS.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, IFREQ_FLAGS.pack(b"lo", 0)))
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, IFREQ_FLAGS.pack(b"lo", flags | IFF_UP))


def delete(name: str) -> None:
    """Remove a named namespace; missing is fine."""
    if exists(name):
        _libc.umount2(path(name).encode(), MNT_DETACH)
        try:
            os.unlink(path(name))
        except FileNotFoundError:
            pass


def listed(prefix: str = "") -> list[str]:
    """Named namespaces whose names start with prefix."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))


def command(name: str | None, argv: list[str]) -> list[str]:
    """argv wrapped to run inside the namespace (unchanged when name is None: the current one)."""
    if name is None:
        return list(argv)
    return ["nsenter", f"--net={path(name)}", "--", *argv]


def inode(name: str) -> int | None:
    try:
        return os.stat(path(name)).st_ino
    except FileNotFoundError:
        return None


def pids_in(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of the named ones (found through /proc)."""
    inodes = {i for i in (inode(n) for n in names) if i is not None}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_all_in(names: list[str]) -> None:
    for pid in pids_in(names):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
