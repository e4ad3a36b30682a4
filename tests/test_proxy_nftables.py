"""kube-proxy's semantics (model.py) and its nftables ruleset: built as typed objects, checked on
the strict fake (rules as nft writes them, a golden dump, operation counts, packets walked through
the table) without root, and by the real kernel, which must hold what the fake holds.

The Services (web, empty, headless, FEATURES) are tests/support/services.py's.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import json
import subprocess
import time
from pathlib import Path

import pytest

from labtools import eventually_async, nft_table
from support.api import serving
from support.flows import FLOW_SERVICES, FLOW_SLICES, FLOWS, NODE, NODE_IPS, PLAIN, PLAIN_SLICE, flow_id
from support.services import CIDR, EMPTY, FEATURES, HEADLESS, SLICE, WEB, another, endpoint, ports, with_spec
from netplane.agent.proxy import model, nftables
from netplane.agent.proxy.modes import NftablesMode
from netplane.agent.ruleset import FragmentCache, diff
from netplane.api.informer import Informers
from netplane.kernel import nft
from netplane.kernel.nftfake import Fake, Outcome, Packet
from netplane.kernel.nftobjects import DROP, Element, Rule, goto

def faked(*services, slices=(SLICE,), node="node-1") -> Fake:
    """The table the proxy of `node` writes for these Services, on the strict fake."""
    fake = Fake()
    asyncio.run(NftablesMode(None, node, CIDR, kernel=fake).sync(ports(*services, slices=slices), True))
    return fake


def texts(rules) -> list[str]:
    """Rules (or rule bodies) as nft writes them."""
    return [r.text() if isinstance(r, Rule) else Rule("", r).text() for r in rules]


def chain(fake: Fake, name: str) -> list[str]:
    return texts(fake.chains()[name])


def elements(fake: Fake, name: str) -> dict[str, str]:
    """A map's (or set's) elements as nft writes them: key -> verdict or data ("" in a set)."""
    return {" . ".join(k): Element(name, k, v).text().removeprefix(" . ".join(k)).removeprefix(" : ")
            for k, v in fake.elements(name).items()}


def test_service_ports_carry_upstream_names_and_ready_endpoints():
    http = ports(WEB)[0]
    assert http.id == "default/web/tcp/http"
    assert nftables.service_chain(http).endswith("-default/web/tcp/http")
    assert nftables.affinity_set(http, http.endpoints[0]).endswith("-default/web/tcp/http__10.244.1.2/8080")
    assert [(e.ip, e.port) for e in http.internal_endpoints("node-1")] == [("10.244.1.2", 8080), ("10.244.2.2", 8080)]
    assert [p.id for p in ports(WEB, EMPTY, HEADLESS)] == ["default/empty/tcp/80", "default/web/tcp/http",
                                                          "default/web/udp/udp"]


def test_terminating_endpoints_are_used_only_when_no_endpoint_is_ready():
    going = {**SLICE, "endpoints": [endpoint("10.244.1.2", "node-1", ready=False, serving=True, terminating=True),
                                    endpoint("10.244.2.2", "node-2", ready=False, serving=False, terminating=True)]}
    assert [e.ip for e in ports(WEB, slices=[going])[0].internal_endpoints("node-1")] == ["10.244.1.2"]
    mixed = {**going, "endpoints": going["endpoints"] + [endpoint("10.244.2.3", "node-2")]}
    assert [e.ip for e in ports(WEB, slices=[mixed])[0].internal_endpoints("node-1")] == ["10.244.2.3"]


def test_traffic_policies_pick_this_nodes_endpoints():
    local = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local", internalTrafficPolicy="Local",
                      ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(local)[0]
    assert [e.ip for e in sp.external_endpoints("node-1")] == ["10.244.1.2"]
    assert [e.ip for e in sp.internal_endpoints("node-2")] == ["10.244.2.2"]
    assert sp.external_endpoints("node-3") == [] and sp.internal_endpoints("node-3") == []
    # upstream's UsesClusterEndpoints: a NodePort needs the Cluster policy for the short-circuit
    assert [e.ip for e in sp.cluster_policy_endpoints()] == ["10.244.1.2", "10.244.2.2"]
    assert [e.ip for e in sp.reachable_endpoints("node-3")] == ["10.244.1.2", "10.244.2.2"]
    only_internal = ports(with_spec(WEB, internalTrafficPolicy="Local"))[0]
    assert only_internal.cluster_policy_endpoints() == []  # a ClusterIP alone never uses it
    assert [e.ip for e in only_internal.reachable_endpoints("node-1")] == ["10.244.1.2"]


def test_clusterip_rules_are_elements_of_the_flat_maps():
    """A ClusterIP whose endpoint does not depend on the client has no chain: its key in flat-ips
    (whose chain draws the endpoint) and cluster-ips (whose clients off the cluster are masqueraded),
    and its endpoints in the data map of their number, draw i to the i-th."""
    fake = faked(WEB, EMPTY, HEADLESS)
    assert elements(fake, "flat-ips") == elements(fake, "cluster-ips") == {"10.96.0.10 . tcp . 80": "",
                                                                           "10.96.0.10 . udp . 81": ""}
    assert elements(fake, nftables.endpoints_map(2)) == {
        "10.96.0.10 . tcp . 80 . 0": "10.244.1.2 . 8080", "10.96.0.10 . tcp . 80 . 1": "10.244.2.2 . 8080",
        "10.96.0.10 . udp . 81 . 0": "10.244.1.2 . 8081", "10.96.0.10 . udp . 81 . 1": "10.244.2.2 . 8081"}
    assert elements(fake, "service-ips") == {}
    assert elements(fake, "no-endpoint-services") == {"10.96.0.11 . tcp . 80": "goto reject-chain"}
    assert chain(fake, "flat-services")[:3] == [
        f"ip saddr != {CIDR} ip daddr . meta l4proto . th dport @cluster-ips jump mark-for-masquerade",
        "ip daddr . meta l4proto . th dport @external-ips jump mark-for-masquerade",
        "meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 "
        "map @endpoints-1"]
    assert not any("default/" in name for name in fake.chains())  # no chain of a Service port
    dump = fake.dump()
    assert "headless" not in dump and "10.244.2.9" not in dump
    assert dump.startswith('add table ip kube-proxy { comment "rules for kube-proxy"; }')


def test_a_port_gets_chains_of_its_own_only_where_the_endpoint_depends_on_the_client():
    nodeport = with_spec(WEB, type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    assert nftables.flat(ports(nodeport)[0], "node-1")  # externalTrafficPolicy Cluster: masquerade, any endpoint
    sticky = with_spec(WEB, sessionAffinity="ClientIP")
    local = with_spec(nodeport, externalTrafficPolicy="Local")
    many = {**SLICE, "endpoints": [endpoint(f"10.244.1.{i}", "node-1") for i in range(2, 19)]}
    for svc, slices in ((sticky, (SLICE,)), (local, (SLICE,)), (FEATURES, (SLICE,)), (WEB, (many,))):
        sp = ports(svc, slices=slices)[0]
        assert not nftables.flat(sp, "node-1") and nftables.service_chain(sp) in faked(svc, slices=slices).chains()


def test_the_random_cascade_gives_each_endpoint_an_equal_share():
    """In a chain of its own: numgen mod 3 == 0, then mod 2 == 0, then the rest: 1/3 each, like
    iptables' statistic cascade (flat: one draw of mod 3, each endpoint one of the three values)."""
    three = {**SLICE, "endpoints": [endpoint(f"10.244.1.{i}", "node-1") for i in (2, 3, 4)]}
    local = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local",
                      ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(local, slices=[three])[0]
    rules = texts(nftables.fragment(sp, "node-1", CIDR).chains[nftables.service_chain(sp)])
    assert rules[1:] == ["numgen random mod 3 == 0 meta l4proto tcp dnat to 10.244.1.2:8080",
                         "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.3:8080",
                         "meta l4proto tcp dnat to 10.244.1.4:8080"]


