"""NetworkPolicy on a running lab, in both proxy modes (a few cases with the reference CNI too):
upstream's netpol model (namespaces x, y, z; pods a, b, c serving TCP and UDP on 80 and 81)
applied with kubectl, every pair of pods probed with
real packets as upstream's e2e tests probe them (a TCP connect, a UDP question that needs its
answer, one second each), the truth table compared with the case's; the node's own traffic (kubelet
probes) passes a deny-all, and traffic to a Service is judged on the pod it reaches."""
from __future__ import annotations

import itertools
import json
import subprocess
import time

import pytest

from conftest import on_labs
from labtools import cli, kubectl, on_host
from support.netpol import CASES, EVERY, NAMESPACES, PORTS, Case, namespace, policy, port_name
from netplane import names

PROXY_MODES = on_labs("nftables", "iptables")  # both proxy modes, with netplane's CNI
PROBER = """
import json, socket, sys, threading
found = {}
def probe(key, ip, protocol, port):
    try:
        if protocol == "UDP":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1.0); s.sendto(b"hostname", (ip, port)); s.recvfrom(512)
        else:
            socket.create_connection((ip, port), 1.0).close()
        found[key] = True
    except OSError:
        found[key] = False
threads = [threading.Thread(target=probe, args=t) for t in json.loads(sys.argv[1])]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(found))
"""
LAB_CASES = [c for c in CASES if c.name in (
    "default-deny-all", "podSelector and namespaceSelector (one peer)", "ports: only 81 opens",
    "ingress from a namespace on one named port", "egress on one named port", "egress denied on the client although "
    "the server allows", "ingress by protocol: TCP only", "a port range (endPort)", "ingress from an updated pod",
    "the except clause of an egress CIDR block", "SCTP only does not open TCP", "ingress from an updated namespace (Exists)",
    "an IPv6 block admits nothing in an IPv4 cluster")]
BRIDGE_CASES = [c for c in LAB_CASES if c.name in ("default-deny-all", "podSelector and namespaceSelector (one peer)",
                                                   "egress on one named port")]


def listed(*docs: dict | list | tuple) -> str:
    """Objects as one JSON List for kubectl: YAML would do, but Go reads a namespace called y as true."""
    items = [d for doc in docs for d in (doc if isinstance(doc, (list, tuple)) else [doc])]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def model_pod(ns: str, name: str) -> dict:
    ports = [{"name": port_name(p, proto), "containerPort": p, "protocol": proto} for p, proto in PORTS]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": {"containers": [{"name": "cont", "image": "netplane/echo", "ports": ports}]}}


@pytest.fixture(scope="module")
def model(lab) -> dict[str, dict]:
    """The model's pods on the lab (name -> its Pod), removed afterwards."""
    docs = [namespace(ns) for ns in NAMESPACES] + [model_pod(*key.split("/")) for key in EVERY]
    kubectl(lab, "apply", "-f", "-", stdin=listed(docs))
    try:
        for ns in NAMESPACES:
            kubectl(lab, "wait", "--for=condition=Ready", "pod", "--all", "-n", ns, "--timeout=120s")
        yield {key: json.loads(kubectl(lab, "get", "pod", "-n", key.split("/")[0], key.split("/")[1],
                                       "-o", "json").stdout) for key in EVERY}
    finally:
        kubectl(lab, "delete", "namespace", *NAMESPACES, "--wait=false", check=False)


def probe(lab: str, pods: dict[str, dict], protocol: str, port: int,
          targets: dict[str, str] | None = None) -> dict[tuple[str, str], bool]:
    """Every pod's new connection to every other pod's address (or targets: pod -> address to use)."""
    running = {}
    for source in EVERY:
        wanted = [[d, (targets or {}).get(d) or pods[d]["status"]["podIP"], protocol, port]
                  for d in EVERY if d != source]
        space = names.pod_netns(names.lab_prefix(lab), *source.split("/"))
        running[source] = subprocess.Popen(["ip", "netns", "exec", space, "python3", "-c", PROBER, json.dumps(wanted)],
                                           stdout=subprocess.PIPE, text=True)
    return {(s, d): ok for s, proc in running.items() for d, ok in json.loads(proc.communicate(timeout=30)[0]).items()}


