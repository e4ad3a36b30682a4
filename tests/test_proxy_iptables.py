"""kube-proxy's iptables mode: its rules as text, loaded by both backends (iptables-nft and
iptables-legacy), kept in sync incrementally, adopted, removed, and real packets through them.

Conventions: the Services, slices and helpers of tests/support/services.py (clusterCIDR 10.244.0.0/16;
this node is node-1; web 10.96.0.10 with http 80 -> 8080 and udp 81 -> 8081 on 10.244.1.2
(node-1) and 10.244.2.2 (node-2), 10.244.2.9 not ready; empty 10.96.0.11:80 without endpoints).
Namespaces are np.ipt<hex>.<role>. The packet test's topology: client 10.244.1.2 -- node
(10.244.1.1 | 10.244.2.1, default route on the server's link) -- server 10.244.2.2:8080.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import unique_lab
from support.flows import FLOW_SERVICES, FLOW_SLICES, FLOWS, NODE, NODE_IPS, flow_id
from support.iptwalk import Walk
from support.services import CIDR, EMPTY, FEATURES, HEADLESS, SLICE, WEB, another, endpoint, ports, with_spec
from netplane.agent.proxy import iptables, model
from netplane.agent.proxy.modes import IptablesMode
from netplane.agent.proxy.proxier import make_mode, other_modes
from netplane.agent.ruleset import FragmentCache, diff
from netplane.kernel import iptables as kernel_iptables
from netplane.kernel import netns, sysctl
from netplane.kernel.nftfake import Packet
from netplane.lab import model as lab_model

BACKENDS = kernel_iptables.BACKENDS
MORE = {**SLICE, "endpoints": SLICE["endpoints"] + [endpoint("10.244.1.7", "node-1")]}
FEWER = {**SLICE, "endpoints": SLICE["endpoints"][1:]}  # 10.244.2.2 went
OTHER = another(WEB, "other", "10.96.0.20")
OTHER_SLICE = {**SLICE, "metadata": {**SLICE["metadata"], "name": "other-1",
                                     "labels": {"kubernetes.io/service-name": "other"}}}


@pytest.fixture
def lab_name() -> str:
    """Overrides conftest's, so this module's namespaces are np.ipt<hex>.*."""
    return unique_lab("ipt")


def render(*services, slices=(SLICE,), node="node-1") -> str:
    return iptables.render(ports(*services, slices=slices), node, CIDR)


def declared(text: str) -> list[str]:
    """The chains ("<table> <chain>") a restore input declares, in order."""
    found, table = [], ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            found.append(f"{table} {line[1:].split()[0]}")
    return found


def rules_of(text: str, chain: str) -> list[str]:
    """The rules appended to a chain ("<table> <chain>") in a restore input."""
    table, name = chain.split(" ", 1)
    section = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    return [line.split(" ", 2)[2] for line in section.splitlines() if line.startswith(f"-A {name} ")]


def target(rule: str) -> str:
    return rule.rsplit("-j ", 1)[1]


def test_chain_names_are_upstreams():
    """Pinned to upstream's proxier_test.go: ns1/svc1 port p80/TCP and its endpoint 10.180.0.1:80."""
    sp = model.ServicePort("ns1", "svc1", "p80", "tcp", "172.30.0.41", 80,
                           endpoints=(model.Endpoint("10.180.0.1", 80),))
    assert iptables.port_name(sp) == "ns1/svc1:p80"
    assert iptables.service_chain(sp) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert iptables.endpoint_chain(sp, sp.endpoints[0]) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert {iptables.local_chain(sp)[:9], iptables.external_chain(sp)[:9], iptables.firewall_chain(sp)[:8]} == {
        "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-"}
    assert iptables.port_name(ports(EMPTY)[0]) == "default/empty"  # an unnamed port: no ":"