def test_hairpin_pairs_are_the_endpoints_the_node_may_dnat_to_and_stay_while_a_service_uses_them():
    """Upstream masquerades `saddr == endpoint` in every endpoint chain, remote ones too: a pod sent
    back to itself by another node (through that node's NodePort) must not see its own address."""
    other = another(WEB, "other", "10.96.0.20")
    other_slice = {**SLICE, "metadata": {**SLICE["metadata"], "name": "other-1",
                                         "labels": {"kubernetes.io/service-name": "other"}}}
    cache = FragmentCache(lambda sp: nftables.fragment(sp, "node-1", CIDR), nftables.HELD_BY_SEVERAL)
    both = cache.fragments(ports(WEB, other, slices=(SLICE, other_slice)))
    assert set(both["default/web/tcp/http"].entries["hairpin-endpoints"]) == {
        ("10.244.1.2", "10.244.1.2"), ("10.244.2.2", "10.244.2.2")}
    only_other = cache.fragments(ports(other, slices=(other_slice,)))
    going = diff(both, only_other, cache)
    assert "hairpin-endpoints" not in going.delete_entries  # other still sends there
    assert ("10.96.0.10", "tcp", "80") in going.delete_entries["flat-ips"]  # web's own entries go
    assert "hairpin-endpoints" not in diff(both, only_other).delete_entries  # the same, counted without the cache
    assert ("10.244.1.2", "10.244.1.2") in diff(only_other, {}).delete_entries["hairpin-endpoints"]


