"""kube-proxy's semantics (model.py) and its nftables ruleset, checked as text and by the real nft.

Conventions: clusterCIDR 10.244.0.0/16; this node is node-1. Service web 10.96.0.10 (http 80 ->
8080, udp 81 -> 8081) with endpoints 10.244.1.2 (node-1) and 10.244.2.2 (node-2) ready, 10.244.2.9
not ready; Service empty 10.96.0.11:80 with none; headless is skipped.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import subprocess
import time

import pytest

from netplane.agent.proxy import model, nftables
from netplane.agent.proxy.modes import NftablesMode
from netplane.agent.proxy.ruleset import FragmentCache, diff
from netplane.api.informer import Informers
from netplane.kernel import nft

CIDR = "10.244.0.0/16"
WEB = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                     {"name": "udp", "port": 81, "protocol": "UDP"}]}}
EMPTY = {"metadata": {"name": "empty", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP"}]}}
HEADLESS = {"metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}


def endpoint(ip, node, ready=True, serving=None, terminating=False):
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}


SLICE = {"metadata": {"name": "web-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "udp", "protocol": "UDP", "port": 8081}],
         "endpoints": [endpoint("10.244.2.2", "node-2"), endpoint("10.244.1.2", "node-1"),
                       endpoint("10.244.2.9", "node-2", ready=False)]}


def ports(*services, slices=(SLICE,)):
    return model.service_ports(list(services), list(slices))


def render(*services, slices=(SLICE,), node="node-1") -> str:
    return nftables.render(ports(*services, slices=slices), node, CIDR)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def with_spec(service: dict, **spec) -> dict:
    changed = copy.deepcopy(service)
    changed["spec"].update(spec)
    return changed


def another(service: dict, name: str, cluster_ip: str) -> dict:
    """The same Service under another name and address."""
    copied = with_spec(service, clusterIP=cluster_ip)
    copied["metadata"]["name"] = name
    return copied


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


def test_clusterip_rules():
    text = render(WEB, EMPTY, HEADLESS)
    http = ports(WEB)[0]
    got = lines(text)
    assert f"elements = {{ 10.96.0.10 . tcp . 80 : goto {nftables.service_chain(http)}," in text
    assert "elements = { 10.96.0.11 . tcp . 80 : goto reject-chain }" in text
    assert "headless" not in text
    assert f"ip daddr 10.96.0.10 tcp dport 80 ip saddr != {CIDR} jump mark-for-masquerade" in got
    chain = got[got.index(f"chain {nftables.service_chain(http)} {{"):]
    assert chain[2:4] == ["numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.2:8080",
                          "meta l4proto tcp dnat to 10.244.2.2:8080"]
    assert "meta l4proto udp dnat to 10.244.2.2:8081" in got
    assert "10.244.2.9" not in text
    assert text.startswith("table ip kube-proxy {")


def test_the_random_cascade_gives_each_endpoint_an_equal_share():
    """numgen mod 3 == 0, then mod 2 == 0, then the rest: 1/3 each, like iptables' statistic cascade."""
    three = {**SLICE, "endpoints": [endpoint(f"10.244.1.{i}", "node-1") for i in (2, 3, 4)]}
    sp = ports(WEB, slices=[three])[0]
    chain = list(nftables.fragment(sp, "node-1", CIDR).chains[nftables.service_chain(sp)])
    assert chain[1:] == ["numgen random mod 3 == 0 meta l4proto tcp dnat to 10.244.1.2:8080",
                         "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.3:8080",
                         "meta l4proto tcp dnat to 10.244.1.4:8080"]