def until_blocked(lab: str, source: str, address: str, port: int = 80) -> None:
    """Return once a new TCP connection from the pod to the address no longer gets through (tried
    every 50 ms, each attempt given 100 ms; at most 5 s)."""
    script = (f"import socket, time\nstarted = time.monotonic()\nwhile time.monotonic() - started < 5:\n"
              f"    try:\n        socket.create_connection(('{address}', {port}), 0.1).close()\n"
              f"    except OSError:\n        break\n    time.sleep(0.05)")
    space = names.pod_netns(names.lab_prefix(lab), *source.split("/"))
    subprocess.run(["ip", "netns", "exec", space, "python3", "-c", script], check=True, timeout=30)


def matches(lab: str, pods: dict[str, dict], protocol: str, port: int, expected: dict) -> list[str]:
    """The pairs whose fate differs from expected; probed again (up to 3 s) while any does, as the
    policy reaches the nodes within a second and upstream probes a second time."""
    deadline = time.monotonic() + 3
    while True:
        found = probe(lab, pods, protocol, port)
        wrong = [f"{s} -> {d}: {'allowed' if ok else 'blocked'}" for (s, d), ok in sorted(found.items())
                 if ok != expected[(s, d)]]
        if not wrong or time.monotonic() > deadline:
            return wrong


def relabel(lab: str, case: Case, pods: dict[str, dict], undo: bool = False) -> None:
    """Give the case's pods and namespaces their extra labels (or take them away again)."""
    def change(labels: dict[str, str]) -> list[str]:
        return [f"{k}-" for k in labels] if undo else [f"{k}={v}" for k, v in labels.items()]

    for key, labels in case.pod_labels.items():
        ns, name = key.split("/")
        kubectl(lab, "label", "pod", "-n", ns, name, "--overwrite", *change(labels))
    for ns, labels in case.namespace_labels.items():
        kubectl(lab, "label", "namespace", ns, "--overwrite", *change(labels))


@PROXY_MODES
@pytest.mark.parametrize("case", LAB_CASES, ids=[c.name for c in LAB_CASES])
def test_real_packets_meet_upstreams_truth_table(lab, model, case):
    truth_table(lab, model, case)


@on_labs("reference-cni")
@pytest.mark.parametrize("case", BRIDGE_CASES, ids=[c.name for c in BRIDGE_CASES])
def test_real_packets_meet_upstreams_truth_table_with_the_reference_cni(lab, model, case):
    """The reference bridge plugin's node: pods on one bridge reach each other through br_netfilter too."""
    truth_table(lab, model, case)


def truth_table(lab: str, model: dict[str, dict], case: Case) -> None:
    kubectl(lab, "apply", "-f", "-", stdin=listed(case.objects({k: p["status"]["podIP"] for k, p in model.items()})))
    relabel(lab, case, model)
    try:
        for protocol, port, expected in case.probes:
            assert matches(lab, model, protocol, port, expected.allowed) == [], f"{protocol} {port}"
    finally:
        relabel(lab, case, model, undo=True)
        for ns in NAMESPACES:
            kubectl(lab, "delete", "networkpolicy", "--all", "-n", ns)
    everyone = {pair: True for pair in itertools.permutations(EVERY, 2)}
    assert matches(lab, model, "TCP", 80, everyone) == []  # deleted: open again