def test_nodeports_external_and_load_balancer_ips_go_through_the_external_chain():
    svc = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"],
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                    loadBalancerSourceRanges=["172.30.0.0/28"])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    sp = ports(svc)[0]
    fake = faked(svc)
    ext = nftables.external_chain(sp)
    assert elements(fake, "service-nodeports") == {"tcp . 30080": f"goto {ext}"}
    assert elements(fake, "service-ips") == {"10.96.0.10 . tcp . 80": f"goto {nftables.service_chain(sp)}",
                                             "172.30.0.100 . tcp . 80": f"goto {ext}",
                                             "172.30.0.200 . tcp . 80": f"goto {ext}"}
    # externalTrafficPolicy Cluster: the source is lost, any endpoint serves
    assert chain(fake, ext) == ["jump mark-for-masquerade", f"goto {nftables.service_chain(sp)}"]
    assert elements(fake, "firewall-ips") == {"172.30.0.200 . tcp . 80": f"goto {nftables.firewall_chain(sp)}"}
    assert chain(fake, nftables.firewall_chain(sp)) == ["ip saddr != { 172.30.0.0/28 } drop"]


def test_external_traffic_policy_local_keeps_the_source_and_drops_without_a_local_endpoint():
    svc = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local",
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    ext, cluster, local = nftables.external_chain(sp), nftables.service_chain(sp), nftables.local_chain(sp)
    fake = faked(svc, node="node-1")
    assert chain(fake, ext) == [f"ip saddr {CIDR} goto {cluster}",  # short-circuit pod traffic
                                "fib saddr type local jump mark-for-masquerade",  # masquerade local traffic
                                f"fib saddr type local goto {cluster}",  # short-circuit local traffic
                                f"goto {local}"]
    assert chain(fake, local) == ["meta l4proto tcp dnat to 10.244.1.2:8080"]
    # a node without a local endpoint: the NodePort still leads to the external chain (for its pods
    # and itself), and what that chain leaves untranslated meets the drop after DNAT
    elsewhere = faked(svc, node="node-3")
    assert elements(elsewhere, "service-nodeports") == {"tcp . 30080": f"goto {ext}"}
    assert elements(elsewhere, "no-endpoint-nodeports") == {"tcp . 30080": "drop"}
    assert local not in elsewhere.chains() and f"goto {local}" not in chain(elsewhere, ext)


