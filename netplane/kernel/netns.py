"""Network namespaces: create, delete, list, and the one way to run something inside one.

Long-lived netplane processes never call ``setns`` in a thread (see the CNI plugins'
pkg/ns README): netlink sockets are opened in a namespace by pyroute2 (``IPRoute(netns=...)``),
and commands run in one through ``nsenter``, which this module alone builds.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from pyroute2 import netns as _netns

NETNS_DIR = Path("/run/netns")


def path(name: str) -> str:
    return str(NETNS_DIR / name)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """Create a named namespace (idempotent) with ``lo`` up."""
    if not exists(name):
        _netns.create(name)
    from netplane.kernel.links import netlink
    with netlink(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def delete(name: str) -> None:
    """Remove a named namespace; missing is fine."""
    if exists(name):
        _netns.remove(name)


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
