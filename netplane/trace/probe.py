"""The probe: one packet whose marks survive NAT and tunnels, so it can be recognised at every hop.

kube-proxy's DNAT rewrites the destination address and port, flannel wraps the packet in
VXLAN, but none of them touch the IP ID, the source port (conntrack keeps it unless two flows
collide), the TCP sequence number, the ICMP echo id/sequence or the payload. A probe carries a random
value in each, so its copies are told apart from any other traffic without a shared clock or
state in the kernel.

A UDP probe may be a DNS query (``netplane trace --dns NAME``): a real question a DNS server answers,
its tag in an EDNS0 option from the range RFC 6891 leaves for local use, which servers ignore.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from scapy.layers.dns import DNS, DNSQR, DNSRROPT, EDNS0TLV
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Packet, Raw

from netplane import names

PROTOCOLS = ("tcp", "udp", "icmp")
TAG_PREFIX = b"netplane-trace:"
# the Linux ephemeral range (net.ipv4.ip_local_port_range): a source port the pod could have chosen
SPORT_RANGE = (32768, 60999)
TAG_OPTION = 65001  # the EDNS0 option code of a DNS probe's tag: the first of the local/experimental codes
DNS_BUFFER = 1232  # the EDNS0 UDP size a DNS probe offers, as dig and current resolvers do


@dataclass(frozen=True)
class Probe:
    proto: str          # tcp | udp | icmp
    src: str            # the source pod's IP
    dst: str            # the address the probe is sent to (a pod IP, a ClusterIP, any IP)
    dport: int | None   # None for icmp
    sport: int          # TCP/UDP source port, or the ICMP echo identifier
    ip_id: int
    seq: int            # TCP sequence number, or the ICMP echo sequence number
    tag: bytes          # payload of UDP datagrams and ICMP echoes
    query: tuple[str, str] | None = None  # a UDP probe's DNS question: (name, type)

    @property
    def payload(self) -> bytes:
        """What a UDP datagram or ICMP echo carries: the tag, or a DNS query whose EDNS0 option carries it."""
        if self.query is None:
            return self.tag
        name, qtype = self.query
        option = DNSRROPT(rclass=DNS_BUFFER, rdata=[EDNS0TLV(optcode=TAG_OPTION, optdata=self.tag)])
        return bytes(DNS(id=self.seq, rd=1, qd=DNSQR(qname=name, qtype=names.DNS_TYPES[qtype]), ar=[option]))

    @property
    def reply_ack(self) -> int:
        """The acknowledgement number of any TCP answer to the SYN (SYN-ACK or RST)."""
        return (self.seq + 1) & 0xFFFFFFFF


def new(proto: str, src: str, dst: str, dport: int | None, query: tuple[str, str] | None = None) -> Probe:
    """A probe with fresh random marks; ``query``: the DNS question a UDP probe asks."""
    if proto not in PROTOCOLS:
        raise ValueError(f"protocol {proto!r}: choose one of {', '.join(PROTOCOLS)}")
    if query is not None and proto != "udp":
        raise ValueError(f"a DNS query is sent over udp, not {proto}")
    if query is not None and query[1] not in names.DNS_QUESTION_TYPES:
        raise ValueError(f"DNS type {query[1]!r}: choose one of {', '.join(names.DNS_QUESTION_TYPES)}")
    low, high = SPORT_RANGE
    token = secrets.token_hex(6).encode()
    return Probe(
        proto=proto, src=src, dst=dst, dport=None if proto == "icmp" else dport,
        sport=low + secrets.randbelow(high - low + 1) if proto != "icmp" else 1 + secrets.randbelow(0xFFFF),
        ip_id=1 + secrets.randbelow(0xFFFF),  # never 0: with IP_HDRINCL the kernel fills in an ID of 0
        seq=secrets.randbits(32) if proto == "tcp" else 1 + secrets.randbelow(0xFFFF),
        tag=TAG_PREFIX + token, query=query,
    )


def packet(probe: Probe) -> Packet:
    """The probe as an IP packet (scapy fills in lengths and checksums when it is turned into bytes)."""
    ip = IP(src=probe.src, dst=probe.dst, id=probe.ip_id, ttl=64)
    if probe.proto == "tcp":
        return ip / TCP(sport=probe.sport, dport=probe.dport, seq=probe.seq, flags="S", window=64240)
    if probe.proto == "udp":
        return ip / UDP(sport=probe.sport, dport=probe.dport) / Raw(probe.payload)
    return ip / ICMP(type=8, id=probe.sport, seq=probe.seq) / Raw(probe.payload)