def test_both_policies_local_short_circuit_to_every_endpoint():
    """internalTrafficPolicy and externalTrafficPolicy Local together: ClusterIP traffic uses this
    node's endpoints, while pods and the node reach a NodePort's endpoints anywhere (upstream sends
    the short-circuit to the Cluster policy's chain, not to the internal one)."""
    svc = with_spec(WEB, type="LoadBalancer", externalTrafficPolicy="Local", internalTrafficPolicy="Local",
                    externalIPs=["172.30.2.1"], ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    fragment = nftables.fragment(sp, "node-3", CIDR)
    assert fragment.entries["no-endpoint-services"] == {("10.96.0.10", "tcp", "80"): DROP, ("172.30.2.1", "tcp", "80"): DROP}
    assert fragment.entries["service-ips"] == {("172.30.2.1", "tcp", "80"): goto(nftables.external_chain(sp))}
    assert texts(fragment.chains[nftables.service_chain(sp)]) == [
        "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.2:8080", "meta l4proto tcp dnat to 10.244.2.2:8080"]
    assert nftables.local_chain(sp) not in fragment.chains
    on_node_1 = nftables.fragment(sp, "node-1", CIDR)
    assert on_node_1.entries["service-ips"][("10.96.0.10", "tcp", "80")] == goto(nftables.local_chain(sp))
    assert texts(on_node_1.chains[nftables.local_chain(sp)])[0].startswith("ip daddr 10.96.0.10 tcp dport 80 ip saddr != ")


def test_session_affinity_remembers_the_client_per_endpoint():
    svc = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sp = ports(svc)[0]
    fake = faked(svc)
    first = sp.endpoints[0]
    dump = fake.dump().splitlines()
    assert (f"add set ip kube-proxy {nftables.affinity_set(sp, first)} "
            "{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }") in dump
    remember = f"update @{nftables.affinity_set(sp, first)} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.2:8080"
    rules = chain(fake, nftables.service_chain(sp))
    assert f"ip saddr @{nftables.affinity_set(sp, first)} {remember}" in rules
    assert f"numgen random mod 2 == 0 {remember}" in rules


GOLDEN = Path(__file__).parent / "data" / "proxy-nftables.golden"


def test_the_table_of_every_feature_matches_its_golden_dump():
    """What node-1 holds for FEATURES (NodePorts, external and load-balancer IPs, source ranges,
    externalTrafficPolicy Local, session affinity, TCP and UDP: chains of its own), PLAIN (a NodePort
    and an external IP with the Cluster policy: flat), a Service without endpoints and a headless
    one. After an intended change of the rules, rewrite the file from fake.dump() and read the
    difference before committing it."""
    assert faked(FEATURES, PLAIN, EMPTY, HEADLESS, slices=(SLICE, PLAIN_SLICE)).dump() == GOLDEN.read_text()


@functools.cache
def flow_table(node: str) -> Fake:
    return faked(*FLOW_SERVICES, slices=FLOW_SLICES, node=node)


@pytest.mark.parametrize("node,source,destination,protocol,port,outcomes", FLOWS,
                         ids=[flow_id(f) for f in FLOWS])
def test_packets_meet_the_verdict_and_nat_upstream_gives_them(node, source, destination, protocol, port, outcomes):
    """Each flow's first packet walked through node's table (every branch of the random choice)."""
    local = source == NODE
    packet = Packet(NODE_IPS[node] if local else source, destination, protocol, port, local_origin=local)
    found = flow_table(node).walk(packet, local=frozenset({NODE_IPS[node], f"10.244.{node[-1]}.1"}))
    assert all(isinstance(o, Outcome) for o in found) and len(found) == len(outcomes)
    assert {(o.verdict, o.dnat, o.masquerade) for o in found} == outcomes


MORE = {**SLICE, "endpoints": SLICE["endpoints"] + [endpoint("10.244.1.7", "node-1")]}
STICKY = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
STICKIER = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 90}})
FILLED = {**SLICE, "metadata": {**SLICE["metadata"], "name": "empty-1", "labels": {"kubernetes.io/service-name": "empty"}},
          "ports": [{"protocol": "TCP", "port": 8080}]}
