"""`netplane trace` rule hits (netplane/trace/rules.py): parsing `nft monitor` output, mapping chains
to Services and endpoints, reasons; then real traces in a lab per proxy mode.

Test data: tests/data/trace_rules/<mode>/ holds real `nft monitor` output captured on node-1 and
node-2 of a default lab (kernel 6.18, nftables 1.0.6) during one trace each, with the probe
(probes.json) and the lab's Services and EndpointSlices (api.json) at that time. The lab had the
demo app plus: Service `empty` (no endpoints; 80/TCP http, 53/UDP dns), `solo` (NodePort,
externalTrafficPolicy Local, its one endpoint on node-1) and `guarded` (LoadBalancer 172.30.1.1,
loadBalancerSourceRanges 10.0.0.0/8). Scenarios: web (client -> svc/web, endpoint on node-2),
web-udp (svc/web:81), empty, empty-udp (svc/empty:53), icmp (echo to web-2), etp (underlay client
172.30.0.2 -> node-2's NodePort of solo), fw (underlay client -> guarded's load-balancer IP).

Kernel tests share one lab per module and proxy mode (named trr<hex>, brought down by the fixture
even when a test fails).
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import unique_lab
from labtools import cli, default_lab_file, eventually, get, pod_ip
from netplane import names
from netplane.agent.proxy import iptables as proxy_iptables, nftables as proxy_nftables
from netplane.agent.proxy.model import service_ports
from netplane.kernel import netns
from netplane.trace import probe as probelib, render, rules, tracer
from netplane.trace.hops import Hop

DATA = Path(__file__).parent / "data" / "trace_rules"
MODES = ("nftables", "iptables")


def load(mode: str, scenario: str) -> tuple[dict[str, list[rules.Event]], probelib.Probe, rules.Catalog, list]:
    probe = json.loads((DATA / mode / "probes.json").read_text())[scenario]
    probe = probelib.Probe(**{**probe, "tag": probe["tag"].encode()})
    api = json.loads((DATA / mode / "api.json").read_text())
    ports = service_ports(api["services"], api["slices"])
    events = {node: rules.parse((DATA / mode / f"{scenario}.{node}.txt").read_text()) for node in ("node-1", "node-2")}
    return events, probe, rules.Catalog(ports), ports


def hits_of(mode: str, scenario: str) -> list[rules.Hit]:
    events, probe, catalog, _ = load(mode, scenario)
    return rules.hits(events, probe, catalog)


def port(ports: list, name: str, port_name: str):
    return next(sp for sp in ports if (sp.service, sp.port_name) == (name, port_name))


# --- the temporary table --------------------------------------------------------------------------

def test_the_table_marks_only_the_probes_packets_in_two_early_hooks():
    p = probelib.Probe("tcp", "10.244.0.3", "10.96.0.2", 80, sport=40000, ip_id=4242, seq=123456, tag=b"x")
    name = rules.table_name(p)
    assert name.startswith("netplane-trace-10") and name != rules.table_name(p)  # unique per trace
    script = rules.table_script(name, p)
    assert script.startswith(f"table ip {name} {{")
    assert script.count("priority -400; policy accept;") == 2
    assert "hook prerouting" in script and "hook output" in script
    assert "ip id 4242 tcp sequence 123456 meta nftrace set 1" in script
    assert "tcp ackseq 123457" in script  # the reply: SYN-ACK or RST acknowledging our SYN
    assert "@th,96,16 4242 @th,136,8 6" in script  # ICMP errors quoting the probe
    udp = probelib.Probe("udp", "10.244.0.3", "10.96.0.2", 81, sport=40001, ip_id=7, seq=1, tag=b"t" * 27)
    assert "ip id 7 udp length 35" in rules.match_rules(udp)[0]
    assert rules.match_rules(udp)[1] == "ip daddr 10.244.0.3 udp dport 40001"
    icmp = probelib.Probe("icmp", "10.244.0.3", "10.244.1.2", None, sport=99, ip_id=8, seq=5, tag=b"t")
    assert rules.match_rules(icmp)[:2] == ["ip id 8 icmp type echo-request icmp id 99 icmp sequence 5",
                                           "icmp type echo-reply icmp id 99 icmp sequence 5"]


# --- parsing real monitor output -------------------------------------------------------------------

def test_monitor_lines_become_events_with_the_packet_their_chain_saw():
    events, probe, _, _ = load("nftables", "web")
    events = events["node-1"]
    dnat = next(e for e in events if "dnat to" in e.rule)
    assert (dnat.table, dnat.chain, dnat.kind) == ("ip kube-proxy", "service-SUSTUHLJ-default/web/tcp/http", "rule")
    assert dnat.rule == "meta l4proto tcp dnat to 10.244.1.3:8080" and dnat.verdict == "accept"
    assert (dnat.packet.src, dnat.packet.dst, dnat.packet.dport, dnat.packet.proto) == ("10.244.0.2", "10.96.0.2",
                                                                                          80, "tcp")
    assert dnat.packet.iif == "cni0" and dnat.packet.ip_id == probe.ip_id
    vmap = next(e for e in events if e.chain == "services")
    assert vmap.verdict == "goto service-SUSTUHLJ-default/web/tcp/http"
    # after the DNAT, the forward hook sees the endpoint as destination
    forward = next(e for e in events if e.chain == "filter-forward" and e.kind == "rule")
    assert (forward.packet.dst, forward.packet.dport, forward.packet.oif) == ("10.244.1.3", 8080, "flannel.1")
    assert any(e.kind == "policy" and e.verdict == "accept" for e in events)
    # other monitor lines (our markers, the table's deletion) are not events
    assert all(e.trace_id for e in events) and not any("ready1" in e.chain for e in events)


def test_iptables_nft_rules_lose_their_counters():
    events = rules.parse((DATA / "iptables" / "web.node-1.txt").read_text())
    svc = next(e for e in events if e.chain == "KUBE-SERVICES" and e.table == "ip nat")
    assert svc.rule == "meta l4proto tcp ip daddr 10.96.0.2 tcp dport 80 jump KUBE-SVC-CDGGSHYLG3RE2FKL"
    assert not any("counter" in e.rule for e in events)


def test_odd_lines_unknown_rules_and_named_ports():
    text = "\n".join([
        "add chain ip netplane-trace-1234abcd ready1",
        "# new generation 9 by process 1 (nft)",
        'trace id 0000abcd ip filter INPUT packet: iif "eth0" ip saddr 1.2.3.4 ip daddr 5.6.7.8 ip id 9 '
        "ip length 40 tcp sport 1000 tcp dport http tcp flags == syn",
        "trace id 0000abcd ip filter INPUT unknown rule handle 17 (verdict drop)",
        "trace id 0000abcd ip filter INPUT policy drop meta mark 0x00004000",
        "trace id 0000ffff ip filter INPUT rule accept (verdict accept)",  # no packet line seen for it
    ])
    events = rules.parse(text)
    assert [(e.kind, e.rule, e.verdict) for e in events] == [
        ("rule", "handle 17", "drop"), ("policy", "", "drop"), ("rule", "accept", "accept")]
    assert events[0].packet.dport == 80 and events[2].packet is None


# --- hits, mapped to Services and endpoints ---------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_service_trace_maps_chains_to_the_service_and_the_dnat_to_the_endpoint(mode):
    found = hits_of(mode, "web")
    node1 = [h for h in found if h.node == "node-1" and h.direction == "request"]
    mapped = [h for h in node1 if h.service == "default/web:http"]
    assert mapped, found
    [dnat] = [h for h in node1 if "dnat to" in h.rule]
    assert dnat.service == "default/web:http" and dnat.verdict == "accept"
    endpoint = {"nftables": "10.244.1.3:8080", "iptables": "10.244.1.2:8080"}[mode]
    assert dnat.endpoint == endpoint
    # the endpoint is on node-2: its netfilter saw the request too, and nothing there is a Service's
    assert any(h.node == "node-2" and h.direction == "request" for h in found)
    assert not any(rules.is_ours(h.table) for h in found)
    assert not any(h.rule == "policy accept" for h in found)


def test_a_dnat_drawn_from_a_map_names_the_endpoint_the_packet_went_to():
    """The flat layout's DNAT names no address: the endpoint is the destination the same packet (by
    source and IP ID; its trace id changes on the way to the overlay) shows next."""
    text = (DATA / "nftables" / "web.node-1.txt").read_text()
    flat = text.replace(
        "services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto service-SUSTUHLJ-default/web/tcp/http)",
        "services rule ip daddr . meta l4proto . th dport @flat-ips goto flat-services (verdict goto flat-services)",
    ).replace(
        "service-SUSTUHLJ-default/web/tcp/http rule meta l4proto tcp dnat to 10.244.1.3:8080 (verdict accept)",
        "flat-services rule meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . "
        "numgen random mod 2 map @endpoints-2 (verdict accept)")
    assert "dnat to" not in flat
    _, probe, catalog, _ = load("nftables", "web")
    [dnat] = [h for h in rules.hits({"node-1": rules.parse(flat)}, probe, catalog) if "dnat ip to" in h.rule]
    assert (dnat.chain, dnat.service, dnat.endpoint) == ("flat-services", "default/web:http", "10.244.1.3:8080")


def test_nftables_service_chain_is_named_by_the_proxy():
    _, _, _, ports = load("nftables", "web")
    sp = port(ports, "web", "http")
    [hit] = [h for h in hits_of("nftables", "web") if h.chain.startswith("service-")]
    assert hit.chain == proxy_nftables.service_chain(sp) == "service-SUSTUHLJ-default/web/tcp/http"


def test_iptables_svc_and_sep_chains_are_mapped_with_the_proxys_hashes():
    _, _, _, ports = load("iptables", "web")
    sp = port(ports, "web", "http")
    found = hits_of("iptables", "web")
    [svc] = [h for h in found if h.chain.startswith("KUBE-SVC-")]
    assert svc.chain == proxy_iptables.service_chain(sp)
    assert (svc.service, svc.endpoint) == ("default/web:http", "10.244.1.2:8080")  # it jumps to that KUBE-SEP
    [sep] = [h for h in found if h.chain.startswith("KUBE-SEP-")]
    ep = next(e for e in sp.endpoints if e.ip == "10.244.1.2")
    assert sep.chain == proxy_iptables.endpoint_chain(sp, ep)
    assert (sep.service, sep.endpoint) == ("default/web:http", "10.244.1.2:8080")
    # the reply crosses both nodes' FORWARD: conntrack's established rule lets it through
    replies = [(h.node, h.chain, h.verdict) for h in found if h.direction == "reply"]
    assert ("node-2", "KUBE-FORWARD", "accept") in replies and ("node-1", "KUBE-FORWARD", "accept") in replies


@pytest.mark.parametrize("mode", MODES)
def test_udp_and_icmp_replies_are_recognised(mode):
    udp = hits_of(mode, "web-udp")
    assert any(h.service == "default/web:udp" and h.endpoint and h.endpoint.endswith(":8081") for h in udp)
    icmp = hits_of(mode, "icmp")
    assert {h.direction for h in icmp} >= {"request"}
    if mode == "iptables":  # the nftables table has no rule an established reply matches
        assert {h.direction for h in udp} == {"request", "reply"}
        assert {h.direction for h in icmp} == {"request", "reply"}


def test_another_probes_lines_do_not_count():
    events, probe, catalog, _ = load("nftables", "web")
    other = probelib.Probe(probe.proto, probe.src, probe.dst, probe.dport, probe.sport + 1, probe.ip_id ^ 1,
                           probe.seq, probe.tag)
    assert rules.hits(events, other, catalog) == []


def test_without_services_hits_are_listed_unmapped_but_dnat_still_names_its_endpoint():
    events, probe, _, _ = load("iptables", "web")
    found = rules.hits(events, probe)
    assert found and all(h.service is None for h in found)
    assert [h.endpoint for h in found if "dnat to" in h.rule] == ["10.244.1.2:8080"]


# --- reasons -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario,name", [("empty", "default/empty:http"), ("empty-udp", "default/empty:dns")])
def test_no_endpoints_is_a_rejection_by_kube_proxy(mode, scenario, name):
    events, probe, catalog, _ = load(mode, scenario)
    found = rules.hits(events, probe, catalog)
    assert rules.reason_from_hits(found, catalog) == (
        f"rejected: Service {name} has no endpoints (kube-proxy's reject rule on node-1)")
    [stop] = [h for h in found if h.verdict == "drop"]
    assert stop.service == name and "reject" in stop.rule.split()


@pytest.mark.parametrize("mode", MODES)
def test_external_traffic_policy_local_without_a_local_endpoint_drops(mode):
    events, probe, catalog, _ = load(mode, "etp")
    found = rules.hits(events, probe, catalog)
    assert rules.reason_from_hits(found, catalog) == (
        "dropped: Service default/solo:http has externalTrafficPolicy Local and no local endpoint on node-2")
    assert all(h.node == "node-2" for h in found)


@pytest.mark.parametrize("mode", MODES)
def test_load_balancer_source_ranges_drop(mode):
    events, probe, catalog, _ = load(mode, "fw")
    found = rules.hits(events, probe, catalog)
    assert rules.reason_from_hits(found, catalog) == (
        "dropped: 172.30.0.2 is not in the loadBalancerSourceRanges of Service default/guarded:http "
        "(kube-proxy's firewall on node-1)")


@pytest.mark.parametrize("mode", MODES)
def test_a_delivered_probe_has_no_stopping_rule(mode):
    events, probe, catalog, _ = load(mode, "web")
    assert rules.reason_from_hits(rules.hits(events, probe, catalog), catalog) is None


def hop(direction: str, what: str, src: str = "10.244.0.3", netns_name: str = "np.l.node-1", interface="cni0",
        io="in") -> Hop:
    return Hop(1, 0, "node-1", netns_name, interface, io, direction, src, "10.244.1.2", None, None, None, what)


def test_reasons_from_the_hops_when_no_rule_stopped_the_probe():
    sent = hop("request", "SYN")
    assert rules.reason([], [sent, hop("reply", "time-exceeded/ttl-zero-during-transit", "172.30.0.11")]) == (
        "TTL exceeded: 172.30.0.11 sent time-exceeded/ttl-zero-during-transit (a routing loop?)")
    assert rules.reason([], [sent, hop("reply", "dest-unreach/fragmentation-needed", "10.244.0.1")]).startswith(
        "frag needed: 10.244.0.1")
    assert rules.reason([], [sent, hop("reply", "dest-unreach/host-unreachable", "10.244.0.1")]) == (
        "no route: 10.244.0.1 answered dest-unreach/host-unreachable")
    assert rules.reason([], [sent, hop("request", "SYN", interface="flannel.1", io="out")]) == (
        "last seen in node-1 on flannel.1 (out); no ICMP error came back")
    assert rules.reason([], []) == "the probe was not seen leaving the source"


def test_the_backend_of_a_node_from_its_tables():
    assert rules.proxy_backend("table ip kube-proxy\ntable ip netplane-trace-1\n") == "nftables"
    assert rules.proxy_backend("table ip nat\ntable ip filter\n") == "iptables-nft"
    assert rules.proxy_backend("", "*nat\n:KUBE-SERVICES - [0:0]\n") == "iptables-legacy"
    assert rules.proxy_backend("") == "none"


# --- rendering -----------------------------------------------------------------------------------

def rejected_report() -> render.Report:
    found = hits_of("nftables", "empty")
    reason = rules.reason_from_hits(found)
    return render.Report("default/client -> svc/empty", False, True, [], [], rules=found, reason=reason,
                         notes=["a note"])


def test_json_rules_and_reason_fields():
    data = json.loads(json.dumps(render.to_json(rejected_report())))
    assert {"rules", "reason", "notes"} <= set(data)
    assert data["reason"].startswith("rejected: Service default/empty:http has no endpoints")
    assert data["notes"] == ["a note"]
    assert all(set(r) == {"node", "table", "chain", "rule", "verdict", "service", "endpoint", "policy", "direction"}
               for r in data["rules"])
    assert data["rules"][-1] == {"node": "node-1", "table": "ip kube-proxy", "chain": "reject-chain", "rule": "reject",
                                 "verdict": "drop", "service": "default/empty:http", "endpoint": None,
                                 "policy": None, "direction": "request"}
    assert render.to_json(render.Report("t", True, True))["reason"] is None


def test_the_table_has_a_rules_section_per_node_and_the_reason():
    lines = render.table(rejected_report()).splitlines()
    start = lines.index("rules on node-1:")
    assert lines[start + 1].split() == ["DIRECTION", "TABLE", "CHAIN", "RULE", "VERDICT", "SERVICE"]
    assert any("reject-chain" in line and "default/empty:http" in line for line in lines[start:])
    assert "reason: rejected: Service default/empty:http has no endpoints (kube-proxy's reject rule on node-1)" in lines
    assert lines[-1] == "note: a note"
    web = render.table(render.Report("t", True, True, rules=hits_of("iptables", "web")))
    assert "default/web:http -> 10.244.1.2:8080" in web and "rules on node-2:" in web


# --- real traces in a lab, per proxy mode ---------------------------------------------------------------

EMPTY_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
                 "spec": {"selector": {"app": "nothing"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def web_endpoints_ready(lab_name: str) -> bool:
    slices = get(lab_name, "endpointslices")["items"]
    return sum(ep.get("conditions", {}).get("ready", True) for s in slices
               if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "web"
               for ep in s.get("endpoints") or []) == 2


def bring_up(path: str, name: str):
    from netplane.lab import lifecycle, model
    try:
        lifecycle.up(model.load(path, name), lambda line: None)
        # the trace resolves svc/web's endpoints from its slices: wait until they caught up with the pods
        eventually(lambda: web_endpoints_ready(name))
        yield name
    finally:
        if lifecycle.is_up(name):
            lifecycle.down(name)


@pytest.fixture(scope="module", params=MODES)
def lab(request, tmp_path_factory):
    yield from bring_up(default_lab_file(tmp_path_factory.mktemp(request.param), request.param,
                                         extra=(EMPTY_SERVICE,)), unique_lab("trr"))


def trace_in(lab_name: str, dest: str, **kwargs) -> tuple[render.Report, float]:
    from netplane.api.client import Client
    from netplane.lab.state import LabState
    from netplane.trace import resolve
    state = LabState(lab_name)

    async def target():
        async with Client(*state.connection()) as client:
            return await resolve.Resolver(client, state.load_lab()).target("client", dest, "default", None, None)

    t = asyncio.run(target())
    start = time.monotonic()
    report = tracer.run(t, **kwargs)
    return report, time.monotonic() - start


NODES = ("node-1", "node-2")


def rulesets(lab_name: str) -> dict[str, str]:
    """`nft list ruleset` of every node, counters left out (the probe itself counts in iptables-nft's)."""
    found = {}
    for node in NODES:
        out = subprocess.run(netns.command(names.node_netns(lab_name, node), ["nft", "list", "ruleset"]),
                             capture_output=True, text=True, check=True).stdout
        found[node] = re.sub(r"counter packets \d+ bytes \d+", "counter", out)
    return found


def monitors(lab_name: str) -> list[int]:
    """nft monitor processes left in the lab's nodes."""
    left = []
    for pid in netns.pids_in([names.node_netns(lab_name, n) for n in NODES]):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"nft", b"monitor"]:
                left.append(pid)
        except FileNotFoundError:
            continue
    return left


