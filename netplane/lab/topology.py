"""Emulated hosts: a lab becomes an ordered plan of kernel steps, printable as `ip` commands, then
applied through netlink. Every step acts inside a namespace named after the lab; the root namespace
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

from contextlib import ExitStack
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from netplane import names
from netplane.kernel import netns, sysctl
from netplane.kernel.links import index, netlink
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


@dataclass(frozen=True)
class Step:
    """One kernel operation inside namespace `ns`; str() is the equivalent `ip` command."""

    ns: str
    op: str
    ifname: str = ""
    args: dict = field(default_factory=dict)

    def __str__(self) -> str:
        a = self.args
        text = {
            "netns": f"ip netns add {self.ns}",
            "bridge": f"ip -n {self.ns} link add {self.ifname} type bridge",
            "veth": f"ip -n {self.ns} link add {self.ifname} type veth peer name {a.get('peer')} netns {a.get('peer_ns')}",
            "master": f"ip -n {self.ns} link set {self.ifname} master {a.get('master')}",
            "addr": f"ip -n {self.ns} addr add {a.get('cidr')} dev {self.ifname}",
            "up": f"ip -n {self.ns} link set {self.ifname} up",
            "route": f"ip -n {self.ns} route add default via {a.get('gateway')} dev {self.ifname}",
            "sysctl": f"ip netns exec {self.ns} sysctl " + " ".join(f"{k}={v}" for k, v in a.items()),
        }
        return text[self.op]


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


def apply(steps: list[Step]) -> None:
    """Apply a plan: one netlink socket per namespace, reused for all of its steps."""
    with ExitStack() as stack:
        sockets: dict[str, IPRoute] = {}
        for step in steps:
            if step.op == "netns":
                netns.create(step.ns)
            elif step.op == "sysctl":
                sysctl.write(step.ns, step.args)
            else:
                if step.ns not in sockets:
                    sockets[step.ns] = stack.enter_context(netlink(step.ns))
                _link_step(sockets[step.ns], step)


def _link_step(ipr: IPRoute, step: Step) -> None:
    a = step.args
    if step.op == "bridge":
        ipr.link("add", ifname=step.ifname, kind="bridge", br_stp_state=0, br_forward_delay=0)
    elif step.op == "veth":
        ipr.link("add", ifname=step.ifname, kind="veth", peer={"ifname": a["peer"], "net_ns_fd": a["peer_ns"]})
    elif step.op == "master":
        ipr.link("set", index=index(ipr, step.ifname), master=index(ipr, a["master"]))
    elif step.op == "up":
        ipr.link("set", index=index(ipr, step.ifname), state="up")
    elif step.op == "addr":
        address, prefixlen = a["cidr"].split("/")
        ipr.addr("add", index=index(ipr, step.ifname), address=address, prefixlen=int(prefixlen))
    elif step.op == "route":
        ipr.route("add", dst="0.0.0.0/0", gateway=a["gateway"], oif=index(ipr, step.ifname))


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