STEPS = [((WEB, EMPTY), (MORE,)), ((WEB, EMPTY), (SLICE,)), ((STICKY, EMPTY), (SLICE,)),
         ((STICKIER, EMPTY), (SLICE,)), ((WEB, EMPTY), (SLICE,)), ((FEATURES, EMPTY), (SLICE,)),
         ((WEB, EMPTY), (SLICE, FILLED)), ((WEB,), (SLICE,)), ((EMPTY,), ())]


def sync(mode: NftablesMode, full: bool, *services, slices=(SLICE,)) -> bool:
    return asyncio.run(mode.sync(ports(*services, slices=slices), full))


FRESH = itertools.count()


def fresh(make_netns, *services, slices=(SLICE,)) -> dict:
    """The table a node that never had one gets for these Services."""
    space = make_netns(f"fresh{next(FRESH)}")
    sync(NftablesMode(space, "node-1", CIDR), False, *services, slices=slices)
    return nft_table(space)


def test_nft_loads_every_feature_and_a_full_resync_changes_nothing(make_netns):
    space = make_netns("proxy")
    mode = NftablesMode(space, "node-1", CIDR)
    script = nftables.render(ports(FEATURES, EMPTY, HEADLESS), "node-1", CIDR).text()
    check = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "--check", "-f", "-"],
                           input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)
    loaded = nft_table(space)
    assert "10.96.0.10 . tcp . 80 : goto service-" in asyncio.run(nft.list_ruleset(space))
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)  # a periodic full resync of an existing table
    assert nft_table(space) == loaded
    assert not sync(mode, False, FEATURES, EMPTY, HEADLESS)  # nothing changed: nothing sent
    # the kernel holds what the fake holds: the fake's dump, loaded as it is, gives the same table
    copied = make_netns("proxy-copy")
    asyncio.run(nft.apply(copied, faked(FEATURES, EMPTY, HEADLESS).dump()))
    assert nft_table(copied) == loaded


def test_incremental_syncs_end_where_a_fresh_load_starts(make_netns):
    """Each step sends only the changes; after each, the kernel's table equals a fresh full load."""
    space = make_netns("incr")
    mode = NftablesMode(space, "node-1", CIDR)
    sync(mode, True, WEB, EMPTY)
    for services, slices in STEPS:
        assert sync(mode, False, *services, slices=slices)
        assert nft_table(space) == fresh(make_netns, *services, slices=slices), (services, slices)


