"""`netplane capture`: a live capture in one of the lab's namespaces, as tcpdump would show it.

The packet socket is capture.Capture's (one AF_PACKET socket made inside the namespace by
kernel.netns.socket_in, kernel timestamps, PACKET_OUTGOING for the direction); nothing is made
promiscuous, for the reason capture.py gives. An interface, when named, is checked to exist and the
frames of the others are dropped here. Each frame becomes one line (`line`), with what a VXLAN
packet carries spelled out after its outer header, or goes to a pcapng file (pcap.Writer).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from netplane.kernel import links, netns
from netplane.trace import capture
from netplane.trace.capture import Frame
from netplane.trace.match import VXLAN_FLAG_VNI, VXLAN_PORTS, _icmp_what, _tcp_what
from netplane.trace.resolve import Place

SLICE = 0.5  # seconds between checks of the time limit while nothing comes


def interfaces(place: Place) -> list[str]:
    """The interfaces in a namespace, by name."""
    return list(links.masters(place.netns))


def frames(place: Place, interface: str | None = None, count: int | None = None,
           seconds: float | None = None, ready: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Frames seen in the namespace (on one interface if given) as they come, until `count` frames or
    `seconds` have passed; the caller may stop earlier (Ctrl-C). `ready` is called once the socket
    is open: from then on nothing is missed."""
    if not netns.exists(place.netns):
        raise FileNotFoundError(f"network namespace {place.netns} does not exist")
    end = None if seconds is None else time.monotonic() + seconds
    seen = 0
    with capture.Capture((place,)) as cap:
        if ready is not None:
            ready()
        while count is None or seen < count:
            now = time.monotonic()
            if end is not None and now >= end:
                return
            for frame in cap.frames(now + (SLICE if end is None else min(SLICE, end - now))):
                if interface is not None and frame.interface != interface:
                    continue
                yield frame
                seen += 1
                if count is not None and seen >= count:
                    return


def _ports(ip) -> str:
    l4 = ip.payload
    if isinstance(l4, (TCP, UDP)):
        return f"{ip.src}:{l4.sport} > {ip.dst}:{l4.dport}"
    return f"{ip.src} > {ip.dst}"


def _ip(ip) -> str:
    """One IPv4 packet in a few words; a VXLAN packet with the frame it carries."""
    if ip.frag or ip.flags.MF:
        return f"{ip.src} > {ip.dst} ip proto {ip.proto} fragment offset {ip.frag * 8}, length {ip.len}"
    l4 = ip.payload
    if isinstance(l4, TCP):
        flags = _tcp_what(str(l4.flags))
        data = len(bytes(l4.payload))
        return f"{_ports(ip)} tcp {flags} seq {l4.seq}" + (f" ack {l4.ack}" if "A" in str(l4.flags) else "") + \
            f", length {data}"
    if isinstance(l4, UDP):
        raw = bytes(l4.payload)
        if l4.dport in VXLAN_PORTS and len(raw) >= 8:
            header = VXLAN(raw[:8])
            if header.flags & VXLAN_FLAG_VNI:
                return f"{_ports(ip)} udp vxlan vni {header.vni}: {ether(raw[8:])}"
        return f"{_ports(ip)} udp, length {len(raw)}"
    if isinstance(l4, ICMP):
        text = f"{ip.src} > {ip.dst} icmp {_icmp_what(l4)}"
        if l4.type in (0, 8):
            text += f" id {l4.id} seq {l4.seq}"
        return text
    return f"{ip.src} > {ip.dst} ip proto {ip.proto}, length {ip.len}"


def ether(data: bytes) -> str:
    """A summary of an Ethernet frame: ARP, IPv4 (TCP, UDP, ICMP, VXLAN), IPv6, or its type."""
    if len(data) < 14:
        return f"short frame, length {len(data)}"
    try:
        frame = Ether(data)
    except Exception:  # noqa: BLE001 - a frame scapy cannot parse is shown by its size
        return f"unparsed frame, length {len(data)}"
    if frame.haslayer(ARP):
        arp = frame[ARP]
        if arp.op == 1:
            return f"arp who-has {arp.pdst} tell {arp.psrc}"
        if arp.op == 2:
            return f"arp reply {arp.psrc} is-at {arp.hwsrc}"
        return f"arp op {arp.op}"
    if isinstance(frame.payload, IP):
        return _ip(frame.payload)
    if isinstance(frame.payload, IPv6):
        ip6 = frame.payload
        inner = ip6.payload
        while type(inner).__name__.startswith("IPv6ExtHdr"):  # hop-by-hop (MLD), routing, fragment...
            inner = inner.payload
        return f"{ip6.src} > {ip6.dst} ipv6 {inner.name}, length {ip6.plen}"
    return f"{frame.src} > {frame.dst} ethertype 0x{frame.type:04x}, length {len(data)}"


def line(frame: Frame) -> str:
    """`HH:MM:SS.ffffff IFACE in|out SUMMARY`, tcpdump-like; the time is the kernel's, local."""
    stamp = datetime.fromtimestamp(frame.time_ns // 1_000_000_000)
    micro = (frame.time_ns // 1000) % 1_000_000
    return f"{stamp:%H:%M:%S}.{micro:06d} {frame.interface} {'out' if frame.outgoing else 'in '} {ether(frame.data)}"
