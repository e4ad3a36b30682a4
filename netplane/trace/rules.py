"""Rule hits: which netfilter chains and rules the probe (request and reply) went through on each
node, mapped back to the Service and endpoint kube-proxy wrote them for, and why a probe that was
not delivered was lost.

How, and the kernel behaviour behind it:
- **Tracing only the probe.** Before the probe is sent, each node namespace gets ONE temporary table
  `ip netplane-trace-<hex>` with base chains at the prerouting and output hooks, priority -400 (before
  raw and conntrack, so before every kube-proxy chain, nftables or iptables-nft). Its rules match the
  probe's marks only (IP ID and TCP seq / UDP length / ICMP echo id; the reply by the TCP ack of our
  seq, the reversed ports, the echo id; an ICMP error by the IP ID it quotes) and do `meta nftrace
  set 1`. The flag stays on the skb, so every nf_tables chain it meets afterwards on that node
  reports it: kube-proxy's `ip kube-proxy` table, and iptables-nft's `ip nat` / `ip filter`.
- **One `nft monitor` per node** (kernel/commands.Lines: read line by line while it runs)
  prints the trace events. `nft monitor` subscribes only once it has read the ruleset, so a marker
  (`add chain <table> ready<n>`) is sent until the monitor prints it; at the end, deleting the table is
  the last event, so once a monitor printed `delete table` it printed every trace event before it.
- **A trace never changes what it traces.** The table is deleted and the monitors stopped in a
  finally, so `nft list ruleset` is afterwards what it was before. The table's name is unique per
  probe, so two traces at once do not touch each other's table.
- **Only the probe's lines count.** Every base chain a traced packet enters starts with a `packet:`
  line (the headers as the chain saw them); the rule lines that follow under the same trace id are
  that packet's. A packet is the request when it carries the probe's IP ID, a reply when its
  addresses and ports are those of a request copy reversed (or it is an ICMP error to the source).
- **Mapping back.** Chain names come from the proxy's own functions (agent/proxy/nftables.py and
  iptables.py: `service-<hash>-ns/name/proto/port`, KUBE-SVC-/KUBE-SEP-... hashes) applied to the
  lab's Services and EndpointSlices (model.service_ports); a DNAT rule names its endpoint; a rule of
  a shared chain (the `no-endpoint-services` map, the reject chain, KUBE-SERVICES' REJECT) is charged
  to the Service whose address the packet was going to.
- With the iptables-legacy backend kube-proxy's rules are x_tables, which nftables tracing cannot
  see: the report says so in a note; the trace itself still works.
"""
from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from netplane import names
from netplane.agent.policy import model, nftables as policy_nft
from netplane.kernel import commands, netns
from netplane.trace.hops import Hop
from netplane.trace.probe import Probe
from netplane.trace.resolve import Place

TABLE_PREFIX = "netplane-trace-"
POLICY_TABLE = f"ip {names.NFT_POLICY_TABLE}"
FAMILY = "ip"
PRIORITY = -400             # NF_IP_PRI_CONNTRACK_DEFRAG: before raw (-300) and conntrack (-200)
READY_SECONDS = 1.5         # how long a monitor may take to read the ruleset and subscribe
MARKER_INTERVAL = 0.05      # a new ready marker this often until every monitor printed one
FLUSH_SECONDS = 1.0         # how long to wait for a monitor to print the table's deletion
ICMP_ERROR_TYPES = ("destination-unreachable", "time-exceeded", "parameter-problem")
PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}

# kube-proxy's chains that all Services share: a rule there is charged to the Service whose address
# the packet was going to (when its verdict does not already name a Service's chain)
SHARED_CHAINS = frozenset({
    "services", "flat-services", "flat-nodeports", "service-endpoints-check", "nodeport-endpoints-check",
    "firewall-check", "reject-chain",
    "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL",
})


# --- the temporary table ------------------------------------------------------------------------

def table_name(probe: Probe) -> str:
    """A name no other trace uses: the probe's IP ID and a random suffix."""
    return f"{TABLE_PREFIX}{probe.ip_id:04x}{secrets.token_hex(2)}"