def test_hairpin_pairs_are_the_endpoints_the_node_may_dnat_to_and_stay_while_a_service_uses_them():
    """Upstream masquerades `saddr == endpoint` in every endpoint chain, remote ones too: a pod sent
    back to itself by another node (through that node's NodePort) must not see its own address."""
    other = another(WEB, "other", "10.96.0.20")
    other_slice = {**SLICE, "metadata": {**SLICE["metadata"], "name": "other-1",
                                         "labels": {"kubernetes.io/service-name": "other"}}}
    cache = FragmentCache(lambda sp: nftables.fragment(sp, "node-1", CIDR))
    both = cache.fragments(ports(WEB, other, slices=(SLICE, other_slice)))
    assert set(both["default/web/tcp/http"].entries["hairpin-endpoints"]) == {
        "10.244.1.2 . 10.244.1.2", "10.244.2.2 . 10.244.2.2"}
    only_other = cache.fragments(ports(other, slices=(other_slice,)))
    assert "hairpin-endpoints" not in diff(both, only_other).delete_entries  # other still sends there
    assert "10.244.1.2 . 10.244.1.2" in diff(only_other, {}).delete_entries["hairpin-endpoints"]


def test_nodeports_external_and_load_balancer_ips_go_through_the_external_chain():
    svc = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"],
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                    loadBalancerSourceRanges=["172.30.0.0/28"])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    sp = ports(svc)[0]
    text = render(svc)
    got = lines(text)
    ext = nftables.external_chain(sp)
    assert f"elements = {{ tcp . 30080 : goto {ext} }}" in text
    assert f"172.30.0.100 . tcp . 80 : goto {ext}," in text
    assert f"172.30.0.200 . tcp . 80 : goto {ext}" in text
    chain = got[got.index(f"chain {ext} {{"):]
    # externalTrafficPolicy Cluster: the source is lost, any endpoint serves
    assert chain[1:3] == ["jump mark-for-masquerade", f"goto {nftables.service_chain(sp)}"]
    assert f"elements = {{ 172.30.0.200 . tcp . 80 : goto {nftables.firewall_chain(sp)} }}" in text
    assert "ip saddr != { 172.30.0.0/28 } drop" in got


def test_external_traffic_policy_local_keeps_the_source_and_drops_without_a_local_endpoint():
    svc = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local",
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    ext, cluster, local = nftables.external_chain(sp), nftables.service_chain(sp), nftables.local_chain(sp)
    got = lines(render(svc, node="node-1"))
    chain = got[got.index(f"chain {ext} {{"):]
    assert chain[1:6] == [f"ip saddr {CIDR} goto {cluster}",  # short-circuit pod traffic
                          "fib saddr type local jump mark-for-masquerade",  # masquerade local traffic
                          f"fib saddr type local goto {cluster}",  # short-circuit local traffic
                          f"goto {local}", "}"]
    chain = got[got.index(f"chain {local} {{"):]
    assert chain[1:3] == ["meta l4proto tcp dnat to 10.244.1.2:8080", "}"]
    # a node without a local endpoint: the NodePort still leads to the external chain (for its pods
    # and itself), and what that chain leaves untranslated meets the drop after DNAT
    elsewhere = render(svc, node="node-3")
    assert f"map service-nodeports {{ type inet_proto . inet_service : verdict; elements = {{ tcp . 30080 : goto {ext} }}" \
        in elsewhere
    assert "map no-endpoint-nodeports { type inet_proto . inet_service : verdict; elements = { tcp . 30080 : drop }" \
        in elsewhere
    assert f"goto {local}" not in elsewhere and f"chain {local} " not in elsewhere