def numbered(i: int) -> tuple[dict, dict]:
    """Service svc-<i> on 10.96.1.<i>:80 with its own three endpoints 10.244.<i>.2-4 on node-1."""
    svc = another(with_spec(WEB, ports=[{"name": "http", "port": 80, "protocol": "TCP"}]), f"svc-{i}", f"10.96.1.{i}")
    eps = {**SLICE, "metadata": {"name": f"svc-{i}-1", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
           "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
           "endpoints": [endpoint(f"10.244.{i}.{j}", "node-1") for j in (2, 3, 4)]}
    return svc, eps


def test_one_changed_service_touches_only_its_own_objects():
    """Of 20 Services, one loses an endpoint: the sync moves that Service's endpoints from the map of
    three to the map of two and deletes the gone endpoint's hairpin pair, and nothing else (no rule:
    the kernel re-validates no chain); the result is the table a fresh node would get."""
    services, slices = zip(*(numbered(i) for i in range(1, 21)))
    fake = Fake()
    mode = NftablesMode(None, "node-1", CIDR, kernel=fake)
    asyncio.run(mode.sync(ports(*services, slices=slices), True))
    fewer = {**slices[6], "endpoints": slices[6]["endpoints"][:2]}
    changed = (*slices[:6], fewer, *slices[7:])
    assert asyncio.run(mode.sync(ports(*services, slices=changed), False))
    sp = ports(services[6], slices=(fewer,))[0]
    assert fake.last.counts() == {"delete element": 4, "add element": 2}
    key = (sp.cluster_ip, "tcp", "80")
    assert {(obj.owner, obj.key) for _, obj in fake.last.ops} == {
        *((nftables.endpoints_map(3), (*key, str(i))) for i in range(3)),
        *((nftables.endpoints_map(2), (*key, str(i))) for i in range(2)), ("hairpin-endpoints", ("10.244.7.4", "10.244.7.4"))}
    assert fake.dump() == faked(*services, slices=changed).dump()
    assert not asyncio.run(mode.sync(ports(*services, slices=changed), False))  # nothing changed: nothing sent
    assert fake.transactions == 2


def test_incremental_syncs_end_where_a_fresh_table_starts():
    """On the fake: every step of the kernel test below, without root."""
    fake = Fake()
    mode = NftablesMode(None, "node-1", CIDR, kernel=fake)
    asyncio.run(mode.sync(ports(WEB, EMPTY), True))
    for services, slices in STEPS:
        assert asyncio.run(mode.sync(ports(*services, slices=slices), False))
        assert fake.dump() == faked(*services, slices=slices).dump(), (services, slices)


def test_a_full_sync_adopts_a_table_left_by_a_previous_run(make_netns):
    """Stale chains, sets and elements go; affinity sets keep the clients they remember."""
    space = make_netns("adopt")
    sticky = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    old_slice = {**SLICE, "metadata": {"name": "old-1", "namespace": "default",
                                       "labels": {"kubernetes.io/service-name": "old"}}}
    sync(NftablesMode(space, "node-1", CIDR), True, sticky, EMPTY, another(sticky, "old", "10.96.0.30"),
         slices=(SLICE, old_slice))
    assert any("default/old/" in chain for chain in nft_table(space)["chains"])
    sp = ports(sticky)[0]
    remembered = nftables.affinity_set(sp, sp.endpoints[0])
    asyncio.run(nft.apply(space, f"add element ip kube-proxy {remembered} {{ 10.244.9.9 }}\n"))
    restarted = NftablesMode(space, "node-1", CIDR)  # a new process: knows nothing of the table
    assert sync(restarted, False, sticky, EMPTY)
    table = nft_table(space)
    want = fresh(make_netns, sticky, EMPTY)
    assert table["chains"] == want["chains"] and table["sets"].keys() == want["sets"].keys()
    assert "10.244.9.9" in json.dumps(table["sets"][remembered])
    stickier = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 90}})
    assert sync(NftablesMode(space, "node-1", CIDR), False, stickier, EMPTY)  # restarted with a new timeout
    assert nft_table(space) == fresh(make_netns, stickier, EMPTY)


def test_after_a_failed_sync_the_next_one_is_full(make_netns):
    space = make_netns("fail")
    mode = NftablesMode(space, "node-1", CIDR)
    sync(mode, True, WEB, EMPTY)
    asyncio.run(nft.apply(space, "delete table ip kube-proxy\n"))  # someone removed it behind our back
    more = {**SLICE, "endpoints": SLICE["endpoints"] + [endpoint("10.244.1.7", "node-1")]}
    with pytest.raises(nft.NftError):
        sync(mode, False, WEB, EMPTY, slices=(more,))
    assert sync(mode, False, WEB, EMPTY, slices=(more,))
    assert nft_table(space) == fresh(make_netns, WEB, EMPTY, slices=(more,))