def match_rules(probe: Probe) -> list[str]:
    """The matches (without the statement) that pick out the probe's request, its reply and an ICMP
    error quoting it. They use only what NAT and tunnels leave alone."""
    p = probe
    if p.proto == "tcp":
        request = f"ip id {p.ip_id} tcp sequence {p.seq}"
        reply = f"tcp flags & ack == ack tcp ackseq {p.reply_ack}"
    elif p.proto == "udp":
        request = f"ip id {p.ip_id} udp length {8 + len(p.payload)}"
        reply = f"ip daddr {p.src} udp dport {p.sport}"
    else:
        request = f"ip id {p.ip_id} icmp type echo-request icmp id {p.sport} icmp sequence {p.seq}"
        reply = f"icmp type echo-reply icmp id {p.sport} icmp sequence {p.seq}"
    # an ICMP error quotes the packet's IP header 8 bytes into the ICMP header: IP ID at +4, protocol at +9
    error = (f"icmp type {{ {', '.join(ICMP_ERROR_TYPES)} }} @th,96,16 {p.ip_id} "
             f"@th,136,8 {PROTO_NUMBERS[p.proto]}")
    return [request, reply, error]


def table_script(name: str, probe: Probe) -> str:
    """The temporary table: `meta nftrace set 1` for the probe's packets, at prerouting and output."""
    rules = "".join(f"\t\t{m} meta nftrace set 1\n" for m in match_rules(probe))
    chains = "".join(f"\tchain {hook} {{\n\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;\n{rules}\t}}\n"
                     for hook in ("prerouting", "output"))
    return f"table {FAMILY} {name} {{\n{chains}}}\n"


# --- parsing `nft monitor` ------------------------------------------------------------------------

@dataclass(frozen=True)
class Packet:
    """The headers of a `packet:` line (what the chain saw)."""

    src: str
    dst: str
    ip_id: int | None
    proto: str              # tcp | udp | icmp | other
    sport: int | None
    dport: int | None
    icmp_type: str | None = None
    icmp_id: int | None = None
    iif: str | None = None
    oif: str | None = None


@dataclass(frozen=True)
class Event:
    """One trace line of a rule or a policy, with the packet its base chain saw."""

    trace_id: str
    table: str              # "ip kube-proxy", "ip nat", ...
    chain: str
    kind: str               # rule | policy | return
    rule: str               # the rule's text ("" for a policy or a return)
    verdict: str            # accept, drop, continue, jump X, goto X, return, ...
    packet: Packet | None


LINE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) "
                  r"(?P<kind>packet: |rule |unknown rule handle |policy |verdict )(?P<rest>.*)$")
COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"(?:^| ){re.escape(name)} (\S+)", text)
    return m.group(1).strip('"') if m else None


def _port(value: str | None, proto: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, proto)
    except OSError:
        return None


def parse_packet(text: str) -> Packet:
    proto = next((p for p in ("tcp", "udp") if f"{p} sport " in f" {text}"), None)
    if proto is None:
        proto = "icmp" if " icmp type " in f" {text}" else (_field(text, "ip protocol") or "other")
    ip_id = _field(text, "ip id")
    icmp_id = _field(text, "icmp id")
    return Packet(
        src=_field(text, "ip saddr") or "", dst=_field(text, "ip daddr") or "",
        ip_id=int(ip_id) if ip_id and ip_id.isdigit() else None, proto=proto,
        sport=_port(_field(text, f"{proto} sport"), proto) if proto in ("tcp", "udp") else None,
        dport=_port(_field(text, f"{proto} dport"), proto) if proto in ("tcp", "udp") else None,
        icmp_type=_field(text, "icmp type"), icmp_id=int(icmp_id) if icmp_id and icmp_id.isdigit() else None,
        iif=_field(text, "iif"), oif=_field(text, "oif"))


def clean_rule(text: str) -> str:
    """A rule's text without its counters (which the monitor read at its start) and doubled spaces."""
    return " ".join(COUNTER.sub("", text).split())


def parse(text: str) -> list[Event]:
    """The rule, policy and return events of `nft monitor` output (other lines are skipped), each
    with the packet its base chain saw: the last `packet:` line of the same trace id."""
    packets: dict[str, Packet] = {}
    events = []
    for line in text.splitlines():
        m = LINE.match(line.rstrip())
        if not m:
            continue
        trace_id, kind, rest = m["id"], m["kind"].strip(), m["rest"].strip()
        table, chain = f"{m['family']} {m['table']}", m["chain"]
        if kind == "packet:":
            packets[trace_id] = parse_packet(rest)
            continue
        if kind in ("rule", "unknown rule handle"):
            body, sep, verdict = rest.rpartition(" (verdict ")
            if not sep:
                body, verdict = rest, ""
            rule = clean_rule(body) if kind == "rule" else f"handle {body.strip()}"
            events.append(Event(trace_id, table, chain, "rule", rule, verdict.rstrip(")").strip(),
                                packets.get(trace_id)))
        else:
            verdict = rest.split()[0] if rest.split() else ""
            events.append(Event(trace_id, table, chain, "policy" if kind == "policy" else "return", "", verdict,
                                packets.get(trace_id)))
    return events


