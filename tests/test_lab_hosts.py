"""A lab whose control plane runs as on real machines: `netplane server` in its own emulated host on
the underlay, and `netplane agent` as a separate process in each node, joined with a bootstrap
token over TLS (conftest's shared `hosts` lab; test_lab.py's paths and two of test_trace.py's traces
run on it too). A wrong token and a second agent for a node are refused.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import SHARED_LABS, on_labs
from labtools import DNS_PODS, cli, eventually, get, http, kubectl, pod_ip
from netplane import names
from netplane.api import auth, kubeconfig, tls
from netplane.kernel import netns
from netplane.lab.state import LabState

CONTROL_PLANE_IP = "172.30.0.3"
RESYNC = SHARED_LABS["hosts"][1]["nodeResyncSeconds"]  # the agents' nodeResyncSeconds in this lab
DOMAIN = SHARED_LABS["hosts"][1]["network"]["dnsDomain"]  # this lab's cluster domain: the server's and the agents' flags carry it
pytestmark = on_labs("hosts")


def processes_in(space: str) -> dict[int, str]:
    """pid -> command line of the processes in a namespace."""
    return {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for pid in netns.pids_in([space])}


def test_server_and_each_agent_are_processes_of_their_own_hosts(lab):
    server = [c for c in processes_in(names.control_plane_netns(lab)).values() if " server " in f"{c} "]
    assert len(server) == 1 and f"--listen {CONTROL_PLANE_IP}:6443" in server[0]
    for node in ("node-1", "node-2"):
        agents = [c for c in processes_in(names.node_netns(lab, node)).values() if " agent " in c]
        assert len(agents) == 1 and f"--node {node}" in agents[0] and f"https://{CONTROL_PLANE_IP}:6443" in agents[0]
        assert "--token" in agents[0] and f"--resync-seconds {RESYNC}" in agents[0]


def test_the_api_speaks_tls_with_the_labs_ca_and_wants_a_token(lab):
    ca = LabState(lab).pki / "ca.crt"
    url = f"https://{CONTROL_PLANE_IP}:6443/api/v1/nodes"
    anonymous = cli(lab, "exec", "underlay/client", "--", "curl", "-sS", "--cacert", str(ca), "-o", "/dev/null",
                    "-w", "%{http_code}", url)
    assert anonymous.stdout == "401"
    unverified = cli(lab, "exec", "underlay/client", "--", "curl", "-sS", url)
    assert unverified.returncode != 0  # the lab's own CA, unknown to the system


def agent_from_client(lab: str, node: str, state: Path, *joining: str) -> subprocess.Popen:
    """A `netplane agent` on the underlay client, as a third machine joining (with --token or
    --kubeconfig in `joining`)."""
    argv = [str(Path(sys.executable).with_name("netplane")), "agent", *joining, "--node", node,
            "--state-dir", str(state), "--netns-prefix", names.lab_prefix(lab)]
    return subprocess.Popen(netns.command(names.client_netns(lab), argv), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def output_of_a_retrying_agent(lab: str, agent: subprocess.Popen, node: str) -> str:
    """What an agent that cannot join said in 4 s, during which it must keep trying and must not
    have registered its node."""
    try:
        time.sleep(4)
        assert agent.poll() is None  # still trying, with backoff
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
    assert node not in {n["metadata"]["name"] for n in get(lab, "nodes")["items"]}
    return agent.communicate(timeout=10)[0]


def by_token(token: str) -> tuple[str, ...]:
    return ("--server", f"https://{CONTROL_PLANE_IP}:6443", "--token", token)


def test_a_wrong_token_is_refused_with_the_reason_and_retried(lab, tmp_path):
    agent = agent_from_client(lab, "intruder", tmp_path, *by_token(auth.new_bootstrap_token()))
    output = output_of_a_retrying_agent(lab, agent, "intruder")
    assert output.count("knows no bootstrap token") >= 2, output


def test_an_agent_given_a_wrong_ca_says_so_and_retries(lab, tmp_path):
    token = (LabState(lab).dir / "join-token").read_text().strip()
    other = tls.make_ca(tmp_path / "other-ca", "other").read_bytes()
    config = tmp_path / "agent.kubeconfig"
    kubeconfig.write(config, "wrong-ca", kubeconfig.Connection(f"https://{CONTROL_PLANE_IP}:6443", token, other))
    agent = agent_from_client(lab, "stray", tmp_path / "state", "--kubeconfig", str(config))
    output = output_of_a_retrying_agent(lab, agent, "stray")
    assert output.count(f"cannot trust https://{CONTROL_PLANE_IP}:6443") >= 2, output
    assert "certificate-authority-data" in output and "Traceback" not in output, output


def test_a_second_agent_for_a_node_is_refused(lab, tmp_path):
    token = (LabState(lab).dir / "join-token").read_text().strip()
    agent = agent_from_client(lab, "node-1", tmp_path, *by_token(token))
    output = agent.communicate(timeout=30)[0]
    assert agent.returncode != 0
    assert "node node-1 is held by agent" in output, output


def test_token_create_prints_a_join_command_that_the_server_accepts(lab):
    printed = cli(lab, "token", "create", check=True).stdout.split()
    assert printed[:3] == ["netplane", "agent", "--server"] and printed[4] == "--token"
    token = printed[5]
    auth.split_bootstrap(token)
    eventually(lambda: cli(lab, "exec", "underlay/client", "--", "curl", "-sS", "-k", "-o", "/dev/null", "-w",
                           "%{http_code}", "-H", f"Authorization: Bearer {token}",
                           f"https://{CONTROL_PLANE_IP}:6443/api/v1/nodes").stdout == "200")


def nft_in(space: str, script: str) -> None:
    subprocess.run(netns.command(space, ["nft", "-f", "-"]), input=script, text=True, check=True)


def has_rules_for(lab: str, node: str, ip: str) -> bool:
    ruleset = subprocess.run(netns.command(names.node_netns(lab, node), ["nft", "list", "table", "ip", "kube-proxy"]),
                             capture_output=True, text=True, check=True).stdout
    return ip in ruleset


def test_an_agent_cut_off_from_the_api_keeps_its_data_plane_and_catches_up_after(lab, tmp_path):
    """node-1 loses the API server (its packets to 6443 are rejected, the server's dropped) while the
    server and node-2 go on: node-1's pods, overlay and rules stay as they are and keep serving; a
    Service made meanwhile reaches node-2 only; once the path is back node-1 catches up."""
    node1 = names.node_netns(lab, "node-1")
    web = get(lab, "services", "web")["spec"]["clusterIP"]
    nft_in(node1, f"""table inet np-test-cut {{
        chain out {{ type filter hook output priority 0; ip daddr {CONTROL_PLANE_IP} tcp dport 6443 reject with tcp reset; }}
        chain in {{ type filter hook input priority 0; ip saddr {CONTROL_PLANE_IP} tcp sport 6443 drop; }}
    }}""")
    try:
        manifest = tmp_path / "late.yaml"
        manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
                                            "spec": {"selector": {"app": "web"},
                                                     "ports": [{"port": 80, "targetPort": 8080}]}}))
        cli(lab, "apply", "-f", str(manifest), check=True)
        late = get(lab, "services", "late")["spec"]["clusterIP"]
        eventually(lambda: has_rules_for(lab, "node-2", late))
        time.sleep(3)  # long enough for node-1's agent to have heard of it, had it been able to
        assert not has_rules_for(lab, "node-1", late)
        # node-1's data plane, cut off from the API: a Service, the overlay, its own pods
        answers = {http(lab, "client", f"http://{web}/hostname").stdout for _ in range(12)}
        assert answers == {"web-1", "web-2"}, answers
        assert http(lab, "client", f"http://{pod_ip(lab, 'web-2')}:8080/hostname").stdout == "web-2"
        assert {p["metadata"]["name"]: p["status"]["phase"] for p in get(lab, "pods")["items"]}["client"] == "Running"
    finally:
        nft_in(node1, "delete table inet np-test-cut")
    eventually(lambda: has_rules_for(lab, "node-1", late), timeout=30)
    assert eventually(lambda: http(lab, "client", f"http://{late}/hostname").stdout in {"web-1", "web-2"})
    cli(lab, "delete", "services", "late", check=True)


def test_an_overlay_route_removed_behind_the_agents_back_comes_back_with_no_api_change(lab):
    node1 = names.node_netns(lab, "node-1")
    cidr = get(lab, "nodes", "node-2")["spec"]["podCIDR"]

    def routes() -> str:
        return subprocess.run(netns.command(node1, ["ip", "route"]), capture_output=True, text=True).stdout
    assert f"{cidr} via" in routes()
    subprocess.run(netns.command(node1, ["ip", "route", "del", cidr]), check=True)
    assert f"{cidr} via" not in routes()
    eventually(lambda: f"{cidr} via" in routes(), timeout=RESYNC + 5, interval=0.2)  # within the resync period
    assert http(lab, "client", f"http://{pod_ip(lab, 'web-2')}:8080/hostname").stdout == "web-2"


def test_status_shows_each_members_and_each_agents_health(lab):
    shown = cli(lab, "status", check=True).stdout
    lines = shown.splitlines()
    member = next(line.split() for line in lines if line.startswith("cp-1"))
    assert member[:3] == ["cp-1", CONTROL_PLANE_IP, "ok"], shown
    agents = lines[lines.index("node agents:") + 1:]
    assert agents[0].split() == ["NODE", "AGENT", "LEASE", "RENEWED", "PODS", "RUNNING", "HEALTH"]
    rows = {row.split()[0]: row.split() for row in agents[1:]}
    assert set(rows) == {"node-1", "node-2"}, shown
    for node, row in rows.items():
        # the holder of the node's Lease is the agent's identity, kept in its state directory
        assert row[1] == (LabState(lab).node_dir(node) / "agent-id").read_text().strip(), shown
        assert row[3] == "ago" and row[-1] == "ok", shown
    running = [tuple(map(int, row[4].split("/"))) for row in rows.values()]
    assert all(r == t for r, t in running) and sum(r for r, _ in running) == 4 + DNS_PODS, shown


def test_pods_reach_the_api_in_its_own_host_and_cluster_dns_answers(lab):
    """The control-plane host routes to each node's podCIDR: in-cluster clients (the coredns pods
    first) reach the API through the kubernetes Service, so names resolve in this mode too, in the
    lab's own cluster domain: the pods' search path, the Corefile's zone, the API certificate's name
    and the ServiceAccount tokens' issuer all carry it."""
    assert kubectl(lab, "exec", "client", "--", "getent", "hosts", "web").stdout.split()[1] == f"web.default.svc.{DOMAIN}"
    resolv = kubectl(lab, "exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert f"search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}" in resolv, resolv
    assert kubectl(lab, "exec", "client", "--", "getent", "hosts", "web.default.svc.cluster.local",
                   check=False).returncode == 2  # not this cluster's domain: no such name
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    answer = kubectl(lab, "exec", "client", "--", "sh", "-c",
                     f'curl -sS --cacert {account}/ca.crt -H "Authorization: Bearer $(cat {account}/token)" '
                     f"https://kubernetes.default.svc.{DOMAIN}/api").stdout
    assert json.loads(answer)["kind"] == "APIVersions", answer  # the name verified, the token's issuer accepted
    routes = subprocess.run(["ip", "-n", names.control_plane_netns(lab, 1), "route"], capture_output=True,
                            text=True, check=True).stdout
    for node in ("node-1", "node-2"):
        cidr = get(lab, "nodes", node)["spec"]["podCIDR"]
        address = next(a["address"] for a in get(lab, "nodes", node)["status"]["addresses"] if a["type"] == "InternalIP")
        assert f"{cidr} via {address} dev eth0" in routes, routes


def test_kubectl_exec_logs_and_the_kubelet_port_reach_each_agent_over_the_underlay(lab):
    """The server, in its own host, asks each node's agent on its kubelet port across the underlay."""
    assert kubectl(lab, "exec", "web-2", "--", "hostname").stdout == "web-2\n"
    assert kubectl(lab, "logs", "web-2").returncode == 0
    summary = yaml.safe_load(kubectl(lab, "get", "--raw", "/api/v1/nodes/node-2/proxy/stats/summary").stdout)
    assert summary["node"]["nodeName"] == "node-2" and "web-2" in {p["podRef"]["name"] for p in summary["pods"]}
