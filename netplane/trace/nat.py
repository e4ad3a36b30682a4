"""Address translation along the path: inferred from the hops, confirmed with the node's conntrack.

The request keeps its marks through NAT, so a translation shows as a change of destination (DNAT,
kube-proxy's Service rules) or of source (SNAT/masquerade) between consecutive copies of the
request. The change is charged to the node of the first copy that carries the new address: the
namespace whose netfilter rewrote it (PREROUTING/OUTPUT for DNAT, POSTROUTING for SNAT).
A translation only counts once and only towards an address not seen before, so two copies whose
timestamps come out of order cannot invent a translation back.

The node's conntrack table holds the same facts (the flow's original and reply tuples);
`from_conntrack` reads `conntrack -L -o xml` to confirm them.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from netplane.trace.hops import Hop
from netplane.trace.probe import Probe


@dataclass(frozen=True)
class Nat:
    node: str
    type: str          # DNAT | SNAT
    from_: str         # ip:port (ip for ICMP)
    to: str
    confirmed: bool | None = None  # True when the node's conntrack holds the same translation


def endpoint(ip: str, port: int | None) -> str:
    return ip if port is None else f"{ip}:{port}"


def infer(hops: list[Hop]) -> list[Nat]:
    """The translations the request went through, in order (hops must be ordered)."""
    found: list[Nat] = []
    requests = [h for h in hops if h.direction == "request"]
    if not requests:
        return found
    seen_dst, seen_src = {requests[0].destination}, {requests[0].source}
    prev = requests[0]
    for hop in requests[1:]:
        if hop.destination != prev.destination and hop.destination not in seen_dst:
            found.append(Nat(hop.node, "DNAT", endpoint(*prev.destination), endpoint(*hop.destination)))
        if hop.source != prev.source and hop.source not in seen_src:
            found.append(Nat(hop.node, "SNAT", endpoint(*prev.source), endpoint(*hop.source)))
        seen_dst.add(hop.destination)
        seen_src.add(hop.source)
        prev = hop
    return found


@dataclass(frozen=True)
class Flow:
    """One conntrack entry: the original and the reply tuple (ports None for ICMP)."""

    proto: str
    orig_src: str
    orig_dst: str
    orig_sport: int | None
    orig_dport: int | None
    reply_src: str
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None


def _tuple(meta: ET.Element) -> tuple[str, str, int | None, int | None, str]:
    l3, l4 = meta.find("layer3"), meta.find("layer4")
    src, dst = l3.findtext("src", ""), l3.findtext("dst", "")
    proto = l4.get("protoname", "") if l4 is not None else ""
    if l4 is None or l4.find("sport") is None:
        ident = l4.findtext("id") if l4 is not None else None  # ICMP: the echo id plays the port
        port = int(ident) if ident else None
        return src, dst, port, None, proto
    return src, dst, int(l4.findtext("sport")), int(l4.findtext("dport")), proto


def parse_conntrack_xml(text: str) -> list[Flow]:
    """Flows from `conntrack -L -o xml`."""
    flows = []
    root = ET.fromstring(text) if text.strip() else ET.Element("conntrack")
    for flow in root.iter("flow"):
        metas = {m.get("direction"): m for m in flow.findall("meta")}
        if "original" not in metas or "reply" not in metas:
            continue
        o_src, o_dst, o_sport, o_dport, proto = _tuple(metas["original"])
        r_src, r_dst, r_sport, r_dport, _ = _tuple(metas["reply"])
        if proto == "icmp":  # the id is one value for both directions, not a port pair
            o_dport = r_dport = None
            r_sport = None
        flows.append(Flow(proto, o_src, o_dst, o_sport, o_dport, r_src, r_dst, r_sport, r_dport))
    return flows


def from_conntrack(node: str, flows: list[Flow], probe: Probe,
                   sent_to: set[tuple[str, int | None]] | None = None) -> list[Nat]:
    """The translations a node's conntrack applied to the probe's flow. An entry of an earlier
    connection from the same source address and port (its TIME_WAIT lasts two minutes) is told
    apart by its destination: the probe's went to one of `sent_to`, the destinations its request
    was seen going to."""
    found = []
    for f in flows:
        if f.proto != probe.proto or f.orig_src != probe.src or f.orig_sport != probe.sport:
            continue
        if sent_to is not None and (f.orig_dst, f.orig_dport) not in sent_to:
            continue
        if (f.reply_src, f.reply_sport) != (f.orig_dst, f.orig_dport):
            found.append(Nat(node, "DNAT", endpoint(f.orig_dst, f.orig_dport), endpoint(f.reply_src, f.reply_sport),
                             True))
        if f.reply_dst != f.orig_src or (f.reply_dport is not None and f.reply_dport != f.orig_sport):
            found.append(Nat(node, "SNAT", endpoint(f.orig_src, f.orig_sport), endpoint(f.reply_dst, f.reply_dport),
                             True))
    return found


def confirm(inferred: list[Nat], tracked: list[Nat], queried: set[str]) -> list[Nat]:
    """The inferred translations marked confirmed or not by the conntrack of the nodes that were
    `queried` (None for the others), plus any that conntrack holds but the capture did not show."""
    keys = {(n.node, n.type, n.from_, n.to) for n in tracked}
    result = [Nat(n.node, n.type, n.from_, n.to,
                  (n.node, n.type, n.from_, n.to) in keys if n.node in queried else None) for n in inferred]
    have = {(n.type, n.from_, n.to) for n in inferred}
    result += [n for n in tracked if (n.type, n.from_, n.to) not in have]
    return result
