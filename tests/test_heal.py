"""The data plane heals: what someone changes by hand in a node's kernel, the node agent puts back
within its resync period (nodeResyncSeconds: 3 here, 30 by default), with no API change to wake it.
Each test breaks one thing on node-1, checks that traffic is broken, and measures how long until it
works again; the figures go to the README's reliability section.

One default lab per proxy mode (named t<hex>, brought down by the fixture even when a test fails).
"""
from __future__ import annotations

import subprocess
import time

import pytest

from labtools import apply_docs, cli, default_lab_file, eventually, get, http, pod_ip, running_lab
from netplane import names
from netplane.kernel import netns
from netplane.lab import model
from support import objects

RESYNC = 3


@pytest.fixture(scope="module", params=model.IMPLEMENTED_PROXY_MODES)
def lab(request, tmp_path_factory):
    path = default_lab_file(tmp_path_factory.mktemp(request.param), request.param, nodeResyncSeconds=RESYNC,
                            addons=[])  # repairs of the data plane: no cluster DNS needed
    with running_lab(path) as name:
        yield request.param, name


def break_on_node(lab: str, fault: str, broken: str) -> None:
    """Run the shell command `fault` on node-1, then at once `broken`, which must succeed: the fault
    took effect (checked in the kernel before the agent can have repaired it, which may take it
    less time than a first request through the data plane would)."""
    script = f"{fault}; {broken}"
    done = subprocess.run(netns.command(names.node_netns(lab, "node-1"), ["sh", "-c", script]), capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{script}: {done.stdout}{done.stderr}"


def link_deleted(link: str) -> tuple[str, str]:
    """Delete a link; the check holds while it is gone or once it is back as a new device (another
    ifindex): the agent may make it again between the two commands."""
    index = f"ip -o link show {link} 2>/dev/null | cut -d: -f1"
    return f"before=$({index}); ip link del {link}", f'[ "$before" != "$({index})" ]'


def repair_time(works, deadline: float = RESYNC + 5) -> float:
    """Seconds until works() holds again."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        if works():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not repaired in {deadline} s")


def service_works(lab: str) -> bool:
    ip = get(lab, "services", "web")["spec"]["clusterIP"]
    return all(http(lab, "client", f"http://{ip}/hostname", timeout=1).stdout in ("web-1", "web-2") for _ in range(4))


FAULTS = {  # mode -> fault -> (the command, a command that succeeds only while the fault holds)
    "nftables": {
        "flush table": ("nft flush table ip kube-proxy", "! nft list chain ip kube-proxy services | grep -q vmap"),
        "delete table": ("nft delete table ip kube-proxy", "! nft list table ip kube-proxy 2>/dev/null"),
    },
    "iptables": {
        "flush nat": ("iptables -t nat -F", "! iptables -t nat -S PREROUTING | grep -q KUBE-SERVICES"),
        "flush and delete nat chains": ("iptables -t nat -F; iptables -t nat -X",
                                        "! iptables -t nat -S KUBE-SERVICES 2>/dev/null"),
    },
}


@pytest.mark.parametrize("which", [0, 1])
def test_the_proxy_rules_come_back_after_a_flush_or_a_delete(lab, which):
    mode, name = lab
    fault, (command, broken) = list(FAULTS[mode].items())[which]
    assert service_works(name)
    break_on_node(name, command, broken)
    seconds = repair_time(lambda: service_works(name))
    print(f"\nrepair: {mode} {fault} on node-1: {seconds:.1f} s")
    assert seconds <= RESYNC + 5


def test_flannel_1_comes_back_after_it_is_deleted(lab):
    mode, name = lab
    url = f"http://{pod_ip(name, 'web-2')}:8080/hostname"
    assert http(name, "client", url).stdout == "web-2"
    break_on_node(name, *link_deleted(names.VXLAN_IF))
    seconds = repair_time(lambda: http(name, "client", url, timeout=1).stdout == "web-2")
    print(f"\nrepair: {mode} lab, flannel.1 deleted on node-1: {seconds:.1f} s")
    routes = cli(name, "exec", "node/node-1", "--", "ip", "route", check=True).stdout
    assert f"{get(name, 'nodes', 'node-2')['spec']['podCIDR']} via" in routes and names.VXLAN_IF in routes


def test_the_bridge_comes_back_after_it_is_deleted_and_the_pods_keep_their_addresses(lab):
    mode, name = lab
    before = {pod: pod_ip(name, pod) for pod in ("client", "web-1")}
    url = f"http://{pod_ip(name, 'web-2')}:8080/hostname"
    assert http(name, "client", url).stdout == "web-2"
    break_on_node(name, *link_deleted(names.BRIDGE_IF))
    seconds = repair_time(lambda: http(name, "client", url, timeout=1).stdout == "web-2")
    print(f"\nrepair: {mode} lab, {names.BRIDGE_IF} deleted on node-1: {seconds:.1f} s")
    assert {pod: pod_ip(name, pod) for pod in before} == before
    assert http(name, "client", f"http://{before['web-1']}:8080/hostname").stdout == "web-1"


def test_a_pods_veth_comes_back_after_it_is_deleted(lab):
    mode, name = lab
    web_1 = get(name, "pods", "web-1")
    veth = names.host_veth(web_1["metadata"]["uid"])
    url = f"http://{pod_ip(name, 'web-1')}:8080/hostname"
    assert http(name, "client", url).stdout == "web-1"
    break_on_node(name, *link_deleted(veth))
    seconds = repair_time(lambda: http(name, "client", url, timeout=1).stdout == "web-1")
    print(f"\nrepair: {mode} lab, web-1's veth deleted on node-1: {seconds:.1f} s")
    assert pod_ip(name, "web-1") == web_1["status"]["podIP"]


def test_a_healthy_pod_is_never_attached_again_even_with_a_hostport(lab, tmp_path):
    """The periodic CNI CHECK must not mistake a chained plugin's CHECK for a broken pod (Debian's
    portmap fails CHECK for every IPv4-only pod): across three resync periods no pod's veth is made
    again (a re-attach gives it a new interface index) and a hostPort keeps answering."""
    mode, name = lab
    apply_docs(name, tmp_path / "hostport.yaml", [objects.pod("hostport", {"app": "hostport"}, "node-1", ports=
                                                           [{"containerPort": 8080, "hostPort": 18081}])])
    eventually(lambda: get(name, "pods", "hostport").get("status", {}).get("phase") == "Running")

    def veths() -> dict[str, int]:
        shown = subprocess.run(netns.command(names.node_netns(name, "node-1"), ["ip", "-o", "link", "show", "type",
                                                                              "veth"]), capture_output=True, text=True)
        return {line.split(": ")[1].split("@")[0]: int(line.split(":")[0]) for line in shown.stdout.splitlines()}

    before = veths()
    assert names.host_veth(get(name, "pods", "hostport")["metadata"]["uid"]) in before
    time.sleep(3 * RESYNC + 1)
    assert veths() == before
    node_ip = get(name, "nodes", "node-1")["status"]["addresses"][0]["address"]
    assert http(name, "client", f"http://{node_ip}:18081/hostname").stdout == "hostport"
    cli(name, "delete", "pod", "hostport", check=True)


def test_the_policy_table_comes_back_after_it_is_deleted(lab, tmp_path):
    """A NetworkPolicy isolating web-1 (on node-1) from every client: deleting node-1's policy table
    opens web-1 until the agent writes the table again."""
    mode, name = lab
    url = f"http://{pod_ip(name, 'web-1')}:8080/hostname"
    isolating = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web-alone"},
                 "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                          "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}]}}
    apply_docs(name, tmp_path / "policy.yaml", [isolating])
    try:
        eventually(lambda: http(name, "client", url, timeout=1).returncode != 0, timeout=5)
        break_on_node(name, f"nft delete table ip {names.NFT_POLICY_TABLE}",
                      f"! nft list table ip {names.NFT_POLICY_TABLE} 2>/dev/null")
        seconds = repair_time(lambda: http(name, "client", url, timeout=1).returncode != 0)
        print(f"\nrepair: {mode} lab, the policy table deleted on node-1: {seconds:.1f} s")
        assert cli(name, "exec", "node/node-1", "--", "nft", "list", "table", "ip", names.NFT_POLICY_TABLE,
                   check=True).stdout.count("group-") >= 1
    finally:
        cli(name, "delete", "networkpolicy", "web-alone", check=True)
    eventually(lambda: http(name, "client", url, timeout=1).stdout == "web-1", timeout=5)