def test_both_policies_local_short_circuit_to_every_endpoint():
    """internalTrafficPolicy and externalTrafficPolicy Local together: ClusterIP traffic uses this
    node's endpoints, while pods and the node reach a NodePort's endpoints anywhere (upstream sends
    the short-circuit to the Cluster policy's chain, not to the internal one)."""
    svc = with_spec(WEB, type="LoadBalancer", externalTrafficPolicy="Local", internalTrafficPolicy="Local",
                    externalIPs=["172.30.2.1"], ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    fragment = nftables.fragment(sp, "node-3", CIDR)
    assert fragment.entries["no-endpoint-services"] == {"10.96.0.10 . tcp . 80": "drop", "172.30.2.1 . tcp . 80": "drop"}
    assert fragment.entries["service-ips"] == {"172.30.2.1 . tcp . 80": f"goto {nftables.external_chain(sp)}"}
    assert fragment.chains[nftables.service_chain(sp)] == ("numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.2:8080",
                                                          "meta l4proto tcp dnat to 10.244.2.2:8080")
    assert nftables.local_chain(sp) not in fragment.chains
    on_node_1 = nftables.fragment(sp, "node-1", CIDR)
    assert on_node_1.entries["service-ips"]["10.96.0.10 . tcp . 80"] == f"goto {nftables.local_chain(sp)}"
    assert on_node_1.chains[nftables.local_chain(sp)][0].startswith("ip daddr 10.96.0.10 tcp dport 80 ip saddr != ")


def test_session_affinity_remembers_the_client_per_endpoint():
    svc = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sp = ports(svc)[0]
    got = lines(render(svc))
    first = sp.endpoints[0]
    assert f"set {nftables.affinity_set(sp, first)} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}" in got
    remember = f"update @{nftables.affinity_set(sp, first)} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.2:8080"
    assert f"ip saddr @{nftables.affinity_set(sp, first)} {remember}" in got
    assert f"numgen random mod 2 == 0 {remember}" in got


FEATURES = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"], sessionAffinity="ClientIP",
                     externalTrafficPolicy="Local", loadBalancerSourceRanges=["172.30.0.0/28"],
                     ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                            {"name": "udp", "port": 81, "protocol": "UDP", "nodePort": 30081}])
FEATURES["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}


def kernel_table(space: str) -> dict:
    """The table as the kernel holds it: each chain's rules and each set's elements, without handles
    or order of chains, so an incrementally updated table can be compared with a freshly loaded one."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "-j", "list", "table", "ip", "kube-proxy"],
                         capture_output=True, text=True, check=True).stdout
    found: dict = {"chains": {}, "sets": {}}
    for item in json.loads(out)["nftables"]:
        if "rule" in item:
            found["chains"][item["rule"]["chain"]].append(json.dumps(item["rule"]["expr"], sort_keys=True))
        elif "chain" in item:
            found["chains"].setdefault(item["chain"]["name"], [])
        elif "set" in item or "map" in item:
            obj = item.get("set") or item["map"]
            found["sets"][obj["name"]] = (obj.get("timeout"), sorted(json.dumps(e, sort_keys=True)
                                                                      for e in obj.get("elem", [])))
    return found


def sync(mode: NftablesMode, full: bool, *services, slices=(SLICE,)) -> bool:
    return asyncio.run(mode.sync(ports(*services, slices=slices), full))


FRESH = itertools.count()


def fresh(make_netns, *services, slices=(SLICE,)) -> dict:
    """The table a node that never had one gets for these Services."""
    space = make_netns(f"fresh{next(FRESH)}")
    sync(NftablesMode(space, "node-1", CIDR), False, *services, slices=slices)
    return kernel_table(space)


def test_nft_loads_every_feature_and_a_full_resync_changes_nothing(make_netns):
    space = make_netns("proxy")
    mode = NftablesMode(space, "node-1", CIDR)
    script = render(FEATURES, EMPTY, HEADLESS)
    check = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "--check", "-f", "-"],
                           input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)
    loaded = kernel_table(space)
    assert "10.96.0.10 . tcp . 80 : goto service-" in asyncio.run(nft.list_ruleset(space))
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)  # a periodic full resync of an existing table
    assert kernel_table(space) == loaded
    assert not sync(mode, False, FEATURES, EMPTY, HEADLESS)  # nothing changed: nothing sent


def test_incremental_syncs_end_where_a_fresh_load_starts(make_netns):
    """Each step sends only the changes; after each, the kernel's table equals a fresh full load."""
    space = make_netns("incr")
    mode = NftablesMode(space, "node-1", CIDR)
    sync(mode, True, WEB, EMPTY)
    more = {**SLICE, "endpoints": SLICE["endpoints"] + [endpoint("10.244.1.7", "node-1")]}
    sticky = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    stickier = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 90}})
    filled = {**SLICE, "metadata": {**SLICE["metadata"], "name": "empty-1",
                                    "labels": {"kubernetes.io/service-name": "empty"}},
              "ports": [{"protocol": "TCP", "port": 8080}]}
    steps = [((WEB, EMPTY), (more,)), ((WEB, EMPTY), (SLICE,)), ((sticky, EMPTY), (SLICE,)),
             ((stickier, EMPTY), (SLICE,)), ((WEB, EMPTY), (SLICE,)), ((FEATURES, EMPTY), (SLICE,)),
             ((WEB, EMPTY), (SLICE, filled)), ((WEB,), (SLICE,)), ((EMPTY,), ())]
    for services, slices in steps:
        assert sync(mode, False, *services, slices=slices)
        assert kernel_table(space) == fresh(make_netns, *services, slices=slices), (services, slices)