def test_udp_destinations_are_what_conntrack_must_forget_when_they_go():
    from netplane.kernel import conntrack
    svc = with_spec(WEB, type="NodePort", externalIPs=["172.30.0.100"],
                    ports=[{"name": "udp", "port": 81, "protocol": "UDP", "nodePort": 30081}])
    found = model.udp_destinations(ports(svc), "node-1")
    assert found == {("10.96.0.10", 81, "10.244.1.2"), ("10.96.0.10", 81, "10.244.2.2"),
                     ("172.30.0.100", 81, "10.244.1.2"), ("172.30.0.100", 81, "10.244.2.2"),
                     ("", 30081, "10.244.1.2"), ("", 30081, "10.244.2.2")}
    assert conntrack.delete_argv("10.96.0.10", 81, "10.244.1.2") == [
        "conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "81", "--dst-nat", "10.244.1.2"]
    assert conntrack.delete_argv("", 30081, "10.244.1.2")[4:6] == ["--orig-port-dst", "30081"]


def test_the_tracker_recomputes_only_the_services_an_event_touched():
    tracker = model.ServiceTracker()
    other = another(WEB, "other", "10.96.0.20")
    for svc in (WEB, other, HEADLESS):
        asyncio.run(tracker.on_service("ADDED", svc, None))
    asyncio.run(tracker.on_slice("ADDED", SLICE, None))
    first = tracker.ports()
    assert sorted(sp.id for sp in first) == [sp.id for sp in ports(WEB, other)]
    assert {sp.id: sp for sp in first}["default/web/tcp/http"] == ports(WEB)[0]
    moved = {**SLICE, "metadata": {**SLICE["metadata"], "labels": {"kubernetes.io/service-name": "other"}}}
    asyncio.run(tracker.on_slice("MODIFIED", moved, SLICE))  # the slice changed owner
    second = {sp.id: sp for sp in tracker.ports()}
    assert second["default/web/tcp/http"].endpoints == ()
    assert [e.ip for e in second["default/other/tcp/http"].endpoints][:2] == ["10.244.1.2", "10.244.2.2"]
    asyncio.run(tracker.on_service("DELETED", other, other))
    third = tracker.ports()
    assert [sp.id for sp in third] == ["default/web/tcp/http", "default/web/udp/udp"]
    assert third[0] is second["default/web/tcp/http"]  # untouched: the same object, so its rules are cached


def test_internal_traffic_policy_local_without_a_local_endpoint_drops():
    """Upstream drops (it does not refuse) when endpoints exist but none on this node."""
    local = with_spec(WEB, internalTrafficPolicy="Local")
    assert elements(faked(local, node="node-3"), "no-endpoint-services")["10.96.0.10 . tcp . 80"] == "drop"
    assert elements(faked(local, EMPTY, node="node-3"), "no-endpoint-services")["10.96.0.11 . tcp . 80"] == "goto reject-chain"


@contextlib.asynccontextmanager
async def running_proxier(tmp_path, space: str, **options):
    """(API client, web's Service object, a Proxier of node-1 running in `space`) on a real API server
    holding Service web and its slice; the proxier and its informers stop afterwards."""

    from netplane.agent.proxy.proxier import Proxier

    async with serving(tmp_path) as (_, client, _port):
        svc = await client.create("services", {"apiVersion": "v1", "kind": "Service", **copy.deepcopy(WEB)})
        await client.create("endpointslices", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                               "addressType": "IPv4", **SLICE})
        informers = Informers(client)
        proxier = Proxier(informers, "node-1", space, CIDR, mode="nftables", **options)
        tasks = [asyncio.create_task(run()) for run in (informers.run, proxier.loop.run)]
        try:
            yield client, svc, proxier
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def test_the_proxier_clears_the_other_mode_and_its_periodic_full_sync_repairs_drift(make_netns, tmp_path):
    """A node that ran iptables mode switches to nftables: its KUBE chains go. Then someone deletes
    a map element behind the proxy's back; a sync woken by an unrelated change puts it back, where
    an incremental sync would have sent nothing (the ruleset's generation moved; and once the
    full-sync period, 0.5 s here, an hour by default, has passed, every sync is full anyway)."""
    from netplane.agent.proxy.modes import IptablesMode
    from netplane.kernel import iptables

    space = make_netns("switch")
    asyncio.run(IptablesMode(space, "node-1", CIDR).sync(ports(WEB), True))
    assert any("KUBE-SVC" in c for c in asyncio.run(iptables.save(space, "nft")).chains)
    element = "10.96.0.10 . tcp . 80 . 0 : 10.244.1.2 . 8080"  # web's first endpoint, in the map of two

    async def has_element() -> bool:
        return element in await nft.list_ruleset(space)

    async def scenario() -> None:
        async with running_proxier(tmp_path, space, full_sync_seconds=0.5) as (client, svc, _):
            await eventually_async(has_element, timeout=5)
            assert not any("KUBE" in c for c in (await iptables.save(space, "nft")).chains)
            await nft.apply(space, "delete element ip kube-proxy endpoints-2 { 10.96.0.10 . tcp . 80 . 0 }\n")
            await asyncio.sleep(0.6)
            svc["metadata"]["labels"] = {"touched": "yes"}  # wakes the loop; the rules stay the same
            await client.update("services", svc)
            await eventually_async(has_element, timeout=5)

    asyncio.run(scenario())


