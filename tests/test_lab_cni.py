"""A lab on the CNI its lab file names (`network.cni`), and hostPorts through portmap.

Conventions: the default lab (see test_lab.py: web-1 and client on node-1 = 172.30.0.11, web-2 on
node-2 = 172.30.0.12, Service web) once per CNI kind, shared (conftest's `lab`): `reference-cni`
(Debian's bridge + host-local + portmap) with nftables kube-proxy, and `iptables` (netplane's
plugins + portmap, the default) with iptables kube-proxy, so portmap meets both proxy modes. The
four paths are test_lab.py's, which run on these labs too. A hostPort pod is `hostport` on node-1,
hostPort 18080 -> 8080. Pure tests (model, config builders) need no lab.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import on_labs
from labtools import apply_docs, cli, eventually, get, on_host, service_manifest
from netplane.agent.kubelet import capability_args
from netplane.agent.node import cni_config, network_config
from netplane.lab import model
from netplane.lab.state import LabState
from support import objects

HOST_PORT = 18080
NODE_1, NODE_2 = "172.30.0.11", "172.30.0.12"


CNI_LABS = on_labs("reference-cni", "iptables")  # the reference plugins, and netplane's (the default)


def from_client(lab: str, url: str) -> str:
    """curl from the underlay client (outside the cluster); empty when it fails."""
    return on_host(lab, "underlay/client", "curl", "-sS", "-m", "2", url).stdout


def nat_rules(lab: str, node: str) -> str:
    return cli(lab, "exec", f"node/{node}", "--", "iptables-save", "-t", "nat", check=True).stdout


@CNI_LABS
def test_the_nodes_conflist_is_the_labs_cni(lab, request):
    conf = json.loads((LabState(lab).node_dir("node-1") / "10-netplane.conflist").read_text())
    bridge = {"reference-cni": "bridge", "iptables": "netplane-bridge"}[request.node.callspec.params["lab"]]
    assert [p["type"] for p in conf["plugins"]] == [bridge, "portmap"]
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": get(lab, "nodes", "node-1")["spec"]["podCIDR"]}]]


@CNI_LABS
def test_the_underlay_client_reaches_a_nodeport(lab, tmp_path):
    path = service_manifest(tmp_path, "np-client", type="NodePort")
    cli(lab, "apply", "-f", path, check=True)
    port = get(lab, "services", "np-client")["spec"]["ports"][0]["nodePort"]
    for node_ip in (NODE_1, NODE_2):
        assert eventually(lambda: {from_client(lab, f"http://{node_ip}:{port}/hostname") for _ in range(12)}
                          == {"web-1", "web-2"})
    cli(lab, "delete", "-f", path, check=True)


@CNI_LABS
def test_a_hostport_is_reached_on_its_nodes_underlay_ip_until_the_pod_goes(lab, tmp_path):
    path = tmp_path / "hostport.yaml"
    apply_docs(lab, path, [objects.pod("hostport", {"app": "hostport"}, "node-1", ports=
                                    [{"containerPort": 8080, "hostPort": HOST_PORT}])])
    url = f"http://{NODE_1}:{HOST_PORT}"
    assert eventually(lambda: from_client(lab, f"{url}/hostname") == "hostport", timeout=30)
    # DNAT only: the pod sees the client's own address
    assert from_client(lab, f"{url}/clientip").split(":")[0] == "172.30.0.2"
    assert f"--dport {HOST_PORT}" in nat_rules(lab, "node-1")  # portmap's CNI-DN- chain
    assert from_client(lab, f"http://{NODE_2}:{HOST_PORT}/hostname") == ""  # only on the pod's node
    cli(lab, "delete", "-f", str(path), check=True)
    # DEL handed portmap the same portMappings, so it removed its rule
    assert eventually(lambda: f"--dport {HOST_PORT}" not in nat_rules(lab, "node-1"), timeout=30)
    assert from_client(lab, f"{url}/hostname") == ""


# --- without a lab ----------------------------------------------------------------------------

def test_hostports_become_portmappings_capability_args():
    pod = {"spec": {"containers": [
        {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
        {"name": "b", "ports": [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "172.30.0.11"}]},
    ]}}
    assert capability_args(pod) == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "172.30.0.11"}]}
    assert capability_args({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}) == {}


def test_the_reference_conflist_has_netplanes_shape_on_the_reference_plugins(tmp_path):
    ours = cni_config("10.244.3.0/24", 1450, tmp_path)["plugins"][0]
    bridge, portmap = network_config("reference", "10.244.3.0/24", 1450, tmp_path)["plugins"]
    assert bridge == ours | {"type": "bridge", "ipam": ours["ipam"] | {"type": "host-local"}}
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert [p["type"] for p in network_config("netplane", "10.244.3.0/24", 1450, tmp_path)["plugins"]] == [
        "netplane-bridge", "portmap"]


def test_a_conflist_file_gets_each_nodes_values(tmp_path):
    path = tmp_path / "mine.conflist"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "mine", "plugins": [
        {"type": "ptp", "mtu": "{{mtu}}", "ipam": {"type": "host-local", "dataDir": "{{dataDir}}/mine",
                                                   "ranges": [[{"subnet": "{{podCIDR}}"}]]}}]}))
    conf = network_config(str(path), "10.244.7.0/24", 1400, tmp_path / "ipam")
    assert conf["plugins"][0] == {"type": "ptp", "mtu": 1400, "ipam": {
        "type": "host-local", "dataDir": f"{tmp_path}/ipam/mine", "ranges": [[{"subnet": "10.244.7.0/24"}]]}}


def lab_with_cni(value: str, base: Path | None = None) -> model.Lab:
    return model.parse({"network": {"cni": value}}, base)


def test_the_lab_file_names_its_cni(tmp_path):
    assert lab_with_cni("reference").network.cni == "reference"
    assert model.parse({}).network.cni == "netplane"
    (tmp_path / "net.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "ipam": {"subnet": "{{podCIDR}}"}}]}))
    assert lab_with_cni("net.conflist", tmp_path).network.cni == str(tmp_path / "net.conflist")
    saved = model.from_dict(lab_with_cni("net.conflist", tmp_path).to_dict())
    assert saved.network.cni == str(tmp_path / "net.conflist")


@pytest.mark.parametrize("content, message", [
    (None, "'bad.conflist': choose netplane or reference, or give a conflist file ("),
    ("{oops", "is not a CNI network configuration: bad.conflist is not readable JSON"),
    ('{"cniVersion": "1.0.0", "name": "n"}', "has no plugins list"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}', "has no {{podCIDR}}; write it"),
])
def test_a_bad_cni_is_refused_naming_the_field_and_the_fix(tmp_path, content, message):
    if content is not None:
        (tmp_path / "bad.conflist").write_text(content)
    with pytest.raises(model.LabError) as refused:
        lab_with_cni("bad.conflist", tmp_path)
    assert refused.value.field == "network.cni"
    assert str(refused.value).startswith("lab file: network.cni: ") and message in str(refused.value)
