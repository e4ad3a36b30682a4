"""Emulated hosts: a lab becomes an ordered plan of kernel steps (kernel/steps.py), printable as `ip`
commands, then applied through netlink. Every step acts inside a namespace named after the lab; the root namespace
is never touched, so tearing a lab down is removing its namespaces.

    np.<lab>.underlay   br0 (the underlay switch), one port `to-<node>` per node and `to-client`
    np.<lab>.client     a host outside the cluster on the underlay (172.30.0.2), as a user reaches
                        NodePorts and load balancers; the emulated cloud routes LoadBalancer IPs
                        from it to the nodes
    np.<lab>.cp-<i>     with controlPlane.mode hosts: the hosts of `netplane server` (172.30.0.3, .4, ...)
    np.<lab>.<node>     eth0 (172.30.0.11/24, ...), lo, forwarding on, bridged IPv4 through netfilter,
                        a default route via 172.30.0.1 as a real node has one (so ClusterIPs and
                        no-endpoint rejects behave as on a cluster); no host holds .1, and the
                        underlay has no uplink, so nothing leaves the lab
"""
from __future__ import annotations

from netplane import names
from netplane.kernel import netns
from netplane.kernel.steps import Step
from netplane.lab.model import Lab

NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # kube-proxy needs bridged pod-to-pod traffic to pass the node's netfilter, so that a reply
    # from an endpoint on the same bridge is un-DNATed (the br_netfilter requirement of Kubernetes).
    "net.bridge.bridge-nf-call-iptables": "1",
    # no ICMP redirects, as hardened nodes have it (CIS benchmark): the lab's one underlay client
    # stands for every outside client, and the redirects a node sends it for traffic it routes back
    # out of eth0 (to the Service range, say) use up the kernel's per-host ICMP budget, so that a
    # Service's REJECT would reach the client as a timeout
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
}


def plan(lab: Lab) -> list[Step]:
    """The steps that build the lab's underlay and nodes, in order."""
    switch = names.underlay_netns(lab.name)
    steps = [Step(switch, "netns"), Step(switch, "bridge", names.UNDERLAY_SWITCH_IF)]
    steps.append(Step(switch, "up", names.UNDERLAY_SWITCH_IF))
    for node in lab.nodes:
        node_ns = names.node_netns(lab.name, node)
        port = names.switch_port(node)
        steps += [
            Step(node_ns, "netns"),
            Step(node_ns, "sysctl", args=dict(NODE_SYSCTLS)),
            Step(switch, "veth", port, {"peer": names.UNDERLAY_IF, "peer_ns": node_ns}),
            Step(switch, "master", port, {"master": names.UNDERLAY_SWITCH_IF}),
            Step(switch, "up", port),
            Step(node_ns, "addr", names.UNDERLAY_IF, {"cidr": f"{lab.node_ip(node)}/{lab.underlay_prefixlen}"}),
            Step(node_ns, "up", names.UNDERLAY_IF),
            Step(node_ns, "route", names.UNDERLAY_IF, {"gateway": lab.underlay_gateway}),
        ]
    hosts = [(names.client_netns(lab.name), "client", lab.client_ip)]
    if lab.controlPlane.mode == "hosts":
        hosts += [(names.control_plane_netns(lab.name, i), names.control_plane_host(i), address)
                  for i, address in enumerate(lab.control_plane_ips, 1)]
    for space, role, address in hosts:
        port = names.switch_port(role)
        steps += [
            Step(space, "netns"),
            Step(switch, "veth", port, {"peer": names.UNDERLAY_IF, "peer_ns": space}),
            Step(switch, "master", port, {"master": names.UNDERLAY_SWITCH_IF}),
            Step(switch, "up", port),
            Step(space, "addr", names.UNDERLAY_IF, {"cidr": f"{address}/{lab.underlay_prefixlen}"}),
            Step(space, "up", names.UNDERLAY_IF),
        ]
    return steps


def lab_namespaces(lab_name: str) -> list[str]:
    """Every namespace of the lab: pods first, then nodes, the underlay last."""
    found = netns.listed(names.lab_prefix(lab_name))
    underlay = names.underlay_netns(lab_name)
    pods = [n for n in found if ".pod." in n]
    return pods + [n for n in found if n not in pods and n != underlay] + [n for n in found if n == underlay]


def teardown(lab_name: str) -> list[str]:
    """Kill every process inside the lab's namespaces, then remove the namespaces; returns them."""
    spaces = lab_namespaces(lab_name)
    netns.kill_all_in(spaces)
    for name in spaces:
        netns.delete(name)
    return spaces