def test_clusterip_rules():
    text = render(WEB, EMPTY, HEADLESS)
    http = ports(WEB)[0]
    svc = iptables.service_chain(http)
    first, second = (iptables.endpoint_chain(http, e) for e in http.endpoints[:2])
    assert rules_of(text, "nat KUBE-SERVICES")[0] == (
        f'-m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j {svc}')
    assert rules_of(text, "nat KUBE-SERVICES")[-1].endswith(
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")  # the NodePorts jump last
    assert rules_of(text, f"nat {svc}") == [
        f'-m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s {CIDR} '
        "-j KUBE-MARK-MASQ",
        '-m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random '
        f"--probability 0.5000000000 -j {first}",
        f'-m comment --comment "default/web:http -> 10.244.2.2:8080" -j {second}']
    assert rules_of(text, f"nat {first}") == [
        '-m comment --comment "default/web:http" -s 10.244.1.2 -j KUBE-MARK-MASQ',
        '-m comment --comment "default/web:http" -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080']
    assert rules_of(text, "filter KUBE-SERVICES") == [
        '-m comment --comment "default/empty has no endpoints" -m tcp -p tcp -d 10.96.0.11 --dport 80 -j REJECT']
    assert "headless" not in text and "10.244.2.9" not in text
    assert rules_of(text, "nat KUBE-MARK-MASQ") == ["-j MARK --or-mark 0x4000"]


def test_the_random_cascade_gives_each_endpoint_an_equal_share():
    three = {**SLICE, "endpoints": [endpoint(f"10.244.1.{i}", "node-1") for i in (2, 3, 4)]}
    sp = ports(WEB, slices=[three])[0]
    chain = iptables.fragment(sp, "node-1", CIDR).chains[f"nat {iptables.service_chain(sp)}"]
    chances = [re.search(r"--probability (\S+)", rule) for rule in chain[1:]]
    assert [c and c[1] for c in chances] == ["0.3333333333", "0.5000000000", None]
    assert [target(rule) for rule in chain[1:]] == [iptables.endpoint_chain(sp, e) for e in sp.endpoints]


def test_session_affinity_remembers_the_client_per_endpoint():
    sticky = with_spec(WEB, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sp = ports(sticky)[0]
    text = render(sticky)
    sep = iptables.endpoint_chain(sp, sp.endpoints[0])
    assert rules_of(text, f"nat {iptables.service_chain(sp)}")[1] == (
        f'-m comment --comment "default/web:http -> 10.244.1.2:8080" -m recent --name {sep} --rcheck --seconds 60 '
        f"--reap -j {sep}")
    assert f'-m recent --name {sep} --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080' in (
        rules_of(text, f"nat {sep}")[1])


def test_external_traffic_goes_through_the_external_chain_and_the_firewall():
    svc = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"], loadBalancerSourceRanges=["172.30.0.0/28"],
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    sp = ports(svc)[0]
    text = render(svc)
    ext, fw = iptables.external_chain(sp), iptables.firewall_chain(sp)
    assert rules_of(text, "nat KUBE-SERVICES")[1:3] == [
        f'-m comment --comment "default/web:http external IP" -m tcp -p tcp -d 172.30.0.100 --dport 80 -j {ext}',
        f'-m comment --comment "default/web:http loadbalancer IP" -m tcp -p tcp -d 172.30.0.200 --dport 80 -j {fw}']
    assert rules_of(text, "nat KUBE-NODEPORTS") == [
        f'-m comment --comment "default/web:http" -m tcp -p tcp --dport 30080 -j {ext}']
    assert rules_of(text, f"nat {ext}") == [  # externalTrafficPolicy Cluster: the source is lost
        '-m comment --comment "masquerade traffic for default/web:http external destinations" -j KUBE-MARK-MASQ',
        f"-j {iptables.service_chain(sp)}"]
    assert rules_of(text, f"nat {fw}") == [
        f'-m comment --comment "default/web:http loadbalancer IP" -s 172.30.0.0/28 -j {ext}',
        '-m comment --comment "other traffic to default/web:http will be dropped by KUBE-PROXY-FIREWALL"']
    assert rules_of(text, "filter KUBE-PROXY-FIREWALL") == [
        f'-m comment --comment "default/web:http traffic not accepted by {fw}" -m tcp -p tcp -d 172.30.0.200 '
        "--dport 80 -j DROP"]


def test_external_traffic_policy_local_keeps_the_source_and_drops_without_a_local_endpoint():
    svc = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local",
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    ext, svl, svc_chain = iptables.external_chain(sp), iptables.local_chain(sp), iptables.service_chain(sp)
    text = render(svc, node="node-1")
    assert [target(rule) for rule in rules_of(text, f"nat {ext}")] == [svc_chain, "KUBE-MARK-MASQ", svc_chain, svl]
    assert f"-s {CIDR} -j {svc_chain}" in rules_of(text, f"nat {ext}")[0]
    assert rules_of(text, f"nat {svl}") == [
        f'-m comment --comment "default/web:http -> 10.244.1.2:8080" -j {iptables.endpoint_chain(sp, sp.endpoints[0])}']
    elsewhere = render(svc, node="node-3")
    assert f"nat {svl}" not in elsewhere and rules_of(elsewhere, "filter KUBE-EXTERNAL-SERVICES") == [
        '-m comment --comment "default/web:http has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp '
        "--dport 30080 -j DROP"]
    nowhere = render(svc, slices=())
    assert rules_of(nowhere, "filter KUBE-EXTERNAL-SERVICES")[0].endswith("--dport 30080 -j REJECT")
    assert "KUBE-EXT-" not in nowhere


def test_both_policies_local_short_circuit_to_kube_svc():
    """internalTrafficPolicy and externalTrafficPolicy Local: the ClusterIP goes to KUBE-SVL- (or is
    dropped on a node without an endpoint), while the external chain sends pods and the node to
    KUBE-SVC-, which holds every endpoint, as upstream's UsesClusterEndpoints makes it."""
    svc = with_spec(WEB, type="NodePort", externalTrafficPolicy="Local", internalTrafficPolicy="Local",
                    ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sp = ports(svc)[0]
    ext, svl, svc_chain = iptables.external_chain(sp), iptables.local_chain(sp), iptables.service_chain(sp)
    elsewhere = render(svc, node="node-3")
    assert [target(rule) for rule in rules_of(elsewhere, f"nat {ext}")] == [svc_chain, "KUBE-MARK-MASQ", svc_chain]
    assert [target(rule) for rule in rules_of(elsewhere, f"nat {svc_chain}")] == [
        iptables.endpoint_chain(sp, ep) for ep in sp.endpoints[:2]]
    assert rules_of(elsewhere, "filter KUBE-SERVICES") == [
        '-m comment --comment "default/web:http has no local endpoints" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j DROP']
    on_node_1 = render(svc, node="node-1")
    assert target(rules_of(on_node_1, "nat KUBE-SERVICES")[0]) == svl
    assert [target(rule) for rule in rules_of(on_node_1, f"nat {ext}")] == [svc_chain, "KUBE-MARK-MASQ", svc_chain, svl]


GOLDEN = Path(__file__).parent / "data" / "proxy-iptables.golden"


def test_the_rules_of_every_feature_match_their_golden_dump():
    """What node-1's iptables-restore input holds for FEATURES, a Service without endpoints and a
    headless one. After an intended change of the rules, rewrite the file from render() and read the
    difference before committing it."""
    assert render(FEATURES, EMPTY, HEADLESS) == GOLDEN.read_text()


@functools.cache
def flow_rules(node: str) -> Walk:
    return Walk(render(*FLOW_SERVICES, slices=FLOW_SLICES, node=node),
                frozenset({NODE_IPS[node], f"10.244.{node[-1]}.1"}))


@pytest.mark.parametrize("node,source,destination,protocol,port,outcomes", FLOWS, ids=[flow_id(f) for f in FLOWS])
def test_packets_meet_the_same_fate_as_in_nftables_mode(node, source, destination, protocol, port, outcomes):
    """Each flow's first packet walked through node's iptables rules (every branch of the random
    choice): the verdicts, DNATs and masquerades nftables mode gives the same packets."""
    local = source == NODE
    packet = Packet(NODE_IPS[node] if local else source, destination, protocol, port, local_origin=local)
    found = flow_rules(node).run(packet)
    assert len(found) == len(outcomes)
    assert {(o.verdict, o.dnat, o.masquerade) for o in found} == outcomes


def test_one_changed_service_declares_only_its_own_chains():
    cache = FragmentCache(lambda sp: iptables.fragment(sp, "node-1", CIDR))
    before = cache.fragments(ports(WEB, OTHER))
    after = cache.fragments(ports(WEB, OTHER, slices=(FEWER,)))
    script = iptables.update(after, diff(before, after))
    # the 9 top-level chains (rewritten on every sync, as upstream's partial sync), web's two KUBE-SVC-
    # chains (one endpoint fewer) and the two KUBE-SEP- chains of the endpoint that went (flushed, then -X)
    web = ports(WEB)
    gone = [iptables.endpoint_chain(sp, sp.endpoints[1]) for sp in web]
    assert [c.split()[1] for c in declared(script)] == [
        *iptables.TOP_CHAINS["filter"], *iptables.TOP_CHAINS["nat"], *sorted(iptables.service_chain(sp) for sp in web),
        *sorted(gone)]
    assert [line for line in script.splitlines() if line.startswith("-X")] == [f"-X {c}" for c in sorted(gone)]
    assert "default/other" in script  # in the top-level chains only
    assert not diff(after, cache.fragments(ports(WEB, OTHER, slices=(FEWER,))))


def save(space: str, backend: str) -> dict[str, list[str]]:
    """Every chain of the backend as the kernel holds it: "<table> <chain>" -> its rules."""
    out = subprocess.run(netns.command(space, [kernel_iptables.tool(backend, "save")]), capture_output=True,
                         text=True, check=True).stdout
    found: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            found[f"{table} {line[1:].split()[0]}"] = []
        elif line.startswith("-A "):
            found[f"{table} {line.split()[1]}"].append(line.split(" ", 2)[2])
    return found


def kube_chains(space: str, backend: str) -> set[str]:
    return {chain for chain in save(space, backend) if chain.split()[1].startswith("KUBE-")}


def leftovers(space: str, backend: str) -> list[str]:
    """Our chains, and any rule that names one."""
    found = save(space, backend)
    return sorted(c for c in found if " KUBE-" in c) + [r for rules in found.values() for r in rules if "KUBE-" in r]


def sync(mode: IptablesMode, full: bool, *services, slices=(SLICE,)) -> bool:
    return asyncio.run(mode.sync(ports(*services, slices=slices), full))


FRESH = itertools.count()


def fresh(make_netns, backend: str, *services, slices=(SLICE,)) -> dict[str, list[str]]:
    """What a node that never had rules holds for these Services."""
    space = make_netns(f"fresh{next(FRESH)}")
    sync(IptablesMode(space, "node-1", CIDR, backend), False, *services, slices=slices)
    return save(space, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_load_every_feature_and_a_full_resync_changes_nothing(make_netns, backend):
    space = make_netns("load")
    text = render(FEATURES, EMPTY, HEADLESS)
    check = subprocess.run(netns.command(space, [kernel_iptables.tool(backend, "restore"), "--test", "--noflush"]),
                           input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert kube_chains(space, backend) == set()  # --test loads nothing
    mode = IptablesMode(space, "node-1", CIDR, backend)
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)
    loaded = save(space, backend)
    assert kube_chains(space, backend) == set(declared(text))
    assert loaded["nat PREROUTING"] == ['-m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    assert sync(mode, True, FEATURES, EMPTY, HEADLESS)  # a periodic full resync: same rules, no second jump
    assert save(space, backend) == loaded
    assert not sync(mode, False, FEATURES, EMPTY, HEADLESS)  # nothing changed: nothing sent


@pytest.mark.parametrize("backend", BACKENDS)
def test_incremental_syncs_end_where_a_fresh_load_starts(make_netns, backend):
    """Add a Service, change an endpoint, delete a Service: after each partial sync the kernel holds
    exactly what a fresh load holds, no stale chain left."""
    space = make_netns("incr")
    mode = IptablesMode(space, "node-1", CIDR, backend)
    sync(mode, True, WEB, EMPTY)
    steps = [((WEB, EMPTY, OTHER), (SLICE, OTHER_SLICE)), ((WEB, EMPTY, OTHER), (FEWER, OTHER_SLICE)),
             ((WEB, EMPTY), (FEWER,)), ((FEATURES, EMPTY), (MORE,)), ((EMPTY,), ())]
    for services, slices in steps:
        assert sync(mode, False, *services, slices=slices)
        assert save(space, backend) == fresh(make_netns, backend, *services, slices=slices), (services, slices)
    assert {c.split()[1] for c in kube_chains(space, backend)} == {*iptables.TOP_CHAINS["filter"],
                                                                   *iptables.TOP_CHAINS["nat"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_sync_adopts_what_a_previous_run_left(make_netns, backend):
    """A restarted proxy deletes the per-Service chains no Service owns and puts back a missing jump."""
    space = make_netns("adopt")
    sync(IptablesMode(space, "node-1", CIDR, backend), True, WEB, OTHER, slices=(SLICE, OTHER_SLICE))
    assert f"nat {iptables.service_chain(ports(OTHER)[0])}" in kube_chains(space, backend)
    leftover = ("*nat\n:KUBE-SEP-FROMAPREVIOUSRUN - [0:0]\n-A KUBE-SEP-FROMAPREVIOUSRUN -j KUBE-MARK-MASQ\n"
                '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n')
    asyncio.run(kernel_iptables.restore(space, backend, leftover))
    assert "nat KUBE-SEP-FROMAPREVIOUSRUN" in kube_chains(space, backend)
    assert sync(IptablesMode(space, "node-1", CIDR, backend), False, WEB)  # a new process: a full sync
    assert save(space, backend) == fresh(make_netns, backend, WEB)


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_a_failed_sync_the_next_one_is_full(make_netns, backend):
    space = make_netns("fail")
    mode = IptablesMode(space, "node-1", CIDR, backend)
    sync(mode, True, WEB, EMPTY)
    asyncio.run(IptablesMode(space, "node-1", CIDR, backend).remove())  # someone removed it all behind our back
    with pytest.raises(kernel_iptables.IptablesError):  # KUBE-SERVICES names web's chains, which are gone
        sync(mode, False, WEB, EMPTY, slices=(MORE,))
    assert sync(mode, False, WEB, EMPTY, slices=(MORE,))
    assert save(space, backend) == fresh(make_netns, backend, WEB, EMPTY, slices=(MORE,))


def test_remove_leaves_no_kube_chain_in_either_backend_and_a_switch_clears_the_old_backend(make_netns):
    space = make_netns("remove")
    for backend in BACKENDS:
        sync(IptablesMode(space, "node-1", CIDR, backend), True, FEATURES, EMPTY)
    asyncio.run(IptablesMode(space, "node-1", CIDR).remove())
    assert [leftovers(space, backend) for backend in BACKENDS] == [[], []]
    sync(IptablesMode(space, "node-1", CIDR, "legacy"), True, WEB)
    sync(IptablesMode(space, "node-1", CIDR, "nft"), False, WEB)  # the node switched to iptables-nft
    assert not leftovers(space, "legacy") and kube_chains(space, "nft")
    for other in other_modes("nftables", space, "node-1", CIDR):  # and then to nftables mode
        asyncio.run(other.remove())
    assert [leftovers(space, backend) for backend in BACKENDS] == [[], []]


def test_modes_and_the_lab_file_know_the_backend(tmp_path):
    legacy = make_mode("iptables", None, "node-1", CIDR, iptables_backend="legacy")
    assert isinstance(legacy, IptablesMode) and legacy.backend == "legacy"
    assert [m.name for m in other_modes("iptables", None, "node-1", CIDR, "legacy")] == ["nftables"]
    assert [m.name for m in other_modes("nftables", None, "node-1", CIDR)] == ["iptables"]
    with pytest.raises(ValueError):
        make_mode("iptables", None, "node-1", CIDR, iptables_backend="ebtables")
    lab = lab_model.parse({"network": {"proxyMode": "iptables", "iptablesBackend": "legacy"}})
    assert (lab.network.proxyMode, lab.network.iptablesBackend) == ("iptables", "legacy")
    assert lab_model.parse({}).network.iptablesBackend == "nft"
    assert lab_model.from_dict(lab.to_dict()) == lab
    with pytest.raises(lab_model.LabError) as err:
        lab_model.parse({"network": {"iptablesBackend": "xtables"}}, tmp_path)
    assert err.value.field == "network.iptablesBackend"


def wire(client: str, node: str, server: str) -> None:
    """client 10.244.1.2 -- node -- server 10.244.2.2; the node's default route points at the server's link."""
    steps = [
        ["ip", "-n", node, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", client],
        ["ip", "-n", node, "link", "add", "s0", "type", "veth", "peer", "name", "eth0", "netns", server],
        ["ip", "-n", node, "addr", "add", "10.244.1.1/24", "dev", "c0"],
        ["ip", "-n", node, "addr", "add", "10.244.2.1/24", "dev", "s0"],
        *(["ip", "-n", node, "link", "set", dev, "up"] for dev in ("c0", "s0")),
        ["ip", "-n", node, "route", "add", "default", "dev", "s0"],  # a route for ClusterIPs, as a node has
    ]
    for space, address, gateway in ((client, "10.244.1.2/24", "10.244.1.1"), (server, "10.244.2.2/24", "10.244.2.1")):
        steps += [["ip", "-n", space, "addr", "add", address, "dev", "eth0"],
                  ["ip", "-n", space, "link", "set", "eth0", "up"],
                  ["ip", "-n", space, "route", "add", "default", "via", gateway]]
    for step in steps:
        subprocess.run(step, check=True)
    sysctl.write(node, {"net.ipv4.ip_forward": "1"})


@pytest.mark.parametrize("backend", BACKENDS)
def test_packets_reach_an_endpoint_and_a_service_without_one_refuses_at_once(make_netns, backend):
    client, node, server = make_netns("client"), make_netns("node"), make_netns("server")
    wire(client, node, server)
    web = model.ServicePort("default", "web", "http", "tcp", "10.96.0.10", 80,
                            endpoints=(model.Endpoint("10.244.2.2", 8080, "node-1"),))
    empty = model.ServicePort("default", "empty", "", "tcp", "10.96.0.11", 80)
    assert asyncio.run(IptablesMode(node, "node-1", CIDR, backend).sync([web, empty], True))
    listener = netns.socket_in(server, socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 8080))
    listener.listen()
    with listener, netns.socket_in(client, socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(3)
        conn.connect(("10.96.0.10", 80))
        accepted, peer = listener.accept()
        accepted.close()
        assert peer[0] == "10.244.1.2"  # a pod's address is in the clusterCIDR: not masqueraded
    with netns.socket_in(client, socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(3)
        started = time.monotonic()
        assert conn.connect_ex(("10.96.0.11", 80)) == errno.ECONNREFUSED  # REJECT, not a timeout
        assert time.monotonic() - started < 1


IPTABLES_FAULTS = {  # what a person, or firewalld reloading, does behind the proxy's back
    "flush nat": [["-t", "nat", "-F"]],
    "flush and delete nat chains": [["-t", "nat", "-F"], ["-t", "nat", "-X"]],
    "delete a jump": [["-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals",
                       "-j", "KUBE-SERVICES"]],
    "flush a Service's chain": [["-t", "nat", "-F", "{chain}"]],
    "flush filter": [["-t", "filter", "-F"]],
}


@pytest.mark.parametrize("fault", IPTABLES_FAULTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_change_behind_the_proxys_back_is_seen_and_a_full_sync_repairs_it(make_netns, backend, fault):
    """nft backend: the ruleset's generation moved; legacy: iptables-save's chains, rule counts or
    jumps differ from what the last sync wrote. Either way the full sync puts everything back."""
    space = make_netns("tamper")
    mode = IptablesMode(space, "node-1", CIDR, backend)
    sync(mode, True, WEB, EMPTY)
    healthy = save(space, backend)
    assert not asyncio.run(mode.tampered())
    chain = iptables.service_chain(ports(WEB)[0])
    for args in IPTABLES_FAULTS[fault]:
        argv = [f"iptables-{backend}", *(a.format(chain=chain) for a in args)]
        subprocess.run(netns.command(space, argv), check=True, capture_output=True)
    assert save(space, backend) != healthy and asyncio.run(mode.tampered())
    assert sync(mode, True, WEB, EMPTY)
    assert save(space, backend) == healthy and not asyncio.run(mode.tampered())
