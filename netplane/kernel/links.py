"""Netlink through pyroute2: the one place that opens a netlink socket in a namespace."""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netplane.kernel import netns

IFF_UP, IFF_PROMISC = 0x1, 0x100  # ifinfomsg flags


@contextmanager
def netlink(name: str | None) -> Iterator[IPRoute]:
    """An IPRoute socket bound to the named namespace (the current one when None).

    The socket is made inside the namespace by netns.socket_in (see there why not pyroute2's
    netns= argument); a netlink socket stays in the namespace it was created in."""
    if name is None:
        ipr = IPRoute()
    else:
        sock = netns.socket_in(name, socket.AF_NETLINK, socket.SOCK_DGRAM, netns.NETLINK_ROUTE)
        ipr = IPRoute(fileno=sock.detach())
    try:
        yield ipr
    finally:
        ipr.close()


def index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


@contextmanager
def tolerate(*codes: int) -> Iterator[None]:
    """Ignore netlink errors with these errno codes (EEXIST when a parallel caller won, ENODEV when
    the thing to delete is already gone)."""
    try:
        yield
    except NetlinkError as err:
        if err.code not in codes:
            raise


def get(ipr: IPRoute, ifname: str) -> ifinfmsg | None:
    """The link message of ifname (index, IFLA_* attributes), or None when there is no such link."""
    with tolerate(errno.ENODEV):
        return ipr.link("get", ifname=ifname)[0]
    return None