def test_sctp_services_load_though_this_kernel_cannot_carry_sctp(make_netns):
    """The rules are protocol-generic; the VM's kernel has no SCTP sockets to send real packets."""
    space = make_netns("sctp")
    sctp = with_spec(WEB, type="NodePort", ports=[{"name": "s", "port": 80, "protocol": "SCTP", "nodePort": 30090}])
    sctp_slice = {**SLICE, "ports": [{"name": "s", "protocol": "SCTP", "port": 9000}]}
    assert sync(NftablesMode(space, "node-1", CIDR), True, sctp, slices=(sctp_slice,))
    listed = asyncio.run(nft.list_ruleset(space))
    assert "10.96.0.10 . sctp . 80 . 0 : 10.244.1.2 . 9000" in listed and "sctp . 30090 . 1 : 10.244.2.2 . 9000" in listed
    sticky = with_spec(sctp, sessionAffinity="ClientIP")  # a chain of its own
    assert sync(NftablesMode(space, "node-1", CIDR), True, sticky, slices=(sctp_slice,))
    assert "meta l4proto sctp dnat to 10.244.1.2:9000" in asyncio.run(nft.list_ruleset(space))


FAULTS = {  # what a person (or another program) does to the proxy's table behind its back
    "flush table": "flush table ip kube-proxy",
    "delete table": "delete table ip kube-proxy",
    "delete a map element": "delete element ip kube-proxy endpoints-2 { 10.96.0.10 . tcp . 80 . 0 }",
    "flush the chain drawing endpoints": "flush chain ip kube-proxy flat-services",
    "delete a base chain": "delete chain ip kube-proxy nat-prerouting",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_the_proxier_repairs_its_table_within_its_resync_period(fault, make_netns, tmp_path):
    """Whatever changed the table, the next sync (at the latest the periodic one, 0.3 s here, 30 s
    by default) sees the ruleset's generation moved and rewrites everything: the table is again
    what it was, with no Service change to wake it."""
    space = make_netns("heal")

    def table() -> dict | None:
        try:
            return nft_table(space)
        except subprocess.CalledProcessError:  # deleted
            return None

    async def scenario() -> float:
        async with running_proxier(tmp_path, space, resync_seconds=0.3) as (_, _svc, proxier):
            await eventually_async(lambda: proxier.mode.applied is not None, timeout=5)
            healthy = table()
            await nft.apply(space, FAULTS[fault] + "\n")
            assert table() != healthy
            broken = time.monotonic()
            await eventually_async(lambda: table() == healthy, timeout=5)
            return time.monotonic() - broken

    assert asyncio.run(scenario()) < 2


def test_only_a_change_of_the_ruleset_counts_as_tampering(make_netns):
    space = make_netns("gen")
    mode = NftablesMode(space, "node-1", CIDR)
    assert not asyncio.run(mode.tampered())  # nothing written yet: nothing to compare
    sync(mode, True, WEB)
    assert not asyncio.run(mode.tampered())
    sync(mode, False, WEB, slices=())  # its own syncs move the generation and are remembered
    assert not asyncio.run(mode.tampered())
    asyncio.run(nft.apply(space, "add table ip someone-else\n"))  # any transaction: checked in full
    assert asyncio.run(mode.tampered())
