"""Netlink through pyroute2: the one place that opens a netlink socket in a namespace."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute


@contextmanager
def netlink(netns: str | None) -> Iterator[IPRoute]:
    """An IPRoute socket bound to the named namespace (the current one when None)."""
    ipr = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None