def is_ours(table: str) -> bool:
    return table.split(" ", 1)[-1].startswith(TABLE_PREFIX)


def _requests(packets: Iterable[Packet], probe: Probe) -> list[Packet]:
    return [p for p in packets if p.ip_id == probe.ip_id and p.proto == probe.proto
            and (probe.proto != "icmp" or p.icmp_type == "echo-request")]


def direction(packet: Packet | None, probe: Probe, requests: list[Packet]) -> str | None:
    """request, reply, or None when the packet is not the probe's (another trace's, say)."""
    if packet is None:
        return None
    if packet in requests:
        return "request"
    if packet.proto == "icmp" and packet.icmp_type in ICMP_ERROR_TYPES:
        return "reply" if any(packet.dst == r.src for r in requests) or packet.dst == probe.src else None
    if packet.proto != probe.proto:
        return None
    if probe.proto == "icmp":
        ok = packet.icmp_type == "echo-reply" and (packet.icmp_id in (None, probe.sport))
        return "reply" if ok and any((packet.src, packet.dst) == (r.dst, r.src) for r in requests) else None
    flow = (packet.src, packet.sport, packet.dst, packet.dport)
    if any(flow == (r.dst, r.dport, r.src, r.sport) for r in requests):
        return "reply"
    return None


# --- mapping chains back to Services and endpoints -------------------------------------------------

class Catalog:
    """Chain names and addresses of the lab's Service ports, as both proxy modes name them."""

    def __init__(self, ports: Iterable, policies: model.Cluster | None = None) -> None:
        from netplane.agent.proxy import iptables as ipt, nftables as nft  # the proxy's own names, not a copy
        self.policies = policies
        self.policy_chains = {policy_nft.policy_chain(p, d): f"{p.key} ({d.lower()})" for p in
                              (policies.policies if policies else ()) for d in (model.INGRESS, model.EGRESS)}
        self.chains: dict[str, tuple[str, str | None]] = {}
        self.addresses: dict[tuple[str, str, int], tuple[str, object]] = {}
        self.node_ports: dict[tuple[str, int], tuple[str, object]] = {}
        for sp in ports:
            name = ipt.port_name(sp)
            for chain in (nft.service_chain(sp), nft.local_chain(sp), nft.external_chain(sp), nft.firewall_chain(sp),
                          ipt.service_chain(sp), ipt.local_chain(sp), ipt.external_chain(sp), ipt.firewall_chain(sp)):
                self.chains[chain] = (name, None)
            for ep in sp.endpoints:
                self.chains[ipt.endpoint_chain(sp, ep)] = (name, f"{ep.ip}:{ep.port}")
            self.addresses[(sp.cluster_ip, sp.protocol, sp.port)] = (name, sp)
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                self.addresses[(ip, sp.protocol, sp.port)] = (name, sp)
            if sp.node_port:
                self.node_ports[(sp.protocol, sp.node_port)] = (name, sp)

    def policy_of(self, event: Event) -> str | None:
        """The NetworkPolicy a rule of the policy table belongs to or jumps to, else the direction
        its chain judges."""
        found = self.policy_chains.get(_target(event.verdict) or "") or self.policy_chains.get(event.chain)
        direction = policy_nft.direction_of(event.chain)
        return found or (direction.lower() if direction else None)

    def by_packet(self, packet: Packet | None, nodeport: bool) -> tuple[str, object] | None:
        if packet is None or packet.dport is None:
            return None
        found = self.addresses.get((packet.dst, packet.proto, packet.dport))
        if found is None and nodeport:
            found = self.node_ports.get((packet.proto, packet.dport))
        return found


DNAT = re.compile(r"\bdnat to (\d+\.\d+\.\d+\.\d+(?::\d+)?)")
MAP_DNAT = re.compile(r"\bdnat ip to .* map @")  # the endpoint drawn from a map (nftables' flat layout)


