"""kube-proxy's semantics (model.py) and its nftables ruleset, checked as text and by the real nft.

Conventions: clusterCIDR 10.244.0.0/16; this node is node-1. Service web 10.96.0.10 (http 80 ->
8080, udp 81 -> 8081) with endpoints 10.244.1.2 (node-1) and 10.244.2.2 (node-2) ready, 10.244.2.9
not ready; Service empty 10.96.0.11:80 with none; headless is skipped.
"""
from __future__ import annotations

import asyncio
import copy
import subprocess

from netplane.agent.proxy import model, nftables
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


def test_service_ports_carry_upstream_names_and_ready_endpoints():
    http = ports(WEB)[0]
    assert http.id == "default/web/tcp/http"
    assert nftables.service_chain(http).endswith("-default/web/tcp/http")
    assert nftables.endpoint_chain(http, http.endpoints[0]).endswith("-default/web/tcp/http__10.244.1.2/8080")
    assert [(e.ip, e.port) for e in http.cluster_endpoints("node-1")] == [("10.244.1.2", 8080), ("10.244.2.2", 8080)]
    assert [p.id for p in ports(WEB, EMPTY, HEADLESS)] == ["default/empty/tcp/80", "default/web/tcp/http",
                                                          "default/web/udp/udp"]


def test_terminating_endpoints_are_used_only_when_no_endpoint_is_ready():
    going = {**SLICE, "endpoints": [endpoint("10.244.1.2", "node-1", ready=False, serving=True, terminating=True),
                                    endpoint("10.244.2.2", "node-2", ready=False, serving=False, terminating=True)]}
    assert [e.ip for e in ports(WEB, slices=[going])[0].cluster_endpoints("node-1")] == ["10.244.1.2"]
    mixed = {**going, "endpoints": going["endpoints"] + [endpoint("10.244.2.3", "node-2")]}
    assert [e.ip for e in ports(WEB, slices=[mixed])[0].cluster_endpoints("node-1")] == ["10.244.2.3"]


def test_traffic_policies_pick_this_nodes_endpoints():
    local = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local", internalTrafficPolicy="Local",
                      ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(local)[0]
    assert [e.ip for e in sp.external_endpoints("node-1")] == ["10.244.1.2"]
    assert [e.ip for e in sp.cluster_endpoints("node-2")] == ["10.244.2.2"]
    assert sp.external_endpoints("node-3") == []


def test_clusterip_rules():
    text = render(WEB, EMPTY, HEADLESS)
    http = ports(WEB)[0]
    got = lines(text)
    assert f"elements = {{ 10.96.0.10 . tcp . 80 : goto {nftables.service_chain(http)}," in got
    assert "elements = { 10.96.0.11 . tcp . 80 : goto reject-chain }" in got
    assert "headless" not in text
    assert f"ip daddr 10.96.0.10 tcp dport 80 ip saddr != {CIDR} jump mark-for-masquerade" in got
    first, second = (nftables.endpoint_chain(http, e) for e in http.endpoints[:2])
    assert f"numgen random mod 2 vmap {{ 0 : goto {first}, 1 : goto {second} }}" in got
    assert "meta l4proto tcp dnat to 10.244.1.2:8080" in got and "meta l4proto udp dnat to 10.244.2.2:8081" in got
    assert "10.244.2.9" not in text
    assert text.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {")


def test_nodeports_external_and_load_balancer_ips_go_through_the_external_chain():
    svc = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"],
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                    loadBalancerSourceRanges=["172.30.0.0/28"])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    sp = ports(svc)[0]
    got = lines(render(svc))
    ext = nftables.external_chain(sp)
    assert f"elements = {{ tcp . 30080 : goto {ext} }}" in got
    assert f"172.30.0.100 . tcp . 80 : goto {ext}," in got or f"172.30.0.100 . tcp . 80 : goto {ext} }}" in got
    assert any(f"172.30.0.200 . tcp . 80 : goto {ext}" in line for line in got)
    chain = got[got.index(f"chain {ext} {{"):]
    assert chain[1] == "jump mark-for-masquerade"  # externalTrafficPolicy Cluster: the source is lost
    assert f"elements = {{ 172.30.0.200 . tcp . 80 : goto {nftables.firewall_chain(sp)} }}" in got
    assert "ip saddr != { 172.30.0.0/28 } drop" in got


def test_external_traffic_policy_local_keeps_the_source_and_drops_without_a_local_endpoint():
    svc = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local",
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    ext = nftables.external_chain(sp)
    got = lines(render(svc, node="node-1"))
    chain = got[got.index(f"chain {ext} {{"):]
    assert chain[1:4] == [f"ip saddr {CIDR} goto {nftables.service_chain(sp)}",
                          "fib saddr type local jump mark-for-masquerade",
                          f"fib saddr type local goto {nftables.service_chain(sp)}"]
    assert chain[4] == f"numgen random mod 1 vmap {{ 0 : goto {nftables.endpoint_chain(sp, sp.endpoints[0])} }}"
    elsewhere = lines(render(svc, node="node-3"))
    assert "elements = { tcp . 30080 : drop }" in elsewhere


def test_session_affinity_remembers_the_client_per_endpoint():
    svc = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sp = ports(svc)[0]
    got = lines(render(svc))
    first = sp.endpoints[0]
    assert f"set {nftables.affinity_set(sp, first)} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}" in got
    assert f"ip saddr @{nftables.affinity_set(sp, first)} goto {nftables.endpoint_chain(sp, first)}" in got
    assert f"update @{nftables.affinity_set(sp, first)} {{ ip saddr }}" in got


def test_nft_accepts_and_loads_every_feature_twice(make_netns):
    space = make_netns("proxy")
    svc = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"], sessionAffinity="ClientIP",
                    externalTrafficPolicy="Local", loadBalancerSourceRanges=["172.30.0.0/28"],
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                           {"name": "udp", "port": 81, "protocol": "UDP", "nodePort": 30081}])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    script = render(svc, EMPTY, HEADLESS)
    check = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "--check", "-f", "-"],
                           input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    asyncio.run(nft.apply(space, script))
    asyncio.run(nft.apply(space, script))  # a second sync replaces the table atomically
    listed = asyncio.run(nft.list_ruleset(space))
    assert listed.count("table ip kube-proxy") == 1
    assert "10.96.0.10 . tcp . 80 : goto service-" in listed and "tcp . 30080 : goto external-" in listed


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
