"""A trace's result, and its two renderings: a table for people, JSON for programs.

JSON (`-o json`):
    {"delivered": bool, "replied": bool,
     "hops": [{"node", "netns", "interface", "direction", "src", "dst", "sport", "dport",
               "encap": null | {"vni", "outer_src", "outer_dst", "port"}}],
     "nat": [{"node", "type": "DNAT" | "SNAT", "from", "to", "confirmed": bool | null}]}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netplane import names
from netplane.trace.hops import Hop
from netplane.trace.nat import Nat, endpoint


@dataclass(frozen=True)
class Report:
    title: str                  # "default/client 10.244.0.4 -> svc/web 10.96.0.2:80 tcp"
    delivered: bool
    replied: bool
    hops: list[Hop] = field(default_factory=list)
    nat: list[Nat] = field(default_factory=list)
    delivered_to: str = ""      # the namespace the request reached, when delivered


def to_json(report: Report) -> dict:
    return {
        "delivered": report.delivered,
        "replied": report.replied,
        "hops": [{
            "node": h.node, "netns": h.netns, "interface": h.interface, "direction": h.direction,
            "src": h.src, "dst": h.dst, "sport": h.sport, "dport": h.dport,
            "encap": None if h.encap is None else {
                "vni": h.encap.vni, "outer_src": h.encap.outer_src, "outer_dst": h.encap.outer_dst,
                "port": h.encap.port},
        } for h in report.hops],
        "nat": [{"node": n.node, "type": n.type, "from": n.from_, "to": n.to, "confirmed": n.confirmed}
                for n in report.nat],
    }


def short_netns(netns: str) -> str:
    """A lab namespace without its `np.<lab>.` prefix: `pod.default.client`, `node-1`, `underlay`."""
    lab = names.lab_of_netns(netns)
    return netns[len(names.lab_prefix(lab)):] if lab else netns


def _encap(hop: Hop) -> str:
    e = hop.encap
    return "" if e is None else f"vxlan vni {e.vni} {e.outer_src} > {e.outer_dst} udp/{e.port}"


def _interface(hop: Hop) -> str:
    return f"{hop.interface} ({hop.bridge} port)" if hop.bridge else hop.interface


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(*rows)]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _delivered(report: Report) -> str:
    if report.delivered:
        return f"yes, in {short_netns(report.delivered_to)}" if report.delivered_to else "yes"
    requests = [h for h in report.hops if h.direction == "request"]
    if not requests:
        return "no"
    last = requests[-1]
    return f"no; last seen in {short_netns(last.netns)} on {last.interface} ({last.io})"


def table(report: Report) -> str:
    lines = [f"trace {report.title}"]
    if report.hops:
        start = report.hops[0].time_ns
        rows = [["#", "TIME(ms)", "NODE", "NETNS", "INTERFACE", "IO", "DIRECTION", "PACKET", "SRC", "DST", "ENCAP"]]
        for i, h in enumerate(report.hops, 1):
            rows.append([str(i), f"{(h.time_ns - start) / 1e6:.3f}", h.node, short_netns(h.netns), _interface(h), h.io,
                         h.direction, h.what, endpoint(h.src, h.sport), endpoint(h.dst, h.dport), _encap(h)])
        lines += _columns(rows)
    else:
        lines.append("the probe was not seen anywhere (not even leaving the source pod)")
    for n in report.nat:
        check = {True: " (conntrack agrees)", False: " (not in conntrack)", None: ""}[n.confirmed]
        lines.append(f"{n.type} on {n.node}: {n.from_} -> {n.to}{check}")
    lines.append(f"delivered: {_delivered(report)}")
    replies = [h for h in report.hops if h.direction == "reply"]
    lines.append(f"replied: yes ({replies[-1].what})" if report.replied and replies else "replied: no")
    return "\n".join(lines)
