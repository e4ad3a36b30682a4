"""A VXLAN device and what it forwards by: its permanent ARP entries, FDB entries and onlink routes.

The typed operations the overlay (agent/overlay.py) builds flannel's vxlan backend from: make the
device (or keep one that matches), read what it holds as an ``OverlayState``, and bring it to
another state by writing only the difference.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from pyroute2 import IPRoute

from netplane.kernel.links import index, netlink

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 4
MAIN_TABLE = 254
NO_MAC = "00:00:00:00:00:00"  # the FDB's default (all-zeros) entry: flooding, not a peer


@dataclass(frozen=True)
class Device:
    name: str
    vni: int
    port: int  # the UDP port


@dataclass(frozen=True)
class OverlayState:
    neighbours: frozenset[tuple[str, str]]  # (ip, mac): permanent ARP entries
    fdb: frozenset[tuple[str, str]]  # (mac, underlay ip)
    routes: frozenset[tuple[str, str]]  # (dst cidr, gateway), onlink through the device


def ensure_device(netns: str | None, device: Device, local_ip: str, address: str, mtu: int) -> str:
    """Create the device with learning off (or keep it when it matches; one that differs is made
    again), give it ``address``/32, bring it up; returns its MAC."""
    with netlink(netns) as ipr:
        idx = index(ipr, device.name)
        if idx is not None and not _matches(ipr, idx, device, local_ip, mtu):
            ipr.link("del", index=idx)
            idx = None
        if idx is None:
            ipr.link("add", ifname=device.name, kind="vxlan", vxlan_id=device.vni, vxlan_local=local_ip,
                     vxlan_port=device.port, vxlan_learning=0, mtu=mtu)
            idx = index(ipr, device.name)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
        if address not in have:
            ipr.addr("add", index=idx, address=address, prefixlen=32)
        ipr.link("set", index=idx, state="up")
        return ipr.get_links(idx)[0].get("IFLA_ADDRESS")


def _matches(ipr: IPRoute, idx: int, device: Device, local_ip: str, mtu: int) -> bool:
    link = ipr.get_links(idx)[0]
    info = link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    if link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "vxlan" or info is None:
        return False
    return (info.get("IFLA_VXLAN_ID") == device.vni and info.get("IFLA_VXLAN_PORT") == device.port
            and info.get("IFLA_VXLAN_LOCAL") == local_ip and link.get("IFLA_MTU") == mtu)


def _current(ipr: IPRoute, idx: int) -> OverlayState:
    neighbours = frozenset(
        (n.get("NDA_DST"), n.get("NDA_LLADDR")) for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_INET)
        if n["state"] == NUD_PERMANENT and n.get("NDA_LLADDR")
    )
    fdb = frozenset(
        (n.get("NDA_LLADDR"), n.get("NDA_DST")) for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_BRIDGE)
        if n.get("NDA_DST") and n.get("NDA_LLADDR") != NO_MAC
    )
    routes = frozenset(
        (f"{r.get('RTA_DST')}/{r['dst_len']}", r.get("RTA_GATEWAY"))
        for r in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
        if r.get("RTA_OIF") == idx and r.get("RTA_GATEWAY")
    )
    return OverlayState(neighbours, fdb, routes)


def read(netns: str | None, name: str) -> OverlayState | None:
    """What the device holds now; None when there is no such device."""
    with netlink(netns) as ipr:
        idx = index(ipr, name)
        return None if idx is None else _current(ipr, idx)


def apply(netns: str | None, name: str, want: OverlayState, have: OverlayState | None = None) -> OverlayState:
    """Bring the device's ARP, FDB and routes to ``want``: additions first (ARP, FDB, routes, as
    flannel orders them), then removals.

    Without ``have`` the kernel is read before and after, and what it holds then is returned. With
    ``have`` (what an earlier call returned) only the difference is written, nothing is read, and
    ``want`` is returned: every write was acknowledged by the kernel, and whatever changed behind the
    caller's back is found by the next call without ``have``."""
    with netlink(netns) as ipr:
        idx = index(ipr, name)
        if idx is None:
            raise RuntimeError(f"{name} is missing in {netns or 'this namespace'}")
        read_back = have is None
        if have is None:
            have = _current(ipr, idx)
        for ip, mac in want.neighbours - have.neighbours:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=idx, state=NUD_PERMANENT)
        for mac, dst in want.fdb - have.fdb:
            ipr.fdb("replace", ifindex=idx, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)
        for dst, gateway in want.routes - have.routes:
            ipr.route("replace", dst=dst, gateway=gateway, oif=idx, flags=RTNH_F_ONLINK)
        for dst, gateway in have.routes - want.routes:
            ipr.route("del", dst=dst, gateway=gateway, oif=idx)
        for mac, dst in have.fdb - want.fdb:
            ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
        for ip, mac in have.neighbours - want.neighbours:
            ipr.neigh("del", dst=ip, lladdr=mac, ifindex=idx)
        return _current(ipr, idx) if read_back else want
