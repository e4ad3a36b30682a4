"""The reachability matrix: every kind of source against every address of Services with each traffic
policy, in both proxy modes, held to a table written once from upstream kube-proxy's rules.

Lab (one per proxy mode, named t<hex>, brought down by the fixture even when a test fails): the
default lab plus examples/traffic-policies.yaml, the README's example: pod `ep` (the only endpoint,
on node-1) and five LoadBalancer Services selecting it (port 80 -> 8080), each with an external IP
(172.30.2.1-5) that the underlay client routes through node-2, as an administrator routes
externalIPs, and the Service range through node-2 too:

    m-cluster   externalTrafficPolicy Cluster, internalTrafficPolicy Cluster
    m-local     externalTrafficPolicy Local
    m-itp       internalTrafficPolicy Local
    m-both      both Local
    m-none      no endpoints (its selector matches nothing)

Sources: ep itself (the hairpin case), client (a pod on the endpoint's node), web-2 (a pod on the
other node), node-1 (the endpoint's node), node-2, and the underlay client (outside the cluster).
A cell is the address the endpoint saw as the client, or `refused` (REJECT), or `no answer`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labtools import cli, default_lab_file, eventually, get, running_lab
from netplane.lab import model

EXAMPLE = Path(__file__).parents[1] / "examples" / "traffic-policies.yaml"
SOURCES = ("ep", "client", "web-2", "node/node-1", "node/node-2", "underlay/client")
SERVICES = ("m-cluster", "m-local", "m-itp", "m-both", "m-none")
DESTINATIONS = ("ClusterIP", "NodePort node/node-1", "NodePort node/node-2", "LoadBalancer", "externalIP")

# What the endpoint sees: a pod's own address (not masqueraded: "ep", "client", "web-2"), a node's
# address the source was masqueraded to ("node-1 cni0" toward an endpoint on its bridge, "node-2
# flannel.1" toward one across the overlay), a node's own eth0 address, the underlay client's;
# or REFUSED (a REJECT rule: ICMP port unreachable) or NONE (dropped, or sent where nothing answers).
REFUSED, NONE = "refused", "no answer"
N1, N2, N2_ETH0, UC = "node-1 cni0", "node-2 flannel.1", "node-2 eth0", "underlay/client"
EITHER = (N1, N2)  # the load balancer spreads flows over both nodes (ECMP): either masquerades

# The expected matrix, from upstream's proxiers (pkg/proxy/iptables and pkg/proxy/nftables,
# syncProxyRules) and CategorizeEndpoints; columns in SOURCES order.
EXPECTED: dict[str, dict[str, tuple]] = {
    "m-cluster": {
        # the ClusterIP rule masquerades what does not come from the cluster CIDR (nodes, outside);
        # ep reaching itself is masqueraded by its endpoint's `saddr == endpoint` (hairpin) rule
        "ClusterIP": (N1, "client", "web-2", N1, N2, N2),
        # externalTrafficPolicy Cluster: "masquerade traffic for external destinations", always
        "NodePort node/node-1": (N1, N1, N1, N1, N1, N1),
        "NodePort node/node-2": (N2, N2, N2, N2, N2, N2),
        # pods and nodes are translated by their own node; the underlay client by the node ECMP chose
        "LoadBalancer": (N1, N1, N2, N1, N2, EITHER),
        "externalIP": (N1, N1, N2, N1, N2, N2),  # the client routes external IPs through node-2
    },
    "m-local": {
        "ClusterIP": (N1, "client", "web-2", N1, N2, N2),
        # node-1 has the endpoint: pods short-circuit unmasqueraded ("short-circuit pod traffic"),
        # the node itself is masqueraded ("masquerade local traffic"), other clients keep their
        # address (node-2's own eth0 address, the underlay client's): the point of Local
        "NodePort node/node-1": (N1, "client", "web-2", N1, N2_ETH0, UC),
        # node-2 has no endpoint. Pods short-circuit to the Cluster policy's endpoints: web-2 is
        # answered; ep is masqueraded (hairpin rule, remote endpoint too); client is not answered,
        # because its packet, DNATed on node-2 but not masqueraded, comes back to ep on client's
        # own bridge and ep answers it directly, past node-2's un-DNAT (the same on a cluster whose
        # CNI does not masquerade pod -> node traffic). node-2 itself short-circuits as local
        # traffic (the case that was dropped in nftables mode). node-1 and the underlay client are
        # neither a pod nor local to node-2: Local policy, no local endpoint, dropped
        "NodePort node/node-2": (N2, NONE, "web-2", NONE, N2, NONE),
        # the cloud sends a Local LoadBalancer's traffic only to nodes with a ready local endpoint
        "LoadBalancer": (N1, "client", "web-2", N1, N2, UC),
        # through node-2, which has no endpoint: dropped for the underlay client; node-2's own traffic
        # short-circuits, which nftables mode allows since its endpoint checks run after DNAT
        # (kubernetes#131765, fixed by #132456)
        "externalIP": (N1, "client", "web-2", N1, N2, NONE),
    },
    "m-itp": {
        # internalTrafficPolicy Local: ClusterIP traffic only to this node's endpoints, so dropped
        # on node-2 ("has no local endpoints"), for web-2, node-2 and the client routed through it
        "ClusterIP": (N1, "client", NONE, N1, NONE, NONE),
        # external traffic keeps externalTrafficPolicy Cluster: any endpoint, masqueraded
        "NodePort node/node-1": (N1, N1, N1, N1, N1, N1),
        "NodePort node/node-2": (N2, N2, N2, N2, N2, N2),
        "LoadBalancer": (N1, N1, N2, N1, N2, EITHER),
        "externalIP": (N1, N1, N2, N1, N2, N2),
    },
    "m-both": {
        "ClusterIP": (N1, "client", NONE, N1, NONE, NONE),
        "NodePort node/node-1": (N1, "client", "web-2", N1, N2_ETH0, UC),
        # the short-circuit goes to the Cluster policy's chain (KUBE-SVC- / service-), which
        # upstream keeps for a Service with external addresses even with internalTrafficPolicy
        # Local (UsesClusterEndpoints): web-2 and node-2 reach ep from node-2
        "NodePort node/node-2": (N2, NONE, "web-2", NONE, N2, NONE),
        "LoadBalancer": (N1, "client", "web-2", N1, N2, UC),
        "externalIP": (N1, "client", "web-2", N1, N2, NONE),
    },
    "m-none": {  # no endpoint anywhere: every address is rejected ("has no endpoints")
        "ClusterIP": (REFUSED,) * 6,
        "NodePort node/node-1": (REFUSED,) * 6,
        "NodePort node/node-2": (REFUSED,) * 6,
        "LoadBalancer": (REFUSED,) * 6,
        "externalIP": (REFUSED,) * 6,
    },
}
# Where upstream's two proxiers themselves differ. iptables mode rejects a Service's external and
# load-balancer IPs in KUBE-EXTERNAL-SERVICES, which only INPUT and FORWARD jump to: a node's own
# connection is not rejected, leaves by its default route and is not answered. nftables mode
# checks no-endpoint-services in filter-output as well.
MODE_EXPECTED = {"iptables": {("m-none", "LoadBalancer", "node/node-1"): NONE,
                              ("m-none", "externalIP", "node/node-1"): NONE,
                              ("m-none", "LoadBalancer", "node/node-2"): NONE,
                              ("m-none", "externalIP", "node/node-2"): NONE}}


def expected(mode: str, service: str, destination: str, source: str) -> str | tuple:
    found = MODE_EXPECTED.get(mode, {}).get((service, destination, source))
    return found if found is not None else EXPECTED[service][destination][SOURCES.index(source)]


def manifests() -> tuple[dict, ...]:
    docs = tuple(yaml.safe_load_all(EXAMPLE.read_text()))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == list(SERVICES)
    return docs


@pytest.fixture(scope="module", params=model.IMPLEMENTED_PROXY_MODES)
def matrix_lab(request, tmp_path_factory):
    """(proxy mode, lab) with the matrix's pod and Services, and the underlay client's routes."""
    # no add-ons: the matrix is about kube-proxy's rules, and the suite's time is better spent elsewhere
    path = default_lab_file(tmp_path_factory.mktemp(request.param), request.param, extra=manifests(), addons=[])
    with running_lab(path, pods=5) as name:
        for cidr in ("10.96.0.0/16", "172.30.2.0/24"):  # an administrator's routes, through node-2
            cli(name, "exec", "underlay/client", "--", "ip", "route", "add", cidr, "via", "172.30.0.12", check=True)
        balanced = lambda: all((get(name, "services", s).get("status", {}).get("loadBalancer") or {}).get("ingress")  # noqa: E731
                               for s in SERVICES)
        eventually(balanced, timeout=30)
        yield request.param, name


def address_of(lab: str, where: str, device: str) -> str:
    """The IPv4 address the kernel gives `device` in a lab namespace."""
    out = cli(lab, "exec", where, "--", "ip", "-4", "-o", "addr", "show", "dev", device, check=True).stdout
    return out.split()[3].split("/")[0]


def addresses(lab: str) -> dict[str, str]:
    """Each name the expected table uses -> its address, read from the kernel and the API."""
    found = {name: get(lab, "pods", name)["status"]["podIP"] for name in ("ep", "client", "web-2")}
    found[N1] = address_of(lab, "node/node-1", "cni0")
    found[N2] = address_of(lab, "node/node-2", "flannel.1")
    found[N2_ETH0] = address_of(lab, "node/node-2", "eth0")
    found[UC] = address_of(lab, "underlay/client", "eth0")
    return found


def run_matrix(lab: str) -> dict[tuple[str, str, str], dict]:
    """(service, destination, source) -> the cell of `netplane reach -o json`."""
    argv = ["reach", *SERVICES, *(a for s in SOURCES for a in ("--from", s)), "-o", "json"]
    cells = json.loads(cli(lab, *argv, check=True).stdout)
    return {(c["service"].split("/")[1].split(":")[0], c["destination"], c["source"].removeprefix("default/")): c
            for c in cells}


def mismatches(mode: str, lab: str) -> list[str]:
    where = addresses(lab)
    wrong = []
    for (service, destination, source), got in sorted(run_matrix(lab).items()):
        want = expected(mode, service, destination, source)
        allowed = want if isinstance(want, tuple) else (want,)
        seen = got["result"] if got["result"] != "answered" else got["seen"]
        if seen not in {where.get(a, a) for a in allowed}:
            named = got["seen_as"] or got["seen"] or got["result"]
            wrong.append(f"{service} {destination} from {source}: want {' or '.join(allowed)}, got {named} "
                         f"({got['detail'] or got['result']})")
    return wrong


def test_every_cell_is_what_upstream_kube_proxy_does(matrix_lab):
    mode, lab = matrix_lab
    assert eventually(lambda: cli(lab, "exec", "node/node-2", "--", "curl", "-sS", "-m", "2",
                                  f"http://{get(lab, 'services', 'm-local')['spec']['clusterIP']}/hostname").stdout == "ep")
    wrong = mismatches(mode, lab)
    if wrong:  # a cell that disagrees once is asked again, so that a late sync is not taken for a wrong rule
        wrong = mismatches(mode, lab)
    assert not wrong, f"{mode} mode departs from upstream in {len(wrong)} cells:\n" + "\n".join(wrong)
    assert len(run_matrix(lab)) == len(SERVICES) * len(DESTINATIONS) * len(SOURCES)


def test_the_expected_table_covers_every_cell_once():
    assert set(EXPECTED) == set(SERVICES)
    for service, rows in EXPECTED.items():
        assert tuple(rows) == DESTINATIONS, service
        assert all(len(row) == len(SOURCES) for row in rows.values()), service
    for mode, cells in MODE_EXPECTED.items():
        assert mode in model.IMPLEMENTED_PROXY_MODES
        assert all(EXPECTED[s][d][SOURCES.index(src)] != want for (s, d, src), want in cells.items())


def test_reach_prints_one_table_per_service_and_names_what_it_saw(matrix_lab):
    mode, lab = matrix_lab
    out = cli(lab, "reach", "svc/m-local", "m-none:80", "--from", "client", "--from", "node/node-2", check=True).stdout
    local, none = out.split("\n\n")
    lines = local.splitlines()
    assert lines[0] == "default/m-local:80"
    assert lines[1].split() == ["DESTINATION", "ADDRESS", "client", "node-2"]
    node_port = get(lab, "services", "m-local")["spec"]["ports"][0]["nodePort"]
    row = next(line for line in lines if line.startswith("NodePort node/node-2"))
    assert row.split("   ")[1:] == [f"172.30.0.12:{node_port}", "no answer", "node-2 flannel.1"]
    refusals = [expected(mode, "m-none", d, s) for d in DESTINATIONS for s in ("client", "node/node-2")].count(REFUSED)
    assert none.splitlines()[0] == "default/m-none:80" and none.count("refused") == refusals
    # without --from: every node, the underlay client, then the first Running pod on each node
    header = cli(lab, "reach", "m-cluster", "--timeout", "1", check=True).stdout.splitlines()[1].split()
    assert header[:6] == ["DESTINATION", "ADDRESS", "node-1", "node-2", "underlay/client", "client"]
    assert len(header) == 7 and header[6] in ("duo", "web-2")


def test_reach_refuses_what_it_cannot_ask(matrix_lab):
    _, lab = matrix_lab
    missing = cli(lab, "reach", "nosuch")
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    udp_only = cli(lab, "reach", "web:udp")
    assert udp_only.returncode == 1 and "is UDP, not tcp" in udp_only.stderr
    bad_source = cli(lab, "reach", "m-local", "--from", "node/node-9")
    assert bad_source.returncode == 1 and "no node 'node-9'" in bad_source.stderr