def test_one_changed_service_sends_only_its_own_objects():
    other = another(WEB, "other", "10.96.0.20")
    cache = FragmentCache(lambda sp: nftables.fragment(sp, "node-1", CIDR))
    before = cache.fragments(ports(WEB, other))
    fewer = {**SLICE, "endpoints": SLICE["endpoints"][1:]}
    other_slice = {**SLICE, "metadata": {**SLICE["metadata"], "name": "other-1",
                                         "labels": {"kubernetes.io/service-name": "other"}}}
    after = cache.fragments(ports(WEB, other, slices=(fewer, other_slice)))
    assert after["default/other/tcp/http"] is not before["default/other/tcp/http"]  # its endpoints came
    script = nftables.update(diff(before, after))
    assert "default/web/" in script and "10.96.0.20" in script
    unchanged = cache.fragments(ports(WEB, other, slices=(fewer, other_slice)))
    assert not diff(after, unchanged)


def test_a_full_sync_adopts_a_table_left_by_a_previous_run(make_netns):
    """Stale chains, sets and elements go; affinity sets keep the clients they remember."""
    space = make_netns("adopt")
    sticky = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    old_slice = {**SLICE, "metadata": {"name": "old-1", "namespace": "default",
                                       "labels": {"kubernetes.io/service-name": "old"}}}
    sync(NftablesMode(space, "node-1", CIDR), True, sticky, EMPTY, another(WEB, "old", "10.96.0.30"),
         slices=(SLICE, old_slice))
    assert any("default/old/" in chain for chain in kernel_table(space)["chains"])
    sp = ports(sticky)[0]
    remembered = nftables.affinity_set(sp, sp.endpoints[0])
    asyncio.run(nft.apply(space, f"add element ip kube-proxy {remembered} {{ 10.244.9.9 }}\n"))
    restarted = NftablesMode(space, "node-1", CIDR)  # a new process: knows nothing of the table
    assert sync(restarted, False, sticky, EMPTY)
    table = kernel_table(space)
    want = fresh(make_netns, sticky, EMPTY)
    assert table["chains"] == want["chains"] and table["sets"].keys() == want["sets"].keys()
    assert "10.244.9.9" in json.dumps(table["sets"][remembered])
    stickier = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 90}})
    assert sync(NftablesMode(space, "node-1", CIDR), False, stickier, EMPTY)  # restarted with a new timeout
    assert kernel_table(space) == fresh(make_netns, stickier, EMPTY)


