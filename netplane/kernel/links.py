"""Netlink through pyroute2: the one place that opens a netlink socket in a namespace. Code outside
kernel/ uses the typed operations of `Netlink` (opened by `opened`), never pyroute2's messages;
`netlink`, `get`, `index` and `tolerate` are for kernel/ itself."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netplane.kernel import netns

IFF_UP, IFF_PROMISC = 0x1, 0x100  # ifinfomsg flags
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


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


class LinkExists(RuntimeError):
    """A link of that name is there already."""


@dataclass(frozen=True)
class Link:
    """What netplane reads of a network interface."""

    index: int
    name: str
    kind: str  # bridge, veth, vxlan, macvlan, ...; "" for a device without one (lo)
    mac: str
    up: bool
    promiscuous: bool
    master: int | None  # the index of the bridge it is a port of
    mtu: int


def _link(msg: ifinfmsg) -> Link:
    return Link(msg["index"], msg.get_attr("IFLA_IFNAME"), msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                (msg.get_attr("IFLA_ADDRESS") or "").lower(), bool(msg["flags"] & IFF_UP),
                bool(msg["flags"] & IFF_PROMISC), msg.get_attr("IFLA_MASTER"), msg.get_attr("IFLA_MTU") or 0)


def _sized(mtu: int | None) -> dict:
    return {"mtu": mtu} if mtu else {}


class Netlink:
    """Typed operations on one namespace's links, addresses and routes, over one netlink socket.
    Deleting what is gone already is not an error."""

    def __init__(self, ipr: IPRoute) -> None:
        self._ipr = ipr

    def link(self, name: str) -> Link | None:
        found = get(self._ipr, name)
        return None if found is None else _link(found)

    def links(self) -> list[Link]:
        return [_link(msg) for msg in self._ipr.get_links()]

    def add_bridge(self, name: str, mac: str, mtu: int | None = None) -> Link:
        """The bridge, made with this MAC unless a link of that name exists (a parallel caller's)."""
        with tolerate(errno.EEXIST):
            self._ipr.link("add", ifname=name, kind="bridge", address=mac, **_sized(mtu))
        return self.link(name)

    def add_veth(self, name: str, mac: str, peer: str, peer_mac: str, mtu: int | None = None) -> None:
        """A veth pair, up, whose peer is made in the calling thread's namespace (a socket opened in
        another namespace makes links there): moving a link between namespaces afterwards costs the
        kernel an RCU grace period (about 20 ms here), naming the peer's namespace at creation nothing."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            self._ipr.link("add", ifname=name, kind="veth", state="up", address=mac,
                           peer={"ifname": peer, "net_ns_fd": own, "address": peer_mac, **_sized(mtu)}, **_sized(mtu))
        except NetlinkError as err:
            if err.code == errno.EEXIST or self.link(name) is not None:
                raise LinkExists(f"{name} exists already") from err
            raise
        finally:
            os.close(own)

    def add_pair(self, name: str, peer: str) -> None:
        """A veth pair in this namespace, both ends down."""
        self._ipr.link("add", ifname=name, kind="veth", peer=peer)

    def add_stacked(self, name: str, kind: str, parent: str) -> None:
        """A macvlan (bridge mode) or ipvlan (l2) link on the parent."""
        mode = {"macvlan_mode": "bridge"} if kind == "macvlan" else {"ipvlan_mode": 0}
        self._ipr.link("add", ifname=name, kind=kind, link=index(self._ipr, parent), **mode)

    def set_up(self, name: str, promiscuous: bool = False) -> None:
        """Up (and promiscuous), when it exists."""
        flags = IFF_UP | (IFF_PROMISC if promiscuous else 0)
        found = index(self._ipr, name)
        if found is not None:
            self._ipr.link("set", index=found, flags=flags, change=flags)

    def set_port(self, name: str, bridge: Link, hairpin: bool = False) -> None:
        """The link up as a port of the bridge; with hairpin, frames may leave by the port they came in."""
        self._ipr.link("set", ifname=name, master=bridge.index, state="up")
        if hairpin:
            self._ipr.brport("set", ifname=name, mode=1)

    def delete(self, name: str) -> None:
        with tolerate(errno.ENODEV):
            self._ipr.link("del", ifname=name)

    def addresses(self, name: str) -> set[Interface]:
        found = index(self._ipr, name)
        return set() if found is None else {ipaddress.ip_interface((a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
                                            for a in self._ipr.get_addr(index=found)}

    def add_address(self, name: str, address: Interface, replace: bool = False) -> None:
        self._ipr.addr("replace" if replace else "add", index=index(self._ipr, name), address=str(address.ip),
                       prefixlen=address.network.prefixlen)

    def delete_address(self, name: str, address: Interface) -> None:
        with tolerate(errno.EADDRNOTAVAIL, errno.ENODEV):
            self._ipr.addr("del", index=index(self._ipr, name), address=str(address.ip),
                           prefixlen=address.network.prefixlen)

    def add_route(self, destination: str, device: str, gateway: str | None = None) -> None:
        self._ipr.route("add", dst=destination, oif=index(self._ipr, device), **({"gateway": gateway} if gateway else {}))

    def routes(self) -> set[tuple[str, str]]:
        """The main table's routes of both families: (destination network, gateway or "")."""
        found = set()
        for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for route in self._ipr.get_routes(family=family, table=254):
                dst = route.get_attr("RTA_DST") or anywhere
                found.add((str(ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)),
                           route.get_attr("RTA_GATEWAY") or ""))
        return found


@contextmanager
def opened(name: str | None) -> Iterator[Netlink]:
    """Typed netlink operations in the named namespace (or one given by path, as CNI_NETNS is)."""
    with netlink(name) as ipr:
        yield Netlink(ipr)
