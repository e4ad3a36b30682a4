"""Kernel steps: namespaces, links, addresses and routes as values, printable as the `ip` commands
that would make them, and applied through netlink with one socket per namespace."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from netplane.kernel import netns, sysctl
from netplane.kernel.links import index, netlink


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