def test_after_a_failed_sync_the_next_one_is_full(make_netns):
    space = make_netns("fail")
    mode = NftablesMode(space, "node-1", CIDR)
    sync(mode, True, WEB, EMPTY)
    asyncio.run(nft.apply(space, "delete table ip kube-proxy\n"))  # someone removed it behind our back
    more = {**SLICE, "endpoints": SLICE["endpoints"] + [endpoint("10.244.1.7", "node-1")]}
    with pytest.raises(nft.NftError):
        sync(mode, False, WEB, EMPTY, slices=(more,))
    assert sync(mode, False, WEB, EMPTY, slices=(more,))
    assert kernel_table(space) == fresh(make_netns, WEB, EMPTY, slices=(more,))


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
    assert "10.96.0.10 . tcp . 80 : drop" in render(local, node="node-3")
    assert "10.96.0.11 . tcp . 80 : goto reject-chain" in render(local, EMPTY, node="node-3")


async def until(condition, seconds: float = 5) -> float:
    """Seconds until the coroutine function `condition` returns something true."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await condition():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {seconds} s")


@contextlib.asynccontextmanager
async def running_proxier(tmp_path, space: str, **options):
    """(API client, web's Service object, a Proxier of node-1 running in `space`) on a real API server
    holding Service web and its slice; the proxier and its informers stop afterwards."""
    from support.api import serving

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
    element = "10.96.0.10 . tcp . 80 : goto service-"

    async def has_element() -> bool:
        return element in await nft.list_ruleset(space)

    async def scenario() -> None:
        async with running_proxier(tmp_path, space, full_sync_seconds=0.5) as (client, svc, _):
            await until(has_element)
            assert not any("KUBE" in c for c in (await iptables.save(space, "nft")).chains)
            await nft.apply(space, "delete element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 }\n")
            await asyncio.sleep(0.6)
            svc["metadata"]["labels"] = {"touched": "yes"}  # wakes the loop; the rules stay the same
            await client.update("services", svc)
            await until(has_element)

    asyncio.run(scenario())


def test_sctp_services_load_though_this_kernel_cannot_carry_sctp(make_netns):
    """The rules are protocol-generic; the VM's kernel has no SCTP sockets to send real packets."""
    space = make_netns("sctp")
    sctp = with_spec(WEB, type="NodePort", ports=[{"name": "s", "port": 80, "protocol": "SCTP", "nodePort": 30090}])
    sctp_slice = {**SLICE, "ports": [{"name": "s", "protocol": "SCTP", "port": 9000}]}
    assert sync(NftablesMode(space, "node-1", CIDR), True, sctp, slices=(sctp_slice,))
    listed = asyncio.run(nft.list_ruleset(space))
    assert "10.96.0.10 . sctp . 80 : goto service-" in listed and "sctp . 30090 : goto external-" in listed
    assert "meta l4proto sctp dnat to 10.244.1.2:9000" in listed


FAULTS = {  # what a person (or another program) does to the proxy's table behind its back
    "flush table": "flush table ip kube-proxy",
    "delete table": "delete table ip kube-proxy",
    "delete a map element": "delete element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 }}",
    "flush a Service's chain": "flush chain ip kube-proxy {chain}",
    "delete a base chain": "delete chain ip kube-proxy nat-prerouting",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_the_proxier_repairs_its_table_within_its_resync_period(fault, make_netns, tmp_path):
    """Whatever changed the table, the next sync (at the latest the periodic one, 0.3 s here, 30 s
    by default) sees the ruleset's generation moved and rewrites everything: the table is again
    what it was, with no Service change to wake it."""
    space = make_netns("heal")
    chain = nftables.service_chain(ports(WEB)[0])

    def table() -> dict | None:
        try:
            return kernel_table(space)
        except subprocess.CalledProcessError:  # deleted
            return None

    async def scenario() -> float:
        async with running_proxier(tmp_path, space, resync_seconds=0.3) as (_, _svc, proxier):
            await until(lambda: asyncio.sleep(0, proxier.mode.applied is not None))
            healthy = table()
            await nft.apply(space, FAULTS[fault].format(chain=chain) + "\n")
            assert table() != healthy
            return await until(lambda: asyncio.sleep(0, table() == healthy))

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
