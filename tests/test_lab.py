"""The whole path, end to end, on the default lab: the four paths of DESIGN.md and the Service
semantics of kube-proxy, in each proxy mode.

Conventions: the shared default lab of each proxy mode (conftest's `lab`: 2 nodes, demo app: web-1
on node-1, web-2 on node-2, client on node-1, duo with two containers, Service web 80 -> http 8080
and 81/UDP -> 8081), named t<hex>, brought down by the fixture even when a test fails; the paths also
run on the reference CNI's lab and the hosts control plane's. Tests that change objects create their
own and leave the demo app as it was.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from conftest import SHARED_LABS, on_labs
from labtools import apply_docs, cli, eventually, get, http, on_host, pod_ip, service_manifest
from netplane import names
from netplane.kernel import netns
from netplane.lab.state import LabState
from support import objects


# the paths work whatever the proxy mode, the CNI or the control plane (the three-node lab is for the
# control plane's workloads and scheduling, its data plane the nftables lab's)
EVERY_LAB = on_labs(*(name for name in SHARED_LABS if name != "three-nodes"))
EVERY_CNI = on_labs("nftables", "iptables", "reference-cni")  # what a CNI plugin takes part in


def pods_by_name(lab: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in get(lab, "pods")["items"]}


@EVERY_LAB
def test_pods_run_on_both_nodes_with_ips_from_their_nodes_podcidr(lab):
    nodes = {n["metadata"]["name"]: n for n in get(lab, "nodes")["items"]}
    assert set(nodes) == {"node-1", "node-2"}
    pods = pods_by_name(lab)
    assert {p["spec"]["nodeName"] for p in pods.values()} == {"node-1", "node-2"}
    for pod in pods.values():
        assert pod["status"]["phase"] == "Running"
        cidr = ipaddress.ip_network(nodes[pod["spec"]["nodeName"]]["spec"]["podCIDR"])
        assert ipaddress.ip_address(pod["status"]["podIP"]) in cidr
        assert pod["status"]["hostIP"] in {a["address"] for a in nodes[pod["spec"]["nodeName"]]["status"]["addresses"]}
    wide = cli(lab, "get", "pods", "-o", "wide", check=True).stdout
    assert wide.splitlines()[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert f"{pods['web-2']['status']['podIP']}" in wide


@EVERY_LAB
def test_path2_pods_on_one_node_talk_over_the_bridge(lab):
    reply = http(lab, "client", f"http://{pod_ip(lab, 'web-1')}:8080/hostname")
    assert reply.returncode == 0 and reply.stdout == "web-1"
    # the server sees the client's own pod IP: no NAT on the bridge
    seen = http(lab, "client", f"http://{pod_ip(lab, 'web-1')}:8080/clientip").stdout
    assert seen.split(":")[0] == pod_ip(lab, "client")


@EVERY_LAB
def test_path3_pods_on_two_nodes_talk_over_vxlan(lab):
    reply = http(lab, "client", f"http://{pod_ip(lab, 'web-2')}:8080/hostname")
    assert reply.returncode == 0 and reply.stdout == "web-2"
    seen = http(lab, "client", f"http://{pod_ip(lab, 'web-2')}:8080/clientip").stdout
    assert seen.split(":")[0] == pod_ip(lab, "client")
    routes = cli(lab, "exec", "node/node-1", "--", "ip", "route", check=True).stdout
    node2 = get(lab, "nodes", "node-2")
    gateway = node2["spec"]["podCIDR"].split("/")[0]
    assert f"{node2['spec']['podCIDR']} via {gateway} dev flannel.1" in routes and "onlink" in routes


@EVERY_LAB
def test_path1_containers_of_one_pod_talk_over_localhost(lab):
    # the sidecar container (port 9090) asks the web container (8080) over 127.0.0.1
    reply = http(lab, "client", f"http://{pod_ip(lab, 'duo')}:9090/dial?host=127.0.0.1&port=8080&request=hostname")
    assert json.loads(reply.stdout) == {"responses": ["duo"], "errors": []}


@EVERY_LAB
def test_path4_a_clusterip_reaches_both_endpoints(lab):
    svc = get(lab, "services", "web")
    ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/16")
    answers = [http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(20)]
    assert set(answers) == {"web-1", "web-2"}, answers
    # UDP through the same Service
    udp = http(lab, "client", f"http://{pod_ip(lab, 'web-1')}:8080/dial?host={ip}&port=81&protocol=udp&request=hostname&tries=1")
    assert json.loads(udp.stdout)["responses"][0] in {"web-1", "web-2"}


@EVERY_CNI
def test_deleting_an_endpoint_pod_removes_it_from_slice_and_rules(lab, tmp_path):
    manifest = tmp_path / "api.yaml"
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"api-{i}", "labels": {"app": "api"}},
             "spec": {"nodeName": f"node-{i}", "containers": [{"name": "echo", "image": "netplane/echo",
                                                               "ports": [{"containerPort": 8080}]}]}}
            for i in (1, 2)]
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                 "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    manifest.write_text(yaml.safe_dump_all(docs))
    applied = cli(lab, "apply", "-f", str(manifest), check=True).stdout
    assert "pod/api-1 created" in applied and "service/api created" in applied
    ip = get(lab, "services", "api")["spec"]["clusterIP"]

    def endpoints() -> set[str]:
        return {a for s in get(lab, "endpointslices")["items"]
                if s["metadata"]["labels"]["kubernetes.io/service-name"] == "api"
                for e in s["endpoints"] for a in e["addresses"]}

    eventually(lambda: len(endpoints()) == 2)
    eventually(lambda: {http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(12)} == {"api-1", "api-2"})
    gone = pod_ip(lab, "api-2")
    assert cli(lab, "delete", "pod", "api-2").stdout.strip() == 'pod "api-2" deleted'
    eventually(lambda: endpoints() == {pod_ip(lab, "api-1")})
    pod_space = names.pod_netns(names.lab_prefix(lab), "default", "api-2")
    eventually(lambda: not netns.exists(pod_space))  # CNI DEL ran and the namespace is gone
    rules = lambda: "\n".join(proxy_rules(lab))  # noqa: E731
    eventually(lambda: gone not in rules() and pod_ip(lab, "api-1") in rules())
    assert {http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(10)} == {"api-1"}
    cli(lab, "delete", "-f", str(manifest))


def test_a_service_without_endpoints_refuses_at_once(lab, tmp_path):
    manifest = tmp_path / "lonely.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lonely"},
                                        "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}))
    cli(lab, "apply", "-f", str(manifest), check=True)
    ip = get(lab, "services", "lonely")["spec"]["clusterIP"]
    probe = ("import socket,time; s=socket.socket(); s.settimeout(3); t=time.monotonic()\n"
             f"try: s.connect(('{ip}', 80)); print('connected')\n"
             "except OSError as e: print(type(e).__name__, round(time.monotonic()-t, 2))")
    answer = eventually(lambda: (out := cli(lab, "exec", "client", "--", "python3", "-c", probe).stdout.split())
                        and out[0] == "ConnectionRefusedError" and out)
    assert float(answer[1]) < 0.5  # rejected at once, not a timeout
    cli(lab, "delete", "service", "lonely", check=True)


def test_exec_runs_in_the_pods_namespace_and_passes_the_exit_code(lab):
    assert cli(lab, "exec", "client", "--", "sh", "-c", "exit 7").returncode == 7
    out = cli(lab, "exec", "client", "--", "ip", "-4", "-o", "addr", "show", "eth0", check=True).stdout
    assert pod_ip(lab, "client") in out
    node = cli(lab, "exec", "node/node-2", "--", "ip", "-o", "link", "show", "flannel.1", check=True).stdout
    assert "flannel.1" in node and "mtu 1450" in node


@pytest.mark.parametrize("args, message", [
    (["exec", "nosuchpod", "--", "true"], "NotFound"),
    (["exec", "node/node-9", "--", "true"], "node 'node-9' is not in lab"),
    (["get", "widgets"], "unknown resource type 'widgets'"),
])
def test_bad_requests_fail_with_one_line(lab, args, message):
    result = cli(lab, *args)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_kind_is_refused_before_anything_is_written(lab, tmp_path):
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: early}\nspec: {containers: []}\n---\n"
                        "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n")
    result = cli(lab, "apply", "-f", str(manifest))
    assert result.returncode == 1 and "unknown kind 'Widget'" in result.stderr
    assert "early" not in pods_by_name(lab)


def test_up_of_a_lab_that_is_up_is_refused(lab):
    result = cli(lab, "up")
    assert result.returncode == 1 and f"lab '{lab}' is already up" in result.stderr
    suggested = result.stderr.split("`")[1].split()  # the command it suggests is a valid one
    assert suggested == ["netplane", "--lab", lab, "down"]
    assert cli(lab, *suggested[3:], "--help").returncode == 0


def test_kubeconfig_reaches_the_api_server_over_tls_with_a_token(lab):
    path = cli(lab, "kubeconfig", check=True).stdout.strip()
    config = yaml.safe_load(open(path))
    assert config["current-context"] == lab
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://127.0.0.1:") and cluster["certificate-authority-data"]
    # the real kubectl and the official Python client, verifying the lab's CA
    out = subprocess.run(["kubectl", "--kubeconfig", path, "get", "pods", "-o", "name"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) >= {"pod/web-1", "pod/web-2", "pod/client", "pod/duo"}
    from kubernetes import client as kclient, config as kconfig
    api = kclient.CoreV1Api(kconfig.new_client_from_config(config_file=path))
    assert {p.metadata.name for p in api.list_namespaced_pod("default").items} >= {"web-1", "web-2"}
    # no token, no answer
    anonymous = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                                LabState(lab).pki / "ca.crt", f"{cluster['server']}/api/v1/pods"],
                               capture_output=True, text=True, timeout=10)
    assert anonymous.stdout == "401"


def test_every_namespace_of_the_lab_carries_its_prefix(lab):
    spaces = netns.listed(names.lab_prefix(lab))
    assert names.underlay_netns(lab) in spaces and names.node_netns(lab, "node-1") in spaces
    assert names.pod_netns(names.lab_prefix(lab), "default", "web-1") in spaces


def test_the_scheduler_spreads_pods_without_a_node(lab, tmp_path):
    before = {n: 0 for n in ("node-1", "node-2")}
    every_pod = json.loads(cli(lab, "get", "pods", "-A", "-o", "json", check=True).stdout)["items"]
    for pod in every_pod:  # the scheduler counts every namespace's pods, the cluster DNS pods among them
        before[pod["spec"]["nodeName"]] += 1
    manifest = tmp_path / "spread.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"spread-{i}", "labels": {"app": "spread"}},
         "spec": {"containers": [{"name": "c", "image": "netplane/echo", "command": ["sleep", "infinity"]}]}}
        for i in range(4)]))
    cli(lab, "apply", "-f", str(manifest), check=True)

    def spread() -> list[dict]:
        pods = [p for p in get(lab, "pods")["items"] if p["metadata"]["name"].startswith("spread-")]
        return pods if all(p.get("status", {}).get("phase") == "Running" for p in pods) else []

    placed = eventually(spread)
    after = dict(before)
    for pod in placed:
        after[pod["spec"]["nodeName"]] += 1
    assert abs(after["node-1"] - after["node-2"]) <= 1, after
    cli(lab, "delete", "-f", str(manifest), check=True)


def from_node(lab: str, node: str, url: str) -> str:
    return on_host(lab, f"node/{node}", "curl", "-sS", "-m", "3", url).stdout


@EVERY_CNI
def test_a_nodeport_answers_on_every_node_and_masquerades(lab, tmp_path):
    path = service_manifest(tmp_path, "np-cluster", type="NodePort")
    cli(lab, "apply", "-f", path, check=True)
    port = get(lab, "services", "np-cluster")["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767
    for target in ("172.30.0.11", "172.30.0.12"):
        seen = eventually(lambda: {from_node(lab, "node-2", f"http://{target}:{port}/hostname") for _ in range(12)}
                          == {"web-1", "web-2"})
        assert seen
    # externalTrafficPolicy Cluster: the endpoint sees a node's address, not the client's
    client = from_node(lab, "node-2", f"http://172.30.0.11:{port}/clientip").split(":")[0]
    assert client != "172.30.0.12"
    cli(lab, "delete", "-f", path, check=True)


def test_external_traffic_policy_local_keeps_the_client_address(lab, tmp_path):
    path = service_manifest(tmp_path, "np-local", type="NodePort", externalTrafficPolicy="Local")
    cli(lab, "apply", "-f", path, check=True)
    port = get(lab, "services", "np-local")["spec"]["ports"][0]["nodePort"]
    # node-1's only local endpoint is web-1, and it sees node-2's own address as the client
    answers = eventually(lambda: {from_node(lab, "node-2", f"http://172.30.0.11:{port}/hostname") for _ in range(8)}
                         == {"web-1"})
    assert answers
    assert from_node(lab, "node-2", f"http://172.30.0.11:{port}/clientip").split(":")[0] == "172.30.0.12"
    cli(lab, "delete", "-f", path, check=True)


def test_session_affinity_sends_a_client_to_one_endpoint(lab, tmp_path):
    path = service_manifest(tmp_path, "sticky", sessionAffinity="ClientIP")
    cli(lab, "apply", "-f", path, check=True)
    ip = get(lab, "services", "sticky")["spec"]["clusterIP"]
    eventually(lambda: http(lab, "client", f"http://{ip}/hostname").stdout in ("web-1", "web-2"))
    assert len({http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(12)}) == 1
    cli(lab, "delete", "-f", path, check=True)


@EVERY_CNI
def test_hairpin_a_pod_reaches_itself_through_its_service(lab):
    ip = get(lab, "services", "web")["spec"]["clusterIP"]
    seen = {http(lab, "web-1", f"http://{ip}/hostname").stdout for _ in range(16)}
    assert "web-1" in seen  # it was sent to itself at least once, and the reply came back


def test_a_load_balancer_gets_an_address_the_underlay_client_reaches(lab, tmp_path):
    path = service_manifest(tmp_path, "lb", type="LoadBalancer")
    cli(lab, "apply", "-f", path, check=True)
    svc = eventually(lambda: (s := get(lab, "services", "lb")).get("status", {}).get("loadBalancer", {}).get("ingress") and s)
    ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.30.1.0/24")
    client = lambda url: on_host(lab, "underlay/client", "curl", "-sS", "-m", "3", url).stdout  # noqa: E731
    assert eventually(lambda: {client(f"http://{ip}/hostname") for _ in range(16)} == {"web-1", "web-2"})
    # its NodePort too, on either node, from outside the cluster
    port = svc["spec"]["ports"][0]["nodePort"]
    assert client(f"http://172.30.0.12:{port}/hostname") in ("web-1", "web-2")
    routes = cli(lab, "exec", "underlay/client", "--", "ip", "route", check=True).stdout
    assert f"{ip} " in routes and "nexthop via 172.30.0.11" in routes and "nexthop via 172.30.0.12" in routes
    cli(lab, "delete", "-f", path, check=True)
    assert eventually(lambda: ip not in cli(lab, "exec", "underlay/client", "--", "ip", "route", check=True).stdout)


def test_when_a_udp_endpoint_goes_its_flows_move_to_another(lab, tmp_path):
    manifest = tmp_path / "udp.yaml"
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"dns-{i}", "labels": {"app": "dns"}},
             "spec": {"nodeName": f"node-{i}", "containers": [{"name": "echo", "image": "netplane/echo",
                                                               "ports": [{"containerPort": 5353, "protocol": "UDP"}]}]}}
            for i in (1, 2)]
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
                 "spec": {"selector": {"app": "dns"}, "ports": [{"port": 53, "targetPort": 5353, "protocol": "UDP"}]}})
    manifest.write_text(yaml.safe_dump_all(docs))
    cli(lab, "apply", "-f", str(manifest), check=True)
    ip = get(lab, "services", "dns")["spec"]["clusterIP"]
    eventually(lambda: len({a for s in get(lab, "endpointslices")["items"]
                            if s["metadata"]["labels"]["kubernetes.io/service-name"] == "dns"
                            for e in s["endpoints"] for a in e["addresses"]}) == 2)
    # one client socket, one source port: one conntrack flow, pinned to one endpoint
    script = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('',40053)); s.settimeout(0.5)\n"
        "first=None; deadline=time.time()+20\n"
        "while time.time()<deadline:\n"
        f"  s.sendto(b'hostname',('{ip}',53))\n"
        "  try: got=s.recvfrom(100)[0].decode()\n"
        "  except socket.timeout: continue\n"
        "  if first is None: first=got; print(first, flush=True); sys.stdin.readline()\n"
        "  elif got!=first: print(got, flush=True); break\n"
        "  time.sleep(0.2)\n")
    proc = subprocess.Popen([*labtools_exec(lab, "client"), "python3", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in ("dns-1", "dns-2")
        cli(lab, "delete", "pod", first, check=True)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        second = proc.stdout.readline().strip()
        assert second == ({"dns-1", "dns-2"} - {first}).pop()  # the same flow now reaches the other
    finally:
        proc.kill()
    cli(lab, "delete", "-f", str(manifest))


def labtools_exec(lab: str, pod: str) -> list[str]:
    from labtools import NETPLANE
    return [NETPLANE, "--lab", lab, "exec", pod, "--"]


def service(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def slice_endpoints(lab: str, svc: str) -> list[dict]:
    return [e for s in get(lab, "endpointslices")["items"]
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == svc for e in s.get("endpoints") or []]


def udp_via(lab: str, ip: str, port: int) -> str:
    """A UDP request to ip:port from web-1's echo server (the e2e tests' /dial)."""
    out = http(lab, "client", f"http://{pod_ip(lab, 'web-1')}:8080/dial?host={ip}&port={port}"
                              f"&protocol=udp&request=hostname&tries=1").stdout
    return (json.loads(out)["responses"] or [""])[0]


def test_multiport_with_named_target_ports_and_one_port_on_tcp_and_udp(lab, tmp_path):
    """Port 80 on TCP and on UDP; targetPorts named, resolved per endpoint to different numbers."""
    docs = [objects.pod("mp-a", {"app": "mp"}, "node-1", ports=[{"name": "web", "containerPort": 8080},
                                                      {"name": "dns", "containerPort": 8081, "protocol": "UDP"}]),
            objects.pod("mp-b", {"app": "mp"}, "node-2", ports=[{"name": "web", "containerPort": 9090},
                                                      {"name": "dns", "containerPort": 9091, "protocol": "UDP"}]),
            service("mp", selector={"app": "mp"}, ports=[{"name": "tcp", "port": 80, "targetPort": "web"},
                                                         {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": "dns"}])]
    apply_docs(lab, tmp_path / "mp.yaml", docs)
    ip = get(lab, "services", "mp")["spec"]["clusterIP"]
    assert eventually(lambda: {http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(12)} == {"mp-a", "mp-b"},
                      timeout=30)
    assert eventually(lambda: {udp_via(lab, ip, 80) for _ in range(12)} == {"mp-a", "mp-b"})
    cli(lab, "delete", "-f", str(tmp_path / "mp.yaml"), check=True)


def test_session_affinity_times_out_and_switches_off_and_on(lab, tmp_path):
    path = tmp_path / "sticky.yaml"
    sticky = service("sticky2", selector={"app": "web"}, ports=[{"port": 80, "targetPort": 8080}],
                     sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 1}})
    apply_docs(lab, path, [sticky])
    ip = get(lab, "services", "sticky2")["spec"]["clusterIP"]
    ask = lambda: http(lab, "client", f"http://{ip}/hostname").stdout  # noqa: E731
    eventually(lambda: ask() in ("web-1", "web-2"))
    assert len({ask() for _ in range(10)}) == 1  # within the timeout: one endpoint
    after_timeout = set()
    for _ in range(10):  # each request after the timeout chooses again: both appear (p of not: 0.2%)
        time.sleep(1.4)
        after_timeout.add(ask())
    assert after_timeout == {"web-1", "web-2"}
    apply_docs(lab, path, [{**sticky, "spec": {**sticky["spec"], "sessionAffinity": "None",
                                               "sessionAffinityConfig": None}}])
    assert eventually(lambda: {ask() for _ in range(12)} == {"web-1", "web-2"})
    apply_docs(lab, path, [{**sticky, "spec": {**sticky["spec"], "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}])
    assert eventually(lambda: len({ask() for _ in range(10)}) == 1)
    cli(lab, "delete", "-f", str(path), check=True)


def test_internal_traffic_policy_local_uses_only_this_nodes_endpoints(lab, tmp_path):
    path = service_manifest(tmp_path, "web-itp", internalTrafficPolicy="Local")
    cli(lab, "apply", "-f", path, check=True)
    ip = get(lab, "services", "web-itp")["spec"]["clusterIP"]
    eventually(lambda: http(lab, "client", f"http://{ip}/hostname").stdout == "web-1")
    assert {http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(12)} == {"web-1"}  # client is on node-1
    cli(lab, "delete", "-f", path, check=True)


def test_a_terminating_endpoint_serves_only_while_no_endpoint_is_ready(lab, tmp_path):
    """A pod that ignores SIGTERM stays serving while it terminates; with no ready endpoint left,
    kube-proxy falls back to it instead of refusing."""
    stubborn = objects.pod("term-1", {"app": "term"}, "node-2", terminationGracePeriodSeconds=20)
    stubborn["spec"]["containers"][0] |= {"image": "busybox", "command": [  # busybox's httpd, its shell deaf to SIGTERM
        "sh", "-c", "trap '' TERM; mkdir /tmp/www; printf term-1 > /tmp/www/hostname; httpd -f -p 8080 -h /tmp/www & wait"]}
    path = tmp_path / "term.yaml"
    apply_docs(lab, path, [stubborn, service("term", selector={"app": "term"}, ports=[{"port": 80, "targetPort": 8080}])])
    ip = get(lab, "services", "term")["spec"]["clusterIP"]
    assert eventually(lambda: http(lab, "client", f"http://{ip}/hostname").stdout == "term-1", timeout=30)
    cli(lab, "delete", "pod", "term-1", check=True)  # graceful: SIGTERM now, SIGKILL after 20 s
    conditions = eventually(lambda: [e["conditions"] for e in slice_endpoints(lab, "term")
                                     if e["conditions"].get("terminating")])
    assert conditions[0]["serving"] is True and conditions[0]["ready"] is False
    assert {http(lab, "client", f"http://{ip}/hostname").stdout for _ in range(5)} == {"term-1"}
    cli(lab, "delete", "service", "term", check=True)


def test_load_balancer_source_ranges_admit_only_the_listed_clients(lab, tmp_path):
    path = tmp_path / "fw.yaml"
    lb = service("fw", selector={"app": "web"}, type="LoadBalancer", ports=[{"port": 80, "targetPort": 8080}],
                 loadBalancerSourceRanges=["172.30.0.2/32"])  # the underlay client
    apply_docs(lab, path, [lb])
    svc = eventually(lambda: (s := get(lab, "services", "fw")).get("status", {}).get("loadBalancer", {}).get("ingress") and s)
    url = f"http://{svc['status']['loadBalancer']['ingress'][0]['ip']}/hostname"
    client = lambda: on_host(lab, "underlay/client", "curl", "-sS", "-m", "2", url)  # noqa: E731
    assert eventually(lambda: client().stdout in ("web-1", "web-2"))
    apply_docs(lab, path, [{**lb, "spec": {**lb["spec"], "loadBalancerSourceRanges": ["10.9.9.0/24"]}}])
    assert eventually(lambda: client().returncode == 28)  # dropped: curl's timeout, not a refusal
    cli(lab, "delete", "-f", str(path), check=True)


def test_external_traffic_policy_local_drops_on_a_node_without_a_local_endpoint(lab, tmp_path):
    path = tmp_path / "solo.yaml"
    apply_docs(lab, path, [objects.pod("solo", {"app": "solo"}, "node-1"),
                           service("solo", selector={"app": "solo"}, type="NodePort", externalTrafficPolicy="Local",
                                   ports=[{"port": 80, "targetPort": 8080}])])
    port = get(lab, "services", "solo")["spec"]["ports"][0]["nodePort"]
    client = lambda node_ip: on_host(lab, "underlay/client", "curl", "-sS", "-m", "2",  # noqa: E731
                                     f"http://{node_ip}:{port}/clientip")
    seen = eventually(lambda: client("172.30.0.11").stdout, timeout=30)
    assert seen.split(":")[0] == "172.30.0.2"  # the client's own address: not masqueraded
    assert client("172.30.0.12").returncode == 28  # node-2 has no local endpoint: dropped
    cli(lab, "delete", "-f", str(path), check=True)


def test_pod_to_clusterip_keeps_the_pods_address(lab):
    ip = get(lab, "services", "web")["spec"]["clusterIP"]
    seen = {http(lab, "client", f"http://{ip}/clientip").stdout.split(":")[0] for _ in range(8)}
    assert seen == {pod_ip(lab, "client")}  # from both endpoints, local and remote


LINE_SERVER = ("import socket,threading\n"
               "def serve(c):\n"
               "  f=c.makefile('rwb',0)\n"
               "  for line in f: f.write(b'echo '+line)\n"
               "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('',7000)); s.listen()\n"
               "while True: threading.Thread(target=serve,args=(s.accept()[0],),daemon=True).start()\n")


def test_an_open_connection_survives_a_restart_of_the_proxy(lab, tmp_path):
    """The control plane and its node agents die (kill -9) and come back: the proxy adopts its rules
    with a full sync, and a TCP connection opened through the Service before goes on."""
    server = objects.pod("conn", {"app": "conn"}, "node-2")
    server["spec"]["containers"][0] |= {"image": "python", "command": ["python3", "-c", LINE_SERVER]}
    path = tmp_path / "conn.yaml"
    apply_docs(lab, path, [server, service("conn", selector={"app": "conn"}, ports=[{"port": 7000}])])
    ip = get(lab, "services", "conn")["spec"]["clusterIP"]
    talk = ("import socket,sys\n"
            f"s=socket.create_connection(('{ip}',7000),timeout=5); f=s.makefile('rwb',0)\n"
            "for line in sys.stdin: f.write(line.encode()); print(f.readline().decode().strip(), flush=True)\n")
    eventually(lambda: "conn" in cli(lab, "exec", "client", "--", "python3", "-c",
                                     f"import socket; socket.create_connection(('{ip}',7000),timeout=1); print('conn')").stdout,
               timeout=30)
    proc = subprocess.Popen([*labtools_exec(lab, "client"), "python3", "-c", talk], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("before\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "echo before"
        rules_before = proxy_rules(lab)
        os.kill(LabState(lab).pid(), signal.SIGKILL)
        assert cli(lab, "up").returncode == 0
        eventually(lambda: http(lab, "client", f"http://{get(lab, 'services', 'web')['spec']['clusterIP']}/hostname").stdout)
        proc.stdin.write("after\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "echo after"
        assert proxy_rules(lab) == rules_before  # adopted, not doubled
    finally:
        proc.kill()
    cli(lab, "delete", "-f", str(path), check=True)


def proxy_rules(lab: str) -> list[str]:
    """node-1's kube-proxy rules in whichever mode the lab runs (the nftables table, or the KUBE
    lines of iptables-save), without counters."""
    table = cli(lab, "exec", "node/node-1", "--", "nft", "list", "table", "ip", "kube-proxy")
    if table.returncode == 0:
        return sorted(table.stdout.splitlines())
    saved = cli(lab, "exec", "node/node-1", "--", "iptables-save", check=True).stdout
    return sorted(line.split(" [")[0] for line in saved.splitlines() if "KUBE" in line)


def test_an_external_ip_on_a_node_reaches_the_endpoints_from_the_underlay(lab, tmp_path):
    path = tmp_path / "ext.yaml"
    apply_docs(lab, path, [service("ext", selector={"app": "web"}, externalIPs=["172.30.0.11"],
                                   ports=[{"port": 8088, "targetPort": 8080}])])
    url = "http://172.30.0.11:8088/hostname"
    client = lambda: on_host(lab, "underlay/client", "curl", "-sS", "-m", "2", url).stdout  # noqa: E731
    assert eventually(lambda: {client() for _ in range(12)} == {"web-1", "web-2"})
    cli(lab, "delete", "-f", str(path), check=True)


def test_a_pod_name_of_253_characters_runs_end_to_end(lab, tmp_path):
    """The longest name the API accepts: its namespace and files get hashed names that fit, and it
    serves, is reached, is exec'd into and goes away like any pod."""
    name = ("p" * 62 + ".") * 4 + "e"  # 253 characters, a valid DNS subdomain
    assert len(name) == 253
    apply_docs(lab, tmp_path / "long.yaml", [objects.pod(name, {"app": "long"}, "node-2", ports=[{"containerPort": 8080}])])
    pod = eventually(lambda: (p := get(lab, "pods", name))["status"].get("phase") == "Running" and p, timeout=30)
    # its hostname, which the echo server answers, is its name cut to 63 characters without the trailing
    # dot, as the kubelet makes it
    assert http(lab, "client", f"http://{pod['status']['podIP']}:8080/hostname").stdout == "p" * 62
    assert cli(lab, "exec", name, "--", "hostname", check=True).stdout.strip() == "p" * 62
    assert cli(lab, "exec", name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0", check=True).stdout.split()[3] \
        .startswith(pod["status"]["podIP"] + "/")
    space = names.pod_netns(names.lab_prefix(lab), "default", name)
    assert len(space) == names.NAME_MAX and netns.exists(space)
    cli(lab, "delete", "pod", name, check=True)
    eventually(lambda: not netns.exists(space), timeout=30)


def test_a_container_that_cannot_bind_its_port_crashes_and_backs_off(lab, tmp_path):
    """Two containers on one port: the one that binds second cannot, so it ends with exit code 1 as
    any server would; it is restarted at once, then backs off (CrashLoopBackOff), and the pod is not
    Ready. (The containers start side by side: either may be the second.)"""
    clash = objects.pod("clash", {"app": "clash"}, "node-1", ports=[{"containerPort": 8080}])
    clash["spec"]["containers"].append({"name": "again", "image": "netplane/echo", "ports": [{"containerPort": 8080}]})
    apply_docs(lab, tmp_path / "clash.yaml", [clash])

    def loser() -> dict:
        statuses = get(lab, "pods", "clash")["status"].get("containerStatuses") or []
        return next((s for s in statuses if s["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"), {})

    status = eventually(loser, timeout=30)
    assert status["lastState"]["terminated"]["exitCode"] == 1 and status["restartCount"] == 1
    pod = get(lab, "pods", "clash")
    assert pod["status"]["phase"] == "Running"
    assert sorted(s["ready"] for s in pod["status"]["containerStatuses"]) == [False, True]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    time.sleep(3)
    assert loser()["restartCount"] == 1  # backing off 10 s, not in a tight loop
    cli(lab, "delete", "pod", "clash", check=True)
