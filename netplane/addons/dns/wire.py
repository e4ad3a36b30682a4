"""DNS messages on the wire (RFC 1035, with EDNS0 from RFC 6891): a query read, an answer written.

A query is read as a server reads it: the header, one question, and an OPT record in the
additional section if the client speaks EDNS0 (its UDP payload size and DO bit). An answer is
written with name compression, the question echoed as it came, and an OPT record when the query had
one (with the client's own UDP size, as CoreDNS echoes it); over UDP it is cut at a record
boundary to the client's size (512 bytes without EDNS0, at least 512 with it), records dropped from
the end (answers, then authority, then additional, whole records) and the TC bit set, so that the
client asks again over TCP.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from netplane import names

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, AXFR, ANY = names.DNS_TYPES.values()
TYPE_NAMES = {number: name for name, number in names.DNS_TYPES.items()}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = range(len(names.DNS_RCODES))
RCODE_NAMES = dict(enumerate(names.DNS_RCODES))
IN = 1
QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
DO = 0x8000  # in an OPT record's TTL field
PLAIN_UDP_SIZE = 512
HEADER = struct.Struct(">HHHHHH")


class FormatError(Exception):
    """A message that is not a DNS query this server can read."""


@dataclass(frozen=True)
class Question:
    name: str  # as the client wrote it, without the final dot ("" is the root)
    qtype: int
    qclass: int = IN

    @property
    def key(self) -> str:
        """The name as names compare: lower case."""
        return self.name.lower()


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    question: Question
    udp_size: int | None = None  # the client's EDNS0 payload size; None without EDNS0
    dnssec_ok: bool = False
    size: int = 0  # of the message, as the log plugin reports it

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & RD)

    def limit(self, tcp: bool) -> int:
        """The largest answer that may go back: 64 KiB over TCP, else the client's UDP size."""
        if tcp:
            return 65535
        return max(self.udp_size or PLAIN_UDP_SIZE, PLAIN_UDP_SIZE)


