"""The overlay, as flannel's vxlan backend builds it, but level-triggered from the start.

Each node has one VXLAN device `flannel.1` (VNI 1, UDP 8472, MTU = underlay MTU - 50, learning
off) whose address is the network address of the node's podCIDR (10.244.1.0/32). A node publishes
its VTEP MAC and underlay IP in flannel's Node annotations. For every peer node the agent keeps,
in flannel's order:
  1. a permanent ARP entry:  10.244.2.0 lladdr <peer VTEP MAC> dev flannel.1
  2. an FDB entry:           <peer VTEP MAC> dev flannel.1 dst <peer underlay IP>
  3. an onlink route:        10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
Static entries instead of L2/L3 miss notifications is what flannel settled on (vxlan.go's
history); here the whole set is computed from the Node list and the kernel is diffed against it,
so a restarted agent adopts what it finds and a lost entry comes back on the next pass.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute

from netplane import names
from netplane.kernel.links import index, netlink

ANNOTATION_PREFIX = "flannel.alpha.coreos.com/"
BACKEND_DATA = ANNOTATION_PREFIX + "backend-data"
BACKEND_TYPE = ANNOTATION_PREFIX + "backend-type"
PUBLIC_IP = ANNOTATION_PREFIX + "public-ip"
SUBNET_MANAGER = ANNOTATION_PREFIX + "kube-subnet-manager"
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 4
MAIN_TABLE = 254


@functools.lru_cache(maxsize=4096)
def network_address(cidr: str) -> str:
    """10.244.2.0 for 10.244.2.0/24 (remembered: every agent asks for every peer's on every pass)."""
    return str(ipaddress.ip_network(cidr).network_address)


@dataclass(frozen=True)
class Peer:
    node: str
    pod_cidr: str
    vtep_mac: str
    public_ip: str

    @property
    def gateway(self) -> str:
        """The peer's flannel.1 address: the network address of its podCIDR."""
        return network_address(self.pod_cidr)


@dataclass(frozen=True)
class OverlayState:
    neighbours: frozenset[tuple[str, str]]  # (ip, mac)
    fdb: frozenset[tuple[str, str]]  # (mac, underlay ip)
    routes: frozenset[tuple[str, str]]  # (dst cidr, gateway)


def annotations(vtep_mac: str, public_ip: str) -> dict[str, str]:
    """The Node annotations flannel publishes for its vxlan backend."""
    return {
        BACKEND_DATA: json.dumps({"VNI": names.VXLAN_VNI, "VtepMAC": vtep_mac}, separators=(",", ":")),
        BACKEND_TYPE: "vxlan",
        PUBLIC_IP: public_ip,
        SUBNET_MANAGER: "true",
    }


def peers(nodes: list[dict], me: str) -> tuple[Peer, ...]:
    """Every other node that has a podCIDR and has published its VTEP, by name."""
    found = []
    for node in nodes:
        meta = node["metadata"]
        if meta["name"] == me:
            continue
        notes = meta.get("annotations", {})
        peer = _peer(meta["name"], node.get("spec", {}).get("podCIDR"), notes.get(BACKEND_TYPE),
                     notes.get(BACKEND_DATA), notes.get(PUBLIC_IP))
        if peer is not None:
            found.append(peer)
    return tuple(sorted(found, key=lambda p: p.node))


@functools.lru_cache(maxsize=4096)
def _peer(name: str, cidr: str | None, backend_type: str | None, backend_data: str | None,
          public_ip: str | None) -> Peer | None:
    """A node as a peer, from its podCIDR and flannel annotations; None when it has not published
    its VTEP yet. Remembered: every agent reads every Node on each pass."""
    if not cidr or backend_type != "vxlan" or public_ip is None:
        return None
    try:
        mac = json.loads(backend_data)["VtepMAC"]
    except (KeyError, ValueError, TypeError):
        return None
    return Peer(name, cidr, mac.lower(), public_ip)


@functools.lru_cache(maxsize=256)
def desired(peer_list: tuple[Peer, ...]) -> OverlayState:
    """What flannel.1 must hold for these peers (remembered: the agents of one lab share one answer)."""
    return OverlayState(
        neighbours=frozenset((p.gateway, p.vtep_mac) for p in peer_list),
        fdb=frozenset((p.vtep_mac, p.public_ip) for p in peer_list),
        routes=frozenset((p.pod_cidr, p.gateway) for p in peer_list),
    )


def underlay_address(netns: str | None, iface: str) -> tuple[str, int]:
    """The node's underlay IPv4 address and the interface's MTU."""
    with netlink(netns) as ipr:
        idx = index(ipr, iface)
        if idx is None:
            raise RuntimeError(f"no interface {iface} in {netns or 'this namespace'}")
        mtu = ipr.get_links(idx)[0].get("IFLA_MTU")
        for addr in ipr.get_addr(index=idx, family=socket.AF_INET):
            return addr.get_attr("IFA_ADDRESS"), mtu
    raise RuntimeError(f"{iface} has no IPv4 address")


def ensure_device(netns: str | None, local_ip: str, pod_cidr: str, mtu: int) -> str:
    """Create flannel.1 (or keep it when it matches), address it, bring it up; returns its MAC."""
    gateway = network_address(pod_cidr)
    with netlink(netns) as ipr:
        idx = index(ipr, names.VXLAN_IF)
        if idx is not None and not _device_matches(ipr, idx, local_ip, mtu):
            ipr.link("del", index=idx)  # flannel's ensureLink: a device that differs is recreated
            idx = None
        if idx is None:
            ipr.link("add", ifname=names.VXLAN_IF, kind="vxlan", vxlan_id=names.VXLAN_VNI,
                     vxlan_local=local_ip, vxlan_port=names.VXLAN_PORT, vxlan_learning=0, mtu=mtu)
            idx = index(ipr, names.VXLAN_IF)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
        if gateway not in have:
            ipr.addr("add", index=idx, address=gateway, prefixlen=32)
        ipr.link("set", index=idx, state="up")
        return ipr.get_links(idx)[0].get("IFLA_ADDRESS")


def _device_matches(ipr: IPRoute, idx: int, local_ip: str, mtu: int) -> bool:
    link = ipr.get_links(idx)[0]
    info = link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    if link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "vxlan" or info is None:
        return False
    return (info.get("IFLA_VXLAN_ID") == names.VXLAN_VNI and info.get("IFLA_VXLAN_PORT") == names.VXLAN_PORT
            and info.get("IFLA_VXLAN_LOCAL") == local_ip and link.get("IFLA_MTU") == mtu)


def current(ipr: IPRoute, idx: int) -> OverlayState:
    """What the kernel holds on flannel.1 now."""
    neighbours = frozenset(
        (n.get("NDA_DST"), n.get("NDA_LLADDR")) for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_INET)
        if n["state"] == NUD_PERMANENT and n.get("NDA_LLADDR")
    )
    fdb = frozenset(
        (n.get("NDA_LLADDR"), n.get("NDA_DST")) for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_BRIDGE)
        if n.get("NDA_DST") and n.get("NDA_LLADDR") != "00:00:00:00:00:00"
    )
    routes = frozenset(
        (f"{r.get('RTA_DST')}/{r['dst_len']}", r.get("RTA_GATEWAY")) for r in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
        if r.get("RTA_OIF") == idx and r.get("RTA_GATEWAY")
    )
    return OverlayState(neighbours, fdb, routes)


def apply(netns: str | None, want: OverlayState, have: OverlayState | None = None) -> OverlayState:
    """Bring flannel.1's ARP, FDB and routes to `want` (adds in flannel's order, then removals).

    Without `have` the kernel is read before and after, and what it holds then is returned. With
    `have` (what an earlier call returned) only the difference is written, nothing is read, and
    `want` is returned: every write was acknowledged by the kernel, and whatever changed behind the
    agent's back is found by the next call without `have`."""
    with netlink(netns) as ipr:
        idx = index(ipr, names.VXLAN_IF)
        if idx is None:
            raise RuntimeError(f"{names.VXLAN_IF} is missing in {netns or 'this namespace'}")
        read_back = have is None
        if have is None:
            have = current(ipr, idx)
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
        return current(ipr, idx) if read_back else want