def _translated(events: list[Event], i: int) -> str | None:
    """Where a DNAT through a map sent the packet: the destination its next event on the node shows
    (the same packet by source and IP ID: the trace id changes when the packet is forwarded to the
    overlay)."""
    before = events[i].packet
    for later in events[i + 1:]:
        seen = later.packet
        if before is not None and seen is not None and (seen.src, seen.ip_id) == (before.src, before.ip_id) \
                and (seen.dst, seen.dport) != (before.dst, before.dport):
            return f"{seen.dst}:{seen.dport}" if seen.dport is not None else seen.dst
    return None


def _target(verdict: str) -> str | None:
    words = verdict.split()
    return words[1] if len(words) == 2 and words[0] in ("jump", "goto") else None


@dataclass(frozen=True)
class Hit:
    node: str
    table: str
    chain: str
    rule: str               # the rule's text, or "policy drop"
    verdict: str
    direction: str          # request | reply
    service: str | None     # "default/web:http"
    endpoint: str | None    # "10.244.2.3:8080"
    packet: Packet | None = None
    policy: str | None = None  # the NetworkPolicy whose rule this is ("x/allow-web"), or the direction


def hits(events: dict[str, list[Event]], probe: Probe, catalog: Catalog | None = None) -> list[Hit]:
    """The probe's rule hits on every node (node -> its parsed monitor events), in the order each
    node's monitor printed them, nodes in the order given. Our own table's lines and accepting
    base-chain policies are left out."""
    catalog = catalog or Catalog([])
    requests = _requests([e.packet for evs in events.values() for e in evs if e.packet], probe)
    found = []
    for node, evs in events.items():
        for i, e in enumerate(evs):
            if is_ours(e.table) or e.kind == "return" or (e.kind == "policy" and e.verdict == "accept"):
                continue
            way = direction(e.packet, probe, requests)
            if way is None:
                continue
            service, endpoint = _mapping(e, catalog)
            if endpoint is None and MAP_DNAT.search(e.rule):
                endpoint = _translated(evs, i)
            rule = e.rule if e.kind == "rule" else f"policy {e.verdict}"
            found.append(Hit(node, e.table, e.chain, rule, e.verdict, way, service, endpoint, e.packet,
                             catalog.policy_of(e) if e.table == POLICY_TABLE else None))
    return found


def _mapping(e: Event, catalog: Catalog) -> tuple[str | None, str | None]:
    service = endpoint = None
    for chain in (e.chain, _target(e.verdict)):
        if chain in catalog.chains:
            name, ep = catalog.chains[chain]
            service, endpoint = service or name, endpoint or ep
    m = DNAT.search(e.rule)
    if m:
        endpoint = m.group(1)
    if service is None and e.chain in SHARED_CHAINS:
        nodeport = "nodeport" in e.chain.lower() or "nodeport" in e.rule or e.chain == "KUBE-EXTERNAL-SERVICES"
        found = catalog.by_packet(e.packet, nodeport)
        if found:
            service = found[0]
    return service, endpoint


# --- why a probe was not delivered -------------------------------------------------------------------

def _kube_proxy(hit: Hit) -> bool:
    return hit.table == "ip kube-proxy" or hit.chain.startswith("KUBE-")


def _stops(hit: Hit) -> bool:
    return hit.verdict in ("drop", "reject") or "reject" in hit.rule.split()


