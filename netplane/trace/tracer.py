"""One trace: open the captures, send the probe, collect its copies, and make the report.

The capture stops as soon as a reply is back in the source pod (everything before it is already
queued on the sockets, which are drained once more), or after CAPTURE_SECONDS when nothing comes
back. Frames are matched in time order at the end, so that a reply is judged knowing every address
the request was seen going to.
"""
from __future__ import annotations

import time

from netplane.trace import capture, hops as hoplib, nat as natlib, probe as probelib
from netplane.trace.hops import Hop
from netplane.trace.match import Matcher
from netplane.trace.render import Report
from netplane.trace.resolve import Target

CAPTURE_SECONDS = 1.5


def collect(target: Target, probe: probelib.Probe, seconds: float = CAPTURE_SECONDS) -> list[capture.Frame]:
    """Every frame seen in the watched namespaces from just before the probe until its reply."""
    wire = bytes(probelib.packet(probe))
    early = Matcher(probe)
    frames: list[capture.Frame] = []
    with capture.Capture(target.watch) as cap, capture.Sender(target.source) as sender:
        sender.send(wire, probe.dst)
        for frame in cap.frames(time.monotonic() + seconds):
            frames.append(frame)
            if frame.place.netns == target.source.netns and not frame.outgoing:
                seen = early.frame(frame.data)
                if seen is not None and seen.direction == "reply":
                    break
        frames += cap.drain()
    return frames


def hops_of(frames: list[capture.Frame], probe: probelib.Probe, ports: dict[str, dict[str, str]] | None = None
            ) -> list[Hop]:
    """The probe's copies among the frames, in time order; `ports` names the bridge of bridge ports."""
    ports = ports or {}
    matcher = Matcher(probe)
    found = []
    for f in sorted(frames, key=lambda f: (f.time_ns, f.order)):
        seen = matcher.frame(f.data)
        if seen is not None:
            found.append(Hop.of(seen, time_ns=f.time_ns, order=f.order, node=f.place.node, netns=f.place.netns,
                                interface=f.interface, io="out" if f.outgoing else "in",
                                bridge=ports.get(f.place.netns, {}).get(f.interface)))
    return hoplib.ordered(found)


def translations(target: Target, probe: probelib.Probe, hops: list[Hop], check: bool = True) -> list[natlib.Nat]:
    """NAT inferred from the hops, checked against the nodes' conntrack."""
    inferred = natlib.infer(hops)
    if not check or not any(h.direction == "request" for h in hops):
        return inferred
    tables = capture.conntrack(target.node_netns, capture.conntrack_argv(probe.proto, probe.src, probe.sport))
    tracked = [n for node, text in tables.items()
               for n in natlib.from_conntrack(node, natlib.parse_conntrack_xml(text), probe)]
    return natlib.confirm(inferred, tracked, set(tables))


def run(target: Target, seconds: float = CAPTURE_SECONDS, check_conntrack: bool = True) -> Report:
    probe = probelib.new(target.proto, target.src_ip, target.dst_ip, target.dport)
    frames = collect(target, probe, seconds)
    hops = hops_of(frames, probe, capture.bridge_ports(target.switches))
    destinations = set(target.destinations)
    if destinations:
        delivered = hoplib.delivered(hops, destinations)
    else:  # an address outside the lab's pods and nodes: only an answer shows it got there
        delivered = hoplib.answered(hops, target.source.netns)
    reached = next((h.netns for h in hops if h.direction == "request" and h.netns in destinations), "")
    return Report(target.title, delivered, hoplib.replied(hops, target.source.netns), hops,
                  translations(target, probe, hops, check_conntrack), reached)