@PROXY_MODES
def test_an_update_and_a_delete_take_effect_and_the_node_and_services_are_judged_rightly(lab, model):
    """Upstream's "should enforce updated policy" and "should stop enforcing policies after they are
    deleted"; meanwhile kubelet probes and the node's own connections pass a deny-all, and a
    connection to a pod's Service is judged on the pod (after the Service's DNAT)."""
    allow = policy("x", "allow-all-mutate-to-deny-all", types=["Ingress"], ingress=[{}])
    kubectl(lab, "apply", "-f", "-", stdin=listed(allow))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s-x-a", "namespace": "x"},
               "spec": {"selector": {"pod": "a"}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}
    kubectl(lab, "apply", "-f", "-", stdin=listed(service))
    try:
        everyone = {pair: True for pair in itertools.permutations(EVERY, 2)}
        assert matches(lab, model, "TCP", 80, everyone) == []
        began = time.monotonic()
        kubectl(lab, "apply", "-f", "-", stdin=listed({**allow, "spec": {**allow["spec"], "ingress": []}}))
        until_blocked(lab, "y/a", model["x/a"]["status"]["podIP"])
        seconds = time.monotonic() - began
        print(f"\npolicy update enforced {seconds * 1000:.0f} ms after kubectl apply began (kubectl's own start included)")
        assert seconds < 1.0
        denied = {(s, d): not d.startswith("x/") for s, d in itertools.permutations(EVERY, 2)}
        assert matches(lab, model, "TCP", 80, denied) == []
        cluster_ip = json.loads(kubectl(lab, "get", "service", "-n", "x", "s-x-a", "-o", "json").stdout)["spec"]["clusterIP"]
        via_service = probe(lab, model, "TCP", 80, {"x/a": cluster_ip})
        assert not any(ok for (s, d), ok in via_service.items() if d == "x/a")
        x_a = model["x/a"]
        node = on_host(lab, f"node/{x_a['spec']['nodeName']}", "python3", "-c",
                       f"import socket; socket.create_connection(('{x_a['status']['podIP']}', 80), 1).close()")
        assert node.returncode == 0, node.stderr  # the pod's own node: always allowed
        kubectl(lab, "delete", "networkpolicy", "-n", "x", "allow-all-mutate-to-deny-all")
        assert matches(lab, model, "TCP", 80, everyone) == []
        via_service = probe(lab, model, "TCP", 80, {"x/a": cluster_ip})
        assert all(ok for (s, d), ok in via_service.items() if d == "x/a")
    finally:
        kubectl(lab, "delete", "networkpolicy", "--all", "-n", "x")
        kubectl(lab, "delete", "service", "-n", "x", "s-x-a")


@PROXY_MODES
def test_kubelet_probes_keep_a_pod_ready_behind_a_deny_all(lab, model):
    probed = {**model_pod("x", "probed"), "spec": {"containers": [{
        "name": "cont", "image": "netplane/echo", "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}}
    kubectl(lab, "apply", "-f", "-", stdin=listed([policy("x", "deny-all", types=["Ingress", "Egress"],
                                                                      ingress=[], egress=[]), probed]))
    try:
        kubectl(lab, "wait", "--for=condition=Ready", "pod", "-n", "x", "probed", "--timeout=60s")
        time.sleep(2.5)  # two more probes behind the policy
        conditions = json.loads(kubectl(lab, "get", "pod", "-n", "x", "probed", "-o", "json").stdout)["status"]["conditions"]
        assert {c["type"]: c["status"] for c in conditions}["Ready"] == "True"
    finally:
        kubectl(lab, "delete", "pod", "-n", "x", "probed", "--wait=false")
        kubectl(lab, "delete", "networkpolicy", "-n", "x", "deny-all")


@PROXY_MODES
def test_explain_table_and_trace_say_which_policy_decides(lab, model):
    """`netplane policy explain` and `policy table` answer from the objects what the packets meet;
    `netplane trace` names the policy that accepted a probe and says why one was dropped."""
    case = next(c for c in CASES if c.name == "a pod of another namespace by podSelector and namespaceSelector")
    kubectl(lab, "apply", "-f", "-", stdin=listed(case.objects({})))
    try:
        _, _, expected = case.probes[0]
        table = json.loads(cli(lab, "policy", "table", "x", "y", "z", "-o", "json", check=True).stdout)
        assert {(s, d): ok for s, row in table["allowed"].items() for d, ok in row.items()} == expected.allowed
        allowed = cli(lab, "policy", "explain", "y/a", "x/a", "--port", "80")
        assert allowed.returncode == 0 and "allowed by x/allow-ns-y-pod-a-via-namespace-pod-selector" in allowed.stdout
        dropped = json.loads(cli(lab, "policy", "explain", "z/a", "x/a", "-o", "json").stdout)
        assert not dropped["allowed"] and dropped["judgements"][-1]["isolatedBy"] == [
            "x/allow-ns-y-pod-a-via-namespace-pod-selector"]
        x_a = f"{model['x/a']['status']['podIP']}:80"
        traced = json.loads(cli(lab, "trace", "a", x_a, "-n", "z", "-o", "json").stdout)
        assert traced["reason"].startswith("dropped by ingress of x/a: no policy selecting x/a allows from z/a on TCP 80")
        traced = json.loads(cli(lab, "trace", "a", x_a, "-n", "y", "-o", "json").stdout)
        assert traced["reason"] is None and any(
            r["verdict"] == "accept" and r["policy"] == "x/allow-ns-y-pod-a-via-namespace-pod-selector (ingress)"
            for r in traced["rules"])
    finally:
        kubectl(lab, "delete", "networkpolicy", "--all", "-n", "x")