def _read_name(data: bytes, at: int) -> tuple[str, int]:
    """A name at ``at`` (following compression pointers) and where the bytes after it begin."""
    labels, end, jumps = [], None, 0
    while True:
        if at >= len(data):
            raise FormatError("a name runs past the end of the message")
        length = data[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(data) or jumps > 64:
                raise FormatError("a bad compression pointer")
            end = at + 2 if end is None else end
            at, jumps = ((length & 0x3F) << 8) | data[at + 1], jumps + 1
            continue
        if length & 0xC0:
            raise FormatError("an unknown label type")
        at += 1
        if length == 0:
            return ".".join(labels), at if end is None else end
        labels.append(data[at:at + length].decode("ascii", errors="replace"))
        at += length


def parse_query(data: bytes) -> Query:
    """The query in a message; FormatError when it is none (no question, a response, bad names)."""
    if len(data) < HEADER.size:
        raise FormatError("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions; a query has one")
    name, at = _read_name(data, HEADER.size)
    if at + 4 > len(data):
        raise FormatError("the question is cut short")
    qtype, qclass = struct.unpack_from(">HH", data, at)
    at += 4
    udp_size, dnssec_ok = None, False
    for _ in range(ancount + nscount + arcount):
        _, at = _read_name(data, at)
        if at + 10 > len(data):
            raise FormatError("a record is cut short")
        rtype, rclass, ttl, length = struct.unpack_from(">HHIH", data, at)
        at += 10 + length
        if rtype == OPT:
            udp_size, dnssec_ok = rclass, bool(ttl & DO)
    return Query(ident, flags, Question(name, qtype, qclass), udp_size, dnssec_ok, len(data))


@dataclass(frozen=True)
class Record:
    name: str
    rtype: int
    ttl: int
    data: tuple  # the type's fields: (address,), (target,), (priority, weight, port, target), ...

    def text(self) -> str:
        """The record as a zone file writes it."""
        fields = " ".join(f'"{f}"' if self.rtype == TXT else str(f) for f in self.data)
        return f"{self.name}.\t{self.ttl}\tIN\t{TYPE_NAMES.get(self.rtype, self.rtype)}\t{fields}"


def a(name: str, ttl: int, address: str) -> Record:
    return Record(name, AAAA if ":" in address else A, ttl, (address,))


def cname(name: str, ttl: int, target: str) -> Record:
    return Record(name, CNAME, ttl, (target,))


def ptr(name: str, ttl: int, target: str) -> Record:
    return Record(name, PTR, ttl, (target,))


def srv(name: str, ttl: int, priority: int, weight: int, port: int, target: str) -> Record:
    return Record(name, SRV, ttl, (priority, weight, port, target))


def txt(name: str, ttl: int, text: str) -> Record:
    return Record(name, TXT, ttl, (text,))


def soa(name: str, ttl: int, mname: str, rname: str, serial: int, refresh: int, retry: int, expire: int,
        minimum: int) -> Record:
    return Record(name, SOA, ttl, (mname, rname, serial, refresh, retry, expire, minimum))


def ns(name: str, ttl: int, target: str) -> Record:
    return Record(name, NS, ttl, (target,))


class _Writer:
    """A message being written, with the offsets of the names in it for compression."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.names: dict[str, int] = {}

    def name(self, name: str) -> None:
        labels = name.split(".") if name else []
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            known = self.names.get(suffix)
            if known is not None:
                self.out += struct.pack(">H", 0xC000 | known)
                return
            if len(self.out) < 0x3FFF:
                self.names[suffix] = len(self.out)
            raw = labels[i].encode("ascii", errors="replace")
            self.out += bytes([len(raw)]) + raw
        self.out.append(0)

    def record(self, record: Record) -> None:
        self.name(record.name)
        self.out += struct.pack(">HHIH", record.rtype, IN, record.ttl, 0)
        length_at, start = len(self.out) - 2, len(self.out)
        fields = record.data
        if record.rtype in (A, AAAA):
            self.out += ipaddress.ip_address(fields[0]).packed
        elif record.rtype in (CNAME, PTR, NS):
            self.name(fields[0])
        elif record.rtype == SRV:
            self.out += struct.pack(">HHH", *fields[:3])
            self.name(fields[3])
        elif record.rtype == TXT:
            raw = fields[0].encode()
            for at in range(0, max(len(raw), 1), 255):
                chunk = raw[at:at + 255]
                self.out += bytes([len(chunk)]) + chunk
        elif record.rtype == SOA:
            self.name(fields[0])
            self.name(fields[1])
            self.out += struct.pack(">IIIII", *fields[2:])
        struct.pack_into(">H", self.out, length_at, len(self.out) - start)


@dataclass
class Answer:
    rcode: int = NOERROR
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    authoritative: bool = True


def response(query: Query, answer: Answer, limit: int) -> bytes:
    """The answer to query as a message of at most ``limit`` bytes: the last whole records are left
    out until it fits (additional ones first), and TC says that some were."""
    sections = [list(answer.answers), list(answer.authority), list(answer.additional)]
    opt = 11 if query.udp_size is not None else 0
    truncated = False
    while True:
        message = _message(query, answer, sections, truncated)
        if len(message) + opt <= limit or not any(sections):
            return _with_opt(message, query)
        sections[2 if sections[2] else 1 if sections[1] else 0].pop()
        truncated = True


def _message(query: Query, answer: Answer, sections: list[list[Record]], truncated: bool = False) -> bytes:
    flags = QR | (query.flags & (0x7800 | RD | CD)) | (AA if answer.authoritative else 0) | answer.rcode
    flags |= TC if truncated else 0
    extra = 1 if query.udp_size is not None else 0
    w = _Writer()
    w.out += HEADER.pack(query.id, flags, 1, len(sections[0]), len(sections[1]), len(sections[2]) + extra)
    w.name(query.question.name)
    w.out += struct.pack(">HH", query.question.qtype, query.question.qclass)
    for section in sections:
        for record in section:
            w.record(record)
    return bytes(w.out)


def _with_opt(message: bytes, query: Query) -> bytes:
    """The message with an OPT record, when the query had one (its count is in the header)."""
    if query.udp_size is None:
        return message
    size = max(query.udp_size, PLAIN_UDP_SIZE)
    return message + b"\x00" + struct.pack(">HHIH", OPT, size, DO if query.dnssec_ok else 0, 0)


def error(query: Query, rcode: int) -> bytes:
    """An answer with no records (SERVFAIL, REFUSED, NOTIMP, FORMERR)."""
    return response(query, Answer(rcode, authoritative=False), PLAIN_UDP_SIZE)


def format_error(data: bytes) -> bytes | None:
    """FORMERR for a message whose header can be read (its id echoed), else nothing to answer."""
    if len(data) < HEADER.size or HEADER.unpack_from(data)[1] & QR:
        return None
    ident, flags = struct.unpack_from(">HH", data)
    return HEADER.pack(ident, QR | (flags & (0x7800 | RD)) | FORMERR, 0, 0, 0, 0)
