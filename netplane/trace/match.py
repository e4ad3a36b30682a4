"""Recognising the probe in a captured frame: plain, or inside a VXLAN encapsulation, request or reply.

A request is a copy of the probe: same protocol, same IP ID, and the TCP sequence number or the
payload tag (these survive DNAT, SNAT and encapsulation; the source port usually does, but an SNAT
that collides may change it, so it is not required). A reply is what the destination sends back:
a TCP segment acknowledging the SYN (SYN-ACK or RST), a UDP datagram to the probe's source port
from an address the probe was seen going to (or echoing its tag), an ICMP echo reply carrying the
tag, or an ICMP error quoting the probe.
"""
from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netplane import names
from netplane.trace.probe import Probe

VXLAN_PORTS = (names.VXLAN_PORT, 4789)  # flannel's (the Linux default) and the IANA port
VXLAN_FLAG_VNI = 0x08                   # the I flag: the VNI field is valid (RFC 7348)
ICMP_ERRORS = (3, 4, 5, 11, 12)         # unreachable, source quench, redirect, time exceeded, parameter
PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
TCP_FLAG_NAMES = (("S", "SYN"), ("F", "FIN"), ("R", "RST"), ("P", "PSH"), ("A", "ACK"))


@dataclass(frozen=True)
class Encap:
    """The outer headers of a VXLAN-encapsulated copy."""

    vni: int
    outer_src: str
    outer_dst: str
    port: int


@dataclass(frozen=True)
class Sighting:
    """What one frame says about the probe (addresses are the inner ones when encapsulated)."""

    direction: str  # request | reply
    src: str
    dst: str
    sport: int | None
    dport: int | None
    encap: Encap | None
    what: str       # SYN, SYN-ACK, echo-request, dest-unreach/port-unreachable, ...


def decapsulate(frame: Ether) -> tuple[IP | None, Encap | None]:
    """The (inner) IP packet of an Ethernet frame, and the VXLAN outer headers if it was wrapped."""
    ip = frame.getlayer(IP)
    if ip is None:
        return None, None
    udp = ip.getlayer(UDP)
    if udp is None or udp.dport not in VXLAN_PORTS or ip.frag or ip.flags.MF:
        return ip, None
    raw = bytes(udp.payload)
    if len(raw) < 8 + 14:
        return ip, None
    header = VXLAN(raw[:8])
    if not header.flags & VXLAN_FLAG_VNI:
        return ip, None
    inner = Ether(raw[8:]).getlayer(IP)
    if inner is None:
        return ip, None
    return inner, Encap(vni=header.vni, outer_src=ip.src, outer_dst=ip.dst, port=udp.dport)


def _tcp_what(flags: str) -> str:
    return "-".join(name for letter, name in TCP_FLAG_NAMES if letter in flags) or "none"


def _icmp_what(icmp: ICMP) -> str:
    kind = icmp.sprintf("%ICMP.type%")
    if icmp.type in ICMP_ERRORS:
        return f"{kind}/{icmp.sprintf('%ICMP.code%')}"
    return kind


def _rdata(record) -> str:
    """A DNS record's data as dig prints it (SRV's four fields, names with their final dot)."""
    if record.type == 33:  # scapy reads SRV into its own fields
        return f"{record.priority} {record.weight} {record.port} {record.target.decode()}"
    data = getattr(record, "rdata", b"")
    if isinstance(data, list):  # TXT: its strings
        return " ".join(f'"{d.decode(errors="replace")}"' for d in data)
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def dns_what(payload: bytes) -> str:
    """A DNS message in a few words: the question of a query; the code and the answers of a response."""
    try:
        message = DNS(payload)
        if not message.qr:
            return f"query {message.qd[0].sprintf('%qtype%')} {message.qd[0].qname.decode()}"
        answers = [f"{r.sprintf('%type%')} {_rdata(r)}" for r in message.an or []]
    except Exception:  # noqa: BLE001 - a datagram that does not parse as DNS is still the probe's
        return "datagram"
    code = names.DNS_RCODES[message.rcode] if message.rcode < len(names.DNS_RCODES) else f"RCODE{message.rcode}"
    return " ".join([code, *answers])


class Matcher:
    """Classifies frames against one probe. It remembers every (dst, dport) the request was seen
    going to, so that a reply from the endpoint (before un-DNAT) or from the ClusterIP (after)
    is recognised even when the server does not echo the tag."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.destinations: set[tuple[str, int | None]] = {(probe.dst, probe.dport)}

    def frame(self, data: bytes) -> Sighting | None:
        """Classify an Ethernet frame (what an AF_PACKET socket reads on an Ethernet-like link)."""
        try:
            parsed = Ether(data)
        except Exception:  # noqa: BLE001 - a frame scapy cannot parse is not the probe
            return None
        ip, encap = decapsulate(parsed)
        return self.packet(ip, encap) if ip is not None else None

    def packet(self, ip: IP, encap: Encap | None = None) -> Sighting | None:
        """Classify an IP packet (already taken out of any encapsulation)."""
        direction, what = self._classify(ip)
        if direction is None:
            return None
        sport = dport = None
        if ip.proto in (PROTO_NUMBERS["tcp"], PROTO_NUMBERS["udp"]):  # not an ICMP error quoting them
            sport, dport = ip.payload.sport, ip.payload.dport
        if direction == "request":
            self.destinations.add((ip.dst, dport))
        return Sighting(direction, ip.src, ip.dst, sport, dport, encap, what)

    def _classify(self, ip: IP) -> tuple[str | None, str]:
        p = self.probe
        if ip.proto == 1 and ip.haslayer(ICMP) and ip[ICMP].type in ICMP_ERRORS:
            quoted = ip.getlayer(IPerror)
            if quoted is not None and quoted.id == p.ip_id and quoted.proto == PROTO_NUMBERS[p.proto]:
                return "reply", _icmp_what(ip[ICMP])
            return None, ""
        if ip.proto != PROTO_NUMBERS[p.proto]:
            return None, ""
        if p.proto == "tcp":
            tcp = ip.getlayer(TCP)
            if tcp is None:
                return None, ""
            flags = str(tcp.flags)
            if ip.id == p.ip_id and tcp.seq == p.seq and "A" not in flags:
                return "request", _tcp_what(flags)
            if "A" in flags and tcp.ack == p.reply_ack:
                return "reply", _tcp_what(flags)
            return None, ""
        payload = bytes(ip.payload.payload)
        if p.proto == "udp":
            udp = ip.getlayer(UDP)
            if udp is None:
                return None, ""
            if ip.id == p.ip_id and p.tag in payload:
                direction = "request"
            elif udp.dport == p.sport and (p.tag in payload or (ip.src, udp.sport) in self.destinations):
                direction = "reply"
            else:
                return None, ""
            return direction, dns_what(payload) if p.query else "datagram"
        icmp = ip.getlayer(ICMP)
        if icmp is None:
            return None, ""
        if icmp.type == 8 and ip.id == p.ip_id and p.tag in payload:
            return "request", _icmp_what(icmp)
        if icmp.type == 0 and (p.tag in payload or (icmp.id, icmp.seq) == (p.sport, p.seq)):
            return "reply", _icmp_what(icmp)
        return None, ""
