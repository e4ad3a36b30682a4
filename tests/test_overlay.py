"""The flannel-like overlay: peers from Node annotations, then the kernel's ARP/FDB/routes on flannel.1."""
from __future__ import annotations

import subprocess

from netplane import names
from netplane.agent import overlay
from netplane.kernel import links, steps
from netplane.lab import model, topology


def node(name, cidr, mac, ip):
    return {"metadata": {"name": name, "annotations": overlay.annotations(mac, ip)}, "spec": {"podCIDR": cidr}}


def test_annotations_are_flannels():
    notes = overlay.annotations("aa:bb:cc:dd:ee:ff", "172.30.0.11")
    assert notes == {
        "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}',
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/public-ip": "172.30.0.11",
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
    }


def test_desired_state_has_one_entry_of_each_kind_per_peer():
    nodes = [node("node-1", "10.244.0.0/24", "aa:aa:aa:aa:aa:01", "172.30.0.11"),
             node("node-2", "10.244.1.0/24", "AA:AA:AA:AA:AA:02", "172.30.0.12"),
             {"metadata": {"name": "node-3"}, "spec": {}}]
    want = overlay.desired(overlay.peers(nodes, "node-1"))
    assert want.neighbours == {("10.244.1.0", "aa:aa:aa:aa:aa:02")}
    assert want.fdb == {("aa:aa:aa:aa:aa:02", "172.30.0.12")}
    assert want.routes == {("10.244.1.0/24", "10.244.1.0")}


def test_two_nodes_reach_each_other_over_vxlan(lab_name):
    lab = model.parse({"name": lab_name})
    try:
        steps.apply(topology.plan(lab))
        published = []
        for i, name in enumerate(lab.nodes):
            space = names.node_netns(lab_name, name)
            ip, mtu = links.ipv4_and_mtu(space, "eth0")
            mac = overlay.ensure_device(space, ip, f"10.244.{i}.0/24", mtu - names.VXLAN_OVERHEAD)
            assert overlay.ensure_device(space, ip, f"10.244.{i}.0/24", mtu - names.VXLAN_OVERHEAD) == mac
            published.append(node(name, f"10.244.{i}.0/24", mac, ip))
        for name in lab.nodes:
            want = overlay.desired(overlay.peers(published, name))
            assert overlay.apply(names.node_netns(lab_name, name), want) == want
        one = names.node_netns(lab_name, "node-1")
        ping = subprocess.run(["nsenter", f"--net=/run/netns/{one}", "ping", "-c1", "-W2", "10.244.1.0"],
                              capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout
        link = subprocess.run(["ip", "-n", one, "-d", "link", "show", "flannel.1"], capture_output=True, text=True).stdout
        assert "vxlan id 1 local 172.30.0.11" in link and "dstport 8472" in link and "mtu 1450" in link
        # given what it applied last, a pass writes only the difference and reads nothing back: a
        # route lost behind its back stays lost until the next pass that reads the kernel
        want = overlay.desired(overlay.peers(published, "node-1"))
        subprocess.run(["ip", "-n", one, "route", "del", "10.244.1.0/24"], check=True)
        assert overlay.apply(one, want, want) == want
        assert "10.244.1.0/24" not in subprocess.run(["ip", "-n", one, "route"], capture_output=True, text=True).stdout
        assert overlay.apply(one, want) == want
        # a peer that leaves takes its route, ARP and FDB entries with it, with or without a read
        assert overlay.apply(one, overlay.desired(()), want) == overlay.desired(())
        assert overlay.apply(one, overlay.desired(())) == overlay.desired(())
    finally:
        topology.teardown(lab_name)


def test_up_waits_for_each_address_itself_not_one_that_contains_it():
    from netplane.lab import converge
    rules = "ip daddr 10.96.0.10 tcp dport 53 goto service-x\n\t\tdnat to 10.244.1.4:53\n"
    assert converge.unmentioned({"10.96.0.1", "10.96.0.10", "10.244.1.4", "10.244.1.40"}, rules) == [
        "10.244.1.40", "10.96.0.1"]