def test_service_trace_shows_the_service_chain_and_the_dnat_to_the_endpoint_reached(lab):
    """web's ports are flat in nftables mode (the DNAT draws from a map in flat-services: the endpoint
    is where the packet went next) and chained in iptables mode (KUBE-SVC-, KUBE-SEP-)."""
    report, took = trace_in(lab, "svc/web")
    assert report.delivered and report.reason is None and took < 3
    web = {pod_ip(lab, "web-1"), pod_ip(lab, "web-2")}
    node1 = [h for h in report.rules if h.node == "node-1" and h.direction == "request"]
    assert any(h.service == "default/web:http" and (h.chain == "flat-services" or h.chain.startswith("KUBE-SVC-"))
               for h in node1), node1
    [dnat] = [h for h in node1 if "dnat to" in h.rule or "dnat ip to" in h.rule]
    assert dnat.service == "default/web:http" and dnat.endpoint.endswith(":8080")
    assert dnat.endpoint.split(":")[0] in web
    reached = next(h.dst for h in report.hops if h.direction == "request" and h.netns == report.delivered_to)
    assert dnat.endpoint == f"{reached}:8080"  # the rule's endpoint is the pod the probe got to
    assert [n.to for n in report.nat if n.type == "DNAT"] == [dnat.endpoint]


