"""One trace: open the captures, send the probe, collect its copies, and make the report.

The capture stops as soon as a reply is back in the source pod (everything before it is already
queued on the sockets, which are drained once more), or after CAPTURE_SECONDS when nothing comes
back. Frames are matched in time order at the end, so that a reply is judged knowing every address
the request was seen going to.

Rule hits (rules.py): around the capture, each node holds a temporary table that sets nftrace on
the probe's packets only, and an `nft monitor` that reports the chains and rules they meet; both
are gone when `run` returns, whatever happened. The hits are mapped to the lab's Service ports
(given by the caller, or read through the lab's API), and a probe that was not delivered gets a
reason: the rule that stopped it, else what the hops say.
"""
from __future__ import annotations

import time

from netplane.kernel import conntrack
from netplane.trace import capture, hops as hoplib, nat as natlib, probe as probelib, rules as ruleslib
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
    tables = conntrack.listed_in({p.node: p.netns for p in target.node_netns},
                                 conntrack.flow_argv(probe.proto, probe.src, probe.sport))
    sent_to = {h.destination for h in hops if h.direction == "request"}
    tracked = [n for node, text in tables.items()
               for n in natlib.from_conntrack(node, natlib.parse_conntrack_xml(text), probe, sent_to)]
    return natlib.confirm(inferred, tracked, set(tables))


def run(target: Target, seconds: float = CAPTURE_SECONDS, check_conntrack: bool = True,
        rule_hits: bool = True, query: tuple[str, str] | None = None) -> Report:
    """Trace one probe; rule hits are mapped to the target's Service ports (read by the resolver).
    `rule_hits=False` leaves the nodes' netfilter alone altogether (no table, no monitor); `query`
    (name, type) makes the UDP probe a DNS query."""
    probe = probelib.new(target.proto, target.src_ip, target.dst_ip, target.dport, query)
    found: list[ruleslib.Hit] = []
    notes: list[str] = []
    catalog = ruleslib.Catalog([])
    if rule_hits:
        catalog = ruleslib.Catalog(list(target.services), target.policies)
        tracing = ruleslib.RuleTrace(target.node_netns, probe)
        with tracing:
            frames = collect(target, probe, seconds)
        found = ruleslib.hits(tracing.events(), probe, catalog)
        notes += tracing.notes
    else:
        frames = collect(target, probe, seconds)
    hops = hops_of(frames, probe, capture.bridge_ports(target.switches))
    destinations = set(target.destinations)
    if destinations:
        delivered = hoplib.delivered(hops, destinations)
    else:  # an address outside the lab's pods and nodes: only an answer shows it got there
        delivered = hoplib.answered(hops, target.source.netns)
    reached = next((h.netns for h in hops if h.direction == "request" and h.netns in destinations), "")
    reason = None if delivered else ruleslib.reason(found, hops, catalog)
    return Report(target.title, delivered, hoplib.replied(hops, target.source.netns), hops,
                  translations(target, probe, hops, check_conntrack), reached, frames,
                  rules=found, reason=reason, notes=notes)
