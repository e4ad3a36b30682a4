"""pcapng files of a trace or a live capture, written with the standard library.

pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html) is a list of blocks: one
Section Header Block, an Interface Description Block per interface (its link type and options such
as if_name), then one Enhanced Packet Block per frame naming its interface by the order of the IDBs.
Unlike classic pcap, one file holds frames of many interfaces, each with its own name, which is what
a trace across namespaces needs: Wireshark shows `frame.interface_name` = `node-1/node-1/flannel.1`.

Timestamps are the kernel's (SO_TIMESTAMPNS), kept to the nanosecond (if_tsresol 9). The direction
(AF_PACKET's PACKET_OUTGOING) goes into epb_flags, so Wireshark can tell a copy sent on an interface
from one received on it (`frame.packet_flags_direction`).

For a trace, the files hold the probe's copies only (the report's hops: request and reply, in hop
order), not everything the sockets saw: frame N of `all.pcapng` is hop N of the table.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from netplane import names
from netplane.trace.capture import Frame
from netplane.trace.hops import Hop
from netplane.trace.render import Report

LINKTYPE_ETHERNET = 1
SNAPLEN = 65536
MERGED = "all.pcapng"

SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
EPB_FLAGS = 2
EPB_INBOUND, EPB_OUTBOUND = 1, 2  # epb_flags bits 0-1


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(options: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HH", code, len(value)) + _pad(value) for code, value in options)
    return body + struct.pack("<HH", OPT_END, 0) if body else b""


def _block(kind: int, body: bytes) -> bytes:
    body = _pad(body)
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def interface_name(node: str, netns: str, interface: str) -> str:
    """An interface's name in a merged file: `<node>/<namespace without np.<lab>.>/<interface>`."""
    return f"{node}/{names.short_netns(netns)}/{interface}"


class Writer:
    """A pcapng file being written: interfaces are declared as they first appear (an IDB may come
    anywhere in a section before the first packet that names it), packets are appended at once."""

    def __init__(self, out: BinaryIO, application: str = "netplane") -> None:
        self.out = out
        self.interfaces: dict[str, int] = {}
        out.write(_block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                         + _options([(SHB_USERAPPL, application.encode())])))

    def interface(self, name: str, description: str = "", linktype: int = LINKTYPE_ETHERNET) -> int:
        """The interface id of `name`, writing its IDB the first time."""
        if name not in self.interfaces:
            options = [(IF_NAME, name.encode()), (IF_TSRESOL, bytes([9]))]
            if description:
                options.append((IF_DESCRIPTION, description.encode()))
            self.out.write(_block(IDB, struct.pack("<HHI", linktype, 0, SNAPLEN) + _options(options)))
            self.interfaces[name] = len(self.interfaces)
        return self.interfaces[name]

    def packet(self, interface: int, time_ns: int, data: bytes, outgoing: bool | None = None,
               comment: str = "", original_length: int | None = None) -> None:
        options = []
        if outgoing is not None:
            options.append((EPB_FLAGS, struct.pack("<I", EPB_OUTBOUND if outgoing else EPB_INBOUND)))
        if comment:
            options.append((OPT_COMMENT, comment.encode()))
        data = data[:SNAPLEN]
        head = struct.pack("<IIIII", interface, (time_ns >> 32) & 0xFFFFFFFF, time_ns & 0xFFFFFFFF, len(data),
                           original_length if original_length is not None else len(data))
        self.out.write(_block(EPB, head + _pad(data) + _options(options)))

    def frame(self, frame: Frame, comment: str = "") -> None:
        """A captured frame, on the interface named after its node, namespace and interface."""
        ident = self.interface(interface_name(frame.place.node, frame.place.netns, frame.interface),
                               f"{frame.interface} in network namespace {frame.place.netns}")
        self.packet(ident, frame.time_ns, frame.data, frame.outgoing, comment)

    def flush(self) -> None:
        self.out.flush()


def write(path: Path | str, frames: Iterable[tuple[Frame, str]]) -> int:
    """Write (frame, comment) pairs to a new pcapng file; the number of frames written."""
    count = 0
    with open(path, "wb") as out:
        writer = Writer(out)
        for frame, comment in frames:
            writer.frame(frame, comment)
            count += 1
    return count


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def place_file(number: int, node: str, netns: str, interface: str) -> str:
    """`NN-<node>-<netns short>-<iface>.pcapng`, e.g. `03-node-1-node-1-flannel.1.pcapng`."""
    return f"{number:02d}-{_safe(node)}-{_safe(names.short_netns(netns))}-{_safe(interface)}.pcapng"


def hop_comment(number: int, hop: Hop) -> str:
    text = f"hop {number}: {hop.direction} {hop.what} {hop.io} {hop.src}"
    text += f":{hop.sport}" if hop.sport is not None else ""
    text += f" > {hop.dst}" + (f":{hop.dport}" if hop.dport is not None else "")
    if hop.encap is not None:
        e = hop.encap
        text += f" in vxlan vni {e.vni} {e.outer_src} > {e.outer_dst} udp/{e.port}"
    return text


def hop_frames(report: Report) -> list[tuple[int, Hop, Frame]]:
    """(hop number, hop, frame) for every hop whose frame the report holds, in hop order."""
    by_key = {(f.place.netns, f.order): f for f in report.frames}
    return [(i, h, by_key[(h.netns, h.order)]) for i, h in enumerate(report.hops, 1) if (h.netns, h.order) in by_key]


def write_trace(report: Report, directory: Path | str) -> list[Path]:
    """One file per place the probe was seen (namespace + interface, numbered in the order the
    probe first reached it) and `all.pcapng` with every hop; the paths written (merged file last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    found = hop_frames(report)
    places: dict[tuple[str, str], list[tuple[Frame, str]]] = {}
    for number, hop, frame in found:
        places.setdefault((hop.netns, hop.interface), []).append((frame, hop_comment(number, hop)))
    written = []
    for n, ((space, interface), frames) in enumerate(places.items(), 1):
        path = directory / place_file(n, frames[0][0].place.node, space, interface)
        write(path, frames)
        written.append(path)
    merged = directory / MERGED
    write(merged, [(frame, hop_comment(number, hop)) for number, hop, frame in found])
    written.append(merged)
    return written