def test_a_service_without_endpoints_is_rejected_on_node_1(lab):
    report, took = trace_in(lab, "svc/empty")
    assert not report.delivered and took < 3
    assert report.reason == "rejected: Service default/empty:http has no endpoints (kube-proxy's reject rule on node-1)"
    assert any(h.node == "node-1" and h.service == "default/empty:http" and h.verdict == "drop" for h in report.rules)
    assert report.replied  # kube-proxy's reject answers with an ICMP error


def test_the_cli_json_carries_rules_and_reason_and_exits_1(lab):
    run = cli(lab, "trace", "client", "svc/empty", "-o", "json", timeout=30)
    assert run.returncode == 1, run.stderr
    data = json.loads(run.stdout)
    assert data["delivered"] is False and data["reason"].startswith("rejected: Service default/empty:http")
    assert data["rules"] and all(r["direction"] in ("request", "reply") for r in data["rules"])


def test_a_trace_leaves_every_nodes_ruleset_as_it_was(lab):
    before = rulesets(lab)
    for dest in ("svc/web", "svc/empty", "web-2"):
        trace_in(lab, dest)
        assert rulesets(lab) == before, dest
    assert not any("netplane-trace" in text for text in before.values())
    assert monitors(lab) == []


def test_a_trace_that_fails_midway_still_removes_its_tables(lab, monkeypatch):
    before = rulesets(lab)
    seen = {}

    def broken(target, probe, seconds):
        seen["during"] = rulesets(lab)
        seen["monitors"] = monitors(lab)
        raise RuntimeError("capture failed")

    monkeypatch.setattr(tracer, "collect", broken)
    with pytest.raises(RuntimeError, match="capture failed"):
        trace_in(lab, "svc/web")
    assert all("netplane-trace-" in text for text in seen["during"].values())  # the tables were there...
    assert len(seen["monitors"]) == len(NODES)
    assert rulesets(lab) == before and monitors(lab) == []  # ...and are gone


def test_without_rule_hits_nothing_is_loaded(lab, monkeypatch):
    def no_table(*args, **kwargs):
        raise AssertionError("rule_hits=False must not touch netfilter")

    monkeypatch.setattr(rules.RuleTrace, "__enter__", no_table)
    report, _ = trace_in(lab, "svc/web", rule_hits=False)
    assert report.delivered and report.rules == []


@pytest.fixture(scope="module")
def legacy_lab(tmp_path_factory):
    yield from bring_up(default_lab_file(tmp_path_factory.mktemp("legacy"), "iptables", "legacy",
                                         extra=(EMPTY_SERVICE,)), unique_lab("trl"))


def test_with_iptables_legacy_rule_hits_are_not_available_and_the_trace_says_so(legacy_lab):
    before = rulesets(legacy_lab)
    report, took = trace_in(legacy_lab, "svc/web")
    assert report.delivered and report.rules == [] and took < 3, render.table(report)
    assert any("iptables-legacy" in n and "node-1" in n for n in report.notes), report.notes
    assert render.table(report).splitlines()[-1].startswith("note: rule hits not available on node-1, node-2")
    assert rulesets(legacy_lab) == before
