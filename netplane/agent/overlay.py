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

The device and its entries are read and written through kernel/vxlan.py; this module decides what
they must be.
"""
from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import dataclass

from netplane import names
from netplane.kernel import vxlan
from netplane.kernel.vxlan import OverlayState

FLANNEL_DEVICE = vxlan.Device(names.VXLAN_IF, names.VXLAN_VNI, names.VXLAN_PORT)

ANNOTATION_PREFIX = "flannel.alpha.coreos.com/"
BACKEND_DATA = ANNOTATION_PREFIX + "backend-data"
BACKEND_TYPE = ANNOTATION_PREFIX + "backend-type"
PUBLIC_IP = ANNOTATION_PREFIX + "public-ip"
SUBNET_MANAGER = ANNOTATION_PREFIX + "kube-subnet-manager"


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


def ensure_device(netns: str | None, local_ip: str, pod_cidr: str, mtu: int) -> str:
    """flannel.1 (flannel's ensureLink: one that differs is made again) with the network address of
    the node's podCIDR, up; returns its MAC."""
    return vxlan.ensure_device(netns, FLANNEL_DEVICE, local_ip, network_address(pod_cidr), mtu)


def apply(netns: str | None, want: OverlayState, have: OverlayState | None = None) -> OverlayState:
    """flannel.1's entries brought to ``want`` (vxlan.apply: with ``have``, only the difference)."""
    return vxlan.apply(netns, names.VXLAN_IF, want, have)