def reason_from_hits(found: list[Hit], catalog: Catalog | None = None) -> str | None:
    """What a rule that stopped the request says, in words."""
    catalog = catalog or Catalog([])
    stop = next((h for h in found if h.direction == "request" and _stops(h)), None)
    if stop is None:
        return None
    where, svc = f"on {stop.node}", stop.service
    rejected = "reject" in stop.rule.split() or stop.chain == "reject-chain"
    if _kube_proxy(stop) and rejected:
        what = f"Service {svc}" if svc else "the Service"
        return f"rejected: {what} has no endpoints (kube-proxy's reject rule {where})"
    if stop.chain.startswith(("firewall-", "KUBE-FW-")) or stop.chain == "KUBE-PROXY-FIREWALL":
        src = stop.packet.src if stop.packet else "the source"
        return (f"dropped: {src} is not in the loadBalancerSourceRanges of Service {svc or '?'} "
                f"(kube-proxy's firewall {where})")
    if "ct state invalid" in stop.rule or "ctstate INVALID" in stop.rule:
        return f"dropped: conntrack state INVALID ({stop.table} {stop.chain} {where})"
    if _kube_proxy(stop):
        found_sp = catalog.by_packet(stop.packet, True)
        sp = found_sp[1] if found_sp else None
        internal = sp is not None and stop.packet is not None and stop.packet.dst == sp.cluster_ip
        policy = "internalTrafficPolicy" if internal else "externalTrafficPolicy"
        what = f"Service {svc} has {policy} Local" if svc else f"{policy} Local"
        return f"dropped: {what} and no local endpoint {where}"
    if stop.table == POLICY_TABLE and policy_nft.direction_of(stop.chain):
        return f"dropped by {_policy_reason(stop, catalog)} ({where})"
    if stop.rule.startswith("policy "):
        return f"dropped by the policy of {stop.table} {stop.chain} {where}"
    return f"dropped by {stop.table} {stop.chain} {where}: {stop.rule}"


def _policy_reason(stop: Hit, catalog: Catalog) -> str:
    """Which direction of which pod dropped it, and the policies that isolate that pod, in model.py's words."""
    direction = policy_nft.direction_of(stop.chain) or model.INGRESS
    found, packet = catalog.policies, stop.packet
    if found is None or packet is None or packet.dport is None:
        return f"{direction.lower()} NetworkPolicies"
    pod_ip, peer_ip = (packet.dst, packet.src) if direction == model.INGRESS else (packet.src, packet.dst)
    pod, peer = found.pod_at(pod_ip), found.pod_at(peer_ip)
    if pod is None:
        return f"{direction.lower()} NetworkPolicies of {pod_ip}"
    protocol = packet.proto.upper()
    judged = model.judge(found, pod, direction, peer_ip, protocol, packet.dport, found.pod_at(packet.dst))
    return judged.text(pod.key, peer.key if peer else peer_ip, f"{protocol} {packet.dport}")


def reason_from_hops(hops: list[Hop]) -> str:
    """What the copies say when no rule stopped the probe: an ICMP error that came back, or where
    the request was last seen."""
    errors = [h for h in hops if h.direction == "reply" and "/" in h.what]
    if errors:
        e = errors[0]
        kind, _, code = e.what.partition("/")
        if kind == "time-exceeded":
            return f"TTL exceeded: {e.src} sent {e.what} (a routing loop?)"
        if code == "fragmentation-needed":
            return f"frag needed: {e.src} says the packet is larger than the path MTU ({e.what})"
        if code in ("network-unreachable", "host-unreachable"):
            return f"no route: {e.src} answered {e.what}"
        return f"unreachable: {e.src} answered {e.what}"
    requests = [h for h in hops if h.direction == "request"]
    if not requests:
        return "the probe was not seen leaving the source"
    last = requests[-1]
    return f"last seen in {names.short_netns(last.netns)} on {last.interface} ({last.io}); no ICMP error came back"


def reason(found: list[Hit], hops: list[Hop], catalog: Catalog | None = None) -> str:
    """Why a probe was not delivered: a rule that stopped it, else what the hops say."""
    return reason_from_hits(found, catalog) or reason_from_hops(hops)


# --- the I/O: tables, monitors ------------------------------------------------------------------

def proxy_backend(tables: str, legacy_save: str | None = None) -> str:
    """What holds kube-proxy's rules in a node, from `nft list tables` (and `iptables-legacy-save -t
    nat` when nf_tables has none): nftables | iptables-nft | iptables-legacy | none."""
    held = {tuple(line.split()[1:3]) for line in tables.splitlines() if line.startswith("table ")}
    if (FAMILY, "kube-proxy") in held:
        return "nftables"
    if (FAMILY, "nat") in held or (FAMILY, "filter") in held:
        return "iptables-nft"
    if legacy_save and "KUBE-SERVICES" in legacy_save:
        return "iptables-legacy"
    return "none"


def _nodes(places: list[Place]) -> str:
    return ", ".join(p.node for p in places)


