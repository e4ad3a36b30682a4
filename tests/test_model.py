"""The lab file: defaults, and bad input refused with the field's name before anything is made."""
from __future__ import annotations

import pytest

from netplane.lab import model, topology


def test_default_lab_has_two_nodes_and_the_demo_app():
    lab = model.load(None)
    assert lab.name == "netplane"
    assert lab.nodes == ("node-1", "node-2")
    assert lab.network == model.Network("172.30.0.0/24", "10.244.0.0/16", "10.96.0.0/16", "nftables", "172.30.1.0/24")
    assert [m.rsplit("/", 1)[-1] for m in lab.manifests] == ["demo.yaml"]
    assert lab.node_ip("node-1") == "172.30.0.11" and lab.node_ip("node-2") == "172.30.0.12"


def test_name_override_and_node_count():
    lab = model.parse({"nodes": 3}, name="other")
    assert lab.name == "other" and lab.nodes == ("node-1", "node-2", "node-3")


@pytest.mark.parametrize("data, field", [
    ({"nodez": 2}, "nodez"),
    ({"network": {"podCIDR": "10.0.0.0/16"}}, "network.podCIDR"),
    ({"network": {"clusterCIDR": "10.244.0.0/33"}}, "network.clusterCIDR"),
    ({"network": {"underlay": "not-a-cidr"}}, "network.underlay"),
    ({"network": {"serviceCIDR": "10.244.128.0/20"}}, "network.serviceCIDR"),
    ({"network": {"underlay": "10.96.0.0/24"}}, "network.serviceCIDR"),
    ({"nodes": ["node-1", "node-1"]}, "nodes[1]"),
    ({"nodes": ["Node_1"]}, "nodes[0]"),
    ({"nodes": []}, "nodes"),
    ({"name": "has.dot"}, "name"),
    ({"network": {"proxyMode": "ipvs"}}, "network.proxyMode"),
    ({"manifests": ["missing.yaml"]}, "manifests[0]"),
    ({"network": {"clusterCIDR": "10.244.0.0/25"}}, "network.clusterCIDR"),
    ({"storage": "mysql://db:3306"}, "storage"),
    ({"nodeLeaseSeconds": 1}, "nodeLeaseSeconds"),
    ({"nodeResyncSeconds": 0}, "nodeResyncSeconds"),
    # ranges the kernel does not route between namespaces: a lab on them came up "Ready" and broken
    ({"network": {"underlay": "127.0.0.0/24"}}, "network.underlay"),
    ({"network": {"underlay": "169.254.0.0/24"}}, "network.underlay"),
    ({"network": {"clusterCIDR": "224.0.0.0/16"}}, "network.clusterCIDR"),
    ({"network": {"serviceCIDR": "0.0.0.0/16"}}, "network.serviceCIDR"),
    ({"network": {"loadBalancerPool": "240.0.0.0/24"}}, "network.loadBalancerPool"),
    ({"nodes": [f"n{i}" for i in range(201)]}, "nodes"),  # a list is capped as a count is
    ({"nodeResyncSeconds": "30s"}, "nodeResyncSeconds"),
    ({"addons": ["ingres"]}, "addons[0]"),
    ({"addons": "dns"}, "addons"),
    ({"addons": [], "dns": {"log": True}}, "dns"),  # settings of an add-on that is off
    ({"dns": {"hosts": {"Bad_Name": "10.0.0.1"}}}, "dns.hosts.Bad_Name"),
    ({"dns": {"hosts": {"registry.lab": "10.0.0.300"}}}, "dns.hosts.registry.lab"),
    ({"dns": {"log": "yes"}}, "dns.log"),
    ({"dns": {"forward": "8.8.8.8"}}, "dns.forward"),
    ({"network": {"dnsDomain": "Cluster.Local"}}, "network.dnsDomain"),
    ({"network": {"dnsDomain": "a..b"}}, "network.dnsDomain"),
    ({"network": {"dnsDomain": "corp.example\nnameserver 8.8.8.8"}}, "network.dnsDomain"),  # into resolv.conf
])
def test_bad_lab_files_name_the_field(data, field, tmp_path):
    with pytest.raises(model.LabError) as err:
        model.parse(data, tmp_path)
    assert err.value.field == field
    assert str(err.value).startswith(f"lab file: {field}: ")


def test_lab_round_trips_through_its_dict():
    lab = model.load(None)
    assert model.from_dict(lab.to_dict()) == lab
    named = model.parse({"dns": {"hosts": {"registry.lab.": "172.30.0.2"}, "log": True}})
    assert model.from_dict(named.to_dict()) == named and named.dns.hosts == {"registry.lab": "172.30.0.2"}
    assert model.parse({}).addons == ("dns",) and model.parse({"addons": []}).addons == ()
    domain = model.parse({"network": {"dnsDomain": "corp.internal"}})
    assert model.parse({}).network.dnsDomain == "cluster.local" and model.from_dict(domain.to_dict()) == domain
    sized = model.parse({"nodes": [{"name": "a", "labels": {"zone": "z"}, "capacity": {"cpu": "1", "pods": "5"}}, "b"]})
    assert sized.nodeCapacity == {"a": {"cpu": "1", "pods": "5"}} and model.from_dict(sized.to_dict()) == sized


@pytest.mark.parametrize("capacity, field", [
    ({"cpu": "x"}, "nodes[0].capacity.cpu"), ({"pods": "1.5"}, "nodes[0].capacity.pods"),
    ({"memory": "10Mi"}, "nodes[0].capacity.memory"), ({"gpu": "1"}, "nodes[0].capacity.gpu"),
    ("2", "nodes[0].capacity"),
])
def test_a_node_capacity_the_kubelet_could_not_report_is_refused(capacity, field):
    with pytest.raises(model.LabError) as err:
        model.parse({"nodes": [{"name": "a", "capacity": capacity}]})
    assert err.value.field == field


