"""kube-proxy's nftables mode: the rendered ruleset as text, then checked and loaded by the real nft.

Conventions: clusterCIDR 10.244.0.0/16; Service web 10.96.0.10 (http 80 -> named port http = 8080,
udp 81 -> 8081) with endpoints 10.244.1.2 and 10.244.2.2; Service empty 10.96.0.11:80 with none.
"""
from __future__ import annotations

import asyncio
import subprocess

from netplane.agent.proxy import nftables
from netplane.kernel import nft

WEB = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                     {"name": "udp", "port": 81, "protocol": "UDP"}]}}
EMPTY = {"metadata": {"name": "empty", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP"}]}}
HEADLESS = {"metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}
SLICE = {"metadata": {"name": "web-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "udp", "protocol": "UDP", "port": 8081}],
         "endpoints": [{"addresses": ["10.244.2.2"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.1.2"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.2.9"], "conditions": {"ready": False}}]}


def render() -> str:
    return nftables.render([WEB, EMPTY, HEADLESS], [SLICE], "10.244.0.0/16")


def test_service_port_chain_names_follow_upstream():
    sp = nftables.service_ports([WEB])[0]
    assert sp.id == "default/web/tcp/http"
    assert sp.chain.startswith("service-") and sp.chain.endswith("-default/web/tcp/http")
    ep = nftables.Endpoint("10.244.1.2", 8080)
    assert ep.chain(sp).endswith("-default/web/tcp/http__10.244.1.2/8080")


def test_only_ready_endpoints_in_a_stable_order():
    sp = nftables.service_ports([WEB])[0]
    assert nftables.ready_endpoints([SLICE], sp) == [nftables.Endpoint("10.244.1.2", 8080),
                                                      nftables.Endpoint("10.244.2.2", 8080)]


def test_ruleset_maps_services_and_rejects_those_without_endpoints():
    text = render()
    lines = [line.strip() for line in text.splitlines()]
    http = nftables.service_ports([WEB])[0]
    assert f"elements = {{ 10.96.0.10 . tcp . 80 : goto {http.chain}," in lines
    assert "elements = { 10.96.0.11 . tcp . 80 : goto reject-chain }" in lines
    assert "headless" not in text
    assert "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in lines
    first, second = (nftables.Endpoint(ip, 8080).chain(http) for ip in ("10.244.1.2", "10.244.2.2"))
    assert f"numgen random mod 2 vmap {{ 0 : goto {first}, 1 : goto {second} }}" in lines
    assert "meta l4proto tcp dnat to 10.244.1.2:8080" in lines
    assert "meta l4proto udp dnat to 10.244.2.2:8081" in lines
    assert "meta mark set meta mark | 0x4000;" in text
    assert text.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {")


def test_nft_accepts_and_loads_the_ruleset_twice(make_netns):
    space = make_netns("proxy")
    check = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "--check", "-f", "-"],
                           input=render(), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    asyncio.run(nft.apply(space, render()))
    asyncio.run(nft.apply(space, render()))  # a second sync replaces the table atomically
    listed = asyncio.run(nft.list_ruleset(space))
    assert listed.count("table ip kube-proxy") == 1
    assert "10.96.0.10 . tcp . 80 : goto service-" in listed
