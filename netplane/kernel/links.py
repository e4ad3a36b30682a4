"""Netlink through pyroute2: the one place that opens a netlink socket in a namespace."""
from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator, Mapping, Sequence
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


def ipv4_and_mtu(netns: str | None, iface: str) -> tuple[str, int]:
    """The interface's first IPv4 address and its MTU."""
    with netlink(netns) as ipr:
        idx = index(ipr, iface)
        if idx is None:
            raise RuntimeError(f"no interface {iface} in {netns or 'this namespace'}")
        mtu = ipr.get_links(idx)[0].get("IFLA_MTU")
        for addr in ipr.get_addr(index=idx, family=socket.AF_INET):
            return addr.get_attr("IFA_ADDRESS"), mtu
    raise RuntimeError(f"{iface} has no IPv4 address")


def keep_routes(netns: str | None, within: str, want: Mapping[str, Sequence[str]], dev: str) -> None:
    """Make the namespace's IPv4 routes to destinations inside ``within`` exactly ``want``: a
    destination CIDR -> its next hops through ``dev`` (one: a gateway; several: multipath, one
    path each; none: a blackhole). Routes to elsewhere are left alone."""
    net = ipaddress.ip_network(within)
    with netlink(netns) as ipr:
        oif = index(ipr, dev)
        for route in ipr.get_routes(family=socket.AF_INET):
            dst = route.get_attr("RTA_DST")
            cidr = f"{dst}/{route['dst_len']}"
            if dst and ipaddress.ip_network(cidr).subnet_of(net) and cidr not in want:
                ipr.route("del", dst=cidr)
        for cidr, hops in want.items():
            if not hops:
                ipr.route("replace", dst=cidr, type="blackhole")
            elif len(hops) == 1:
                ipr.route("replace", dst=cidr, gateway=hops[0], oif=oif)
            else:
                ipr.route("replace", dst=cidr, multipath=[{"gateway": hop, "oif": oif} for hop in hops])


def masters(netns: str | None) -> dict[str, str | None]:
    """Every link of the namespace by name -> the name of the link it is enslaved to (a bridge
    port's bridge), or None."""
    with netlink(netns) as ipr:
        found = ipr.get_links()
    by_index = {link["index"]: link.get_attr("IFLA_IFNAME") for link in found}
    return {link.get_attr("IFLA_IFNAME"): by_index.get(link.get_attr("IFLA_MASTER")) for link in found}