def test_plan_reads_as_ip_commands():
    lab = model.parse({"name": "demo", "nodes": ["a"]})
    assert [str(s) for s in topology.plan(lab)] == [
        "ip netns add np.demo.underlay",
        "ip -n np.demo.underlay link add br0 type bridge",
        "ip -n np.demo.underlay link set br0 up",
        "ip netns add np.demo.a",
        "ip netns exec np.demo.a sysctl net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 "
        "net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0",
        "ip -n np.demo.underlay link add to-a type veth peer name eth0 netns np.demo.a",
        "ip -n np.demo.underlay link set to-a master br0",
        "ip -n np.demo.underlay link set to-a up",
        "ip -n np.demo.a addr add 172.30.0.11/24 dev eth0",
        "ip -n np.demo.a link set eth0 up",
        "ip -n np.demo.a route add default via 172.30.0.1 dev eth0",
        "ip netns add np.demo.client",
        "ip -n np.demo.underlay link add to-client type veth peer name eth0 netns np.demo.client",
        "ip -n np.demo.underlay link set to-client master br0",
        "ip -n np.demo.underlay link set to-client up",
        "ip -n np.demo.client addr add 172.30.0.2/24 dev eth0",
        "ip -n np.demo.client link set eth0 up",
    ]


def test_nodes_may_carry_labels_for_zones():
    lab = model.parse({"nodes": [{"name": "a", "labels": {"topology.kubernetes.io/zone": "z1"}}, "b"]})
    assert lab.nodes == ("a", "b") and lab.nodeLabels == {"a": {"topology.kubernetes.io/zone": "z1"}}
    assert model.from_dict(lab.to_dict()) == lab
    with pytest.raises(model.LabError) as err:
        model.parse({"nodes": [{"name": "a", "labels": {"bad key!": "x"}}]})
    assert err.value.field == "nodes[0].labels.bad key!"
    with pytest.raises(model.LabError) as err:
        model.parse({"nodeLabels": {}})
    assert err.value.field == "nodeLabels"


def test_storage_is_sqlite_or_etcd_urls():
    assert model.parse({}).storage == "sqlite"
    assert model.parse({"storage": "etcd://127.0.0.1:2379"}).storage == "etcd://127.0.0.1:2379"
    assert model.parse({}, storage="etcd://a:1,b:2/lab/registry").storage == "etcd://a:1,b:2/lab/registry"


@pytest.mark.parametrize("control_plane, message", [
    ({"mode": "cloud"}, "choose embedded"),
    ({"replicas": 2}, "an etcd cluster of 2 needs 2 members for a quorum"),
    ({"replicas": 3, "mode": "hosts"}, "need mode: hosts and storage: etcd"),
    ({"mode": "hosts", "storage": "mysql"}, "choose sqlite or etcd"),
    ({"replicas": 0}, r"give 1 \(or 3\)"),
    ({"mode": "hosts", "size": 1}, "unknown field"),
])
def test_control_plane_options_are_checked_with_the_reason(control_plane, message):
    with pytest.raises(model.LabError, match=message) as err:
        model.parse({"controlPlane": control_plane})
    assert err.value.field.startswith("controlPlane")


def test_a_hosts_control_plane_gets_its_own_host_on_the_underlay_and_nodes_may_not_take_its_name():
    lab = model.parse({"name": "demo", "controlPlane": {"mode": "hosts"}})
    assert lab.control_plane_ips == ["172.30.0.3"] and model.from_dict(lab.to_dict()) == lab
    ha = model.parse({"controlPlane": {"mode": "hosts", "replicas": 3, "storage": "etcd"}})
    assert ha.control_plane_ips == ["172.30.0.3", "172.30.0.4", "172.30.0.5"]
    plan = [str(step) for step in topology.plan(lab)]
    assert "ip -n np.demo.cp-1 addr add 172.30.0.3/24 dev eth0" in plan
    with pytest.raises(model.LabError, match="one of the lab's own hosts"):
        model.parse({"nodes": ["node-1", "cp-1"]})


def test_a_file_that_is_not_yaml_text_is_refused_without_a_traceback(tmp_path):
    binary = tmp_path / "lab.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(model.LabError, match="is not a text file"):
        model.load(str(binary))
    with pytest.raises(model.LabError, match="is a directory"):
        model.load(str(tmp_path))


@pytest.mark.parametrize("images, where, message", [
    ([], "images", "give a mapping of image names"),
    ({"app": "python3"}, "images.app", "give a mapping with entrypoint"),
    ({"app": {"entrypoint": "python3"}}, "images.app.entrypoint", "give a list of strings"),
    ({"app": {"env": {"A": "1"}}}, "images.app", "give an entrypoint or a cmd"),
    ({"app": {"cmd": ["x"], "workingDir": "srv"}}, "images.app.workingDir", "give an absolute path"),
    ({"app": {"cmd": ["x"], "user": "nobody"}}, "images.app.user", "unknown field"),
])
def test_lab_images_are_checked_with_the_field_and_the_fix(images, where, message):
    with pytest.raises(model.LabError, match=message) as err:
        model.parse({"images": images})
    assert err.value.field == where


def test_lab_images_survive_the_state_file():
    lab = model.parse({"images": {"registry.local/*": {"cmd": ["sleep", "9"], "env": {"A": "1"}}}})
    assert model.from_dict(lab.to_dict()) == lab
