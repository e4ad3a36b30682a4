"""A trace's result, and its two renderings: a table for people, JSON for programs.

JSON (`-o json`):
    {"delivered": bool, "replied": bool,
     "hops": [{"node", "netns", "interface", "direction", "packet", "src", "dst", "sport", "dport",
               "encap": null | {"vni", "outer_src", "outer_dst", "port"}}],
     "nat": [{"node", "type": "DNAT" | "SNAT", "from", "to", "confirmed": bool | null}],
     "rules": [{"node", "table", "chain", "rule", "verdict", "service", "endpoint", "policy", "direction"}],
     "reason": str | null,
     "notes": [str]}

"rules" lists the netfilter rules the probe matched, per node in the order the kernel evaluated
them: "table" as nft names it ("ip kube-proxy", "ip nat", "ip filter"), "chain", "rule" (the rule's
text as `nft` prints it, counters left out; "policy drop" when a base chain's policy dropped it),
"verdict" ("accept", "drop", "jump KUBE-SVC-...", "goto service-...", "continue", ...), "service"
(the Service port the rule belongs to, as kube-proxy names it: "default/web:http", or null),
"endpoint" (the endpoint the rule sends to, "10.244.2.3:8080", or null), "policy" (the NetworkPolicy
whose rule it is, "x/allow-web (ingress)", or the direction whose policies dropped it, or null) and
"direction" ("request" or "reply"). A hop's "packet" is the table's PACKET column: "SYN", "SYN-ACK", "datagram",
"echo-request", "dest-unreach/port-unreachable", or with `--dns` the query ("query A
web.default.svc.cluster.local.") and the answer ("NOERROR A 10.96.0.2"). Accepting base-chain policies are left out. "reason" says why a probe that was not
delivered was lost (null when it was delivered); "notes" says what the trace could not see (rule
hits with the iptables-legacy backend, say).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netplane import names
from netplane.trace.capture import Frame
from netplane.trace.hops import Hop
from netplane.trace.nat import Nat, endpoint

if TYPE_CHECKING:
    from netplane.trace.rules import Hit


@dataclass(frozen=True)
class Report:
    title: str                  # "default/client 10.244.0.4 -> svc/web 10.96.0.2:80 tcp"
    delivered: bool
    replied: bool
    hops: list[Hop] = field(default_factory=list)
    nat: list[Nat] = field(default_factory=list)
    delivered_to: str = ""      # the namespace the request reached, when delivered
    frames: list[Frame] = field(default_factory=list, repr=False)  # every frame captured (for pcap files)
    rules: list[Hit] = field(default_factory=list)  # the netfilter rules the probe matched, per node
    reason: str | None = None   # why it was not delivered
    notes: list[str] = field(default_factory=list)  # what the trace could not see


def to_json(report: Report) -> dict:
    return {
        "delivered": report.delivered,
        "replied": report.replied,
        "hops": [{
            "node": h.node, "netns": h.netns, "interface": h.interface, "direction": h.direction, "packet": h.what,
            "src": h.src, "dst": h.dst, "sport": h.sport, "dport": h.dport,
            "encap": None if h.encap is None else {
                "vni": h.encap.vni, "outer_src": h.encap.outer_src, "outer_dst": h.encap.outer_dst,
                "port": h.encap.port},
        } for h in report.hops],
        "nat": [{"node": n.node, "type": n.type, "from": n.from_, "to": n.to, "confirmed": n.confirmed}
                for n in report.nat],
        "rules": [{"node": r.node, "table": r.table, "chain": r.chain, "rule": r.rule, "verdict": r.verdict,
                   "service": r.service, "endpoint": r.endpoint, "policy": r.policy, "direction": r.direction}
                  for r in report.rules],
        "reason": report.reason,
        "notes": list(report.notes),
    }


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
        return f"yes, in {names.short_netns(report.delivered_to)}" if report.delivered_to else "yes"
    requests = [h for h in report.hops if h.direction == "request"]
    if not requests:
        return "no"
    last = requests[-1]
    return f"no; last seen in {names.short_netns(last.netns)} on {last.interface} ({last.io})"


def table(report: Report) -> str:
    lines = [f"trace {report.title}"]
    if report.hops:
        start = report.hops[0].time_ns
        rows = [["#", "TIME(ms)", "NODE", "NETNS", "INTERFACE", "IO", "DIRECTION", "PACKET", "SRC", "DST", "ENCAP"]]
        for i, h in enumerate(report.hops, 1):
            rows.append([str(i), f"{(h.time_ns - start) / 1e6:.3f}", h.node, names.short_netns(h.netns), _interface(h), h.io,
                         h.direction, h.what, endpoint(h.src, h.sport), endpoint(h.dst, h.dport), _encap(h)])
        lines += _columns(rows)
    else:
        lines.append("the probe was not seen anywhere (not even leaving the source pod)")
    lines += rules_section(report.rules)
    for n in report.nat:
        check = {True: " (conntrack agrees)", False: " (not in conntrack)", None: ""}[n.confirmed]
        lines.append(f"{n.type} on {n.node}: {n.from_} -> {n.to}{check}")
    lines.append(f"delivered: {_delivered(report)}")
    if report.reason:
        lines.append(f"reason: {report.reason}")
    replies = [h for h in report.hops if h.direction == "reply"]
    lines.append(f"replied: yes ({replies[-1].what})" if report.replied and replies else "replied: no")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _mapped(hit: Hit) -> str:
    if hit.policy:
        return f"NetworkPolicy {hit.policy}" if "/" in hit.policy else f"NetworkPolicies ({hit.policy})"
    if hit.service and hit.endpoint:
        return f"{hit.service} -> {hit.endpoint}"
    return hit.service or (f"-> {hit.endpoint}" if hit.endpoint else "")


def rules_section(hits: list[Hit]) -> list[str]:
    """The rules the probe matched, a block per node, each rule with the Service (and endpoint)
    it belongs to."""
    lines: list[str] = []
    for node in dict.fromkeys(h.node for h in hits):
        rows = [["", "DIRECTION", "TABLE", "CHAIN", "RULE", "VERDICT", "SERVICE"]]
        rows += [["", h.direction, h.table, h.chain, h.rule or "-", h.verdict, _mapped(h)] for h in hits if h.node == node]
        lines.append(f"rules on {node}:")
        lines += _columns(rows)
    return lines