class RuleTrace:
    """The temporary tables and monitors of one trace, from __enter__ to __exit__: enter before
    the probe is sent, leave after its capture ended; `output` then holds each node's monitor text."""

    def __init__(self, places: Iterable[Place], probe: Probe) -> None:
        self.places = [p for p in places if netns.exists(p.netns)]
        self.probe = probe
        self.table = table_name(probe)
        self.loaded: list[Place] = []
        self.monitors: dict[str, commands.Lines] = {}  # netns -> its `nft monitor`
        self.output: dict[str, str] = {}
        self.backends: dict[str, str] = {}
        self.notes: list[str] = []

    def __enter__(self) -> RuleTrace:
        try:
            self._start()
        except BaseException:
            self._finish(flush=False)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finish(flush=exc_info[0] is None)

    def _nft(self, argv: list[str], places: list[Place], stdin: str | None = None) -> dict[str, commands.Result]:
        return commands.run_all({p.netns: (p.netns, ["nft", *argv]) for p in places},
                                {p.netns: stdin for p in places} if stdin is not None else None)

    def _start(self) -> None:
        listed = self._nft(["list", "tables"], self.places)
        no_nft = [p for p in self.places if not listed[p.netns].ok]
        if no_nft:
            self.notes.append(f"rule hits not available on {_nodes(no_nft)}: nft does not run there")
        usable = [p for p in self.places if p not in no_nft]
        bare = [p for p in usable if proxy_backend(listed[p.netns].out) == "none"]
        saved = commands.run_all({p.netns: (p.netns, ["iptables-legacy-save", "-t", "nat"]) for p in bare})
        for p in usable:
            self.backends[p.node] = proxy_backend(listed[p.netns].out, saved[p.netns].out if p.netns in saved else None)
        legacy = [p for p in usable if self.backends[p.node] == "iptables-legacy"]
        if legacy:
            self.notes.append(f"rule hits not available on {_nodes(legacy)}: kube-proxy's rules there are "
                              "iptables-legacy (x_tables), which nftables tracing cannot see")
        usable = [p for p in usable if p not in legacy]  # nothing there for the monitor to show
        loaded = self._nft(["-f", "-"], usable, table_script(self.table, self.probe))
        for p in usable:
            if loaded[p.netns].ok:
                self.loaded.append(p)
            else:
                self.notes.append(f"rule hits not available on {p.node}: {loaded[p.netns].err.strip() or 'nft -f failed'}")
        for p in self.loaded:
            try:
                self.monitors[p.netns] = commands.Lines(p.netns, ["nft", "monitor"], f"nft-monitor:{p.node}")
            except OSError as err:
                self.notes.append(f"rule hits not available on {p.node}: nft monitor: {err}")
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Add marker chains until every monitor printed one: it subscribes only after reading the ruleset."""
        deadline = time.monotonic() + READY_SECONDS
        waiting = [p for p in self.loaded if p.netns in self.monitors]
        n = 0
        while waiting and time.monotonic() < deadline:
            n += 1
            self._nft(["add", "chain", FAMILY, self.table, f"ready{n}"], waiting)
            until = min(deadline, time.monotonic() + MARKER_INTERVAL)
            for p in waiting:
                self.monitors[p.netns].wait_for(f"add chain {FAMILY} {self.table} ready{n}", until)
            waiting = [p for p in waiting if not self.monitors[p.netns].printed(f"add chain {FAMILY} {self.table} ready")]
        if waiting:
            self.notes.append(f"rule hits may be incomplete on {_nodes(waiting)}: nft monitor was not listening in time")

    def _finish(self, flush: bool) -> None:
        """Delete the tables (always), let the monitors print up to that, stop them."""
        try:
            if self.loaded:
                deleted = self._nft(["delete", "table", FAMILY, self.table], self.loaded)
                failed = [p for p in self.loaded if not deleted[p.netns].ok and netns.exists(p.netns)]
                if failed:  # once more, so that nothing of ours stays behind
                    self._nft(["delete", "table", FAMILY, self.table], failed)
                if flush:
                    deadline = time.monotonic() + FLUSH_SECONDS
                    line = f"delete table {FAMILY} {self.table}"
                    for p in self.loaded:
                        if p.netns in self.monitors:
                            self.monitors[p.netns].wait_for(line, deadline)
        finally:
            node_of = {p.netns: p.node for p in self.places}
            for space, monitor in self.monitors.items():
                self.output[node_of[space]] = monitor.stop()
            self.monitors.clear()

    def events(self) -> dict[str, list[Event]]:
        """Each node's trace events (nodes in the order they were given)."""
        return {p.node: parse(self.output.get(p.node, "")) for p in self.places if p.node in self.output}
