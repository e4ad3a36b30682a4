"""Whether a lab's data plane has caught up with its API objects, read from the kernel: every node
has an overlay route to every other node's podCIDR, and its proxy rules hold every Service's
ClusterIP and ready endpoints. `up` waits for this, so the first request after it cannot race the
agents (only the lab can check it: it alone sees the nodes' namespaces)."""
from __future__ import annotations

import asyncio
import re

from netplane import names
from netplane.kernel import iptables, nft, vxlan
from netplane.lab.model import Network

IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")  # a whole address, not a prefix of one


def _routes(node_netns: str) -> set[str]:
    """The podCIDRs the node's flannel.1 routes to."""
    held = vxlan.read(node_netns, names.VXLAN_IF)
    return set() if held is None else {dst for dst, _ in held.routes}


def expected_addresses(services: list[dict], slices: list[dict]) -> set[str]:
    """ClusterIPs and ready endpoint addresses the proxy rules must mention."""
    found = {s["spec"]["clusterIP"] for s in services if s.get("spec", {}).get("clusterIP") not in (None, "", "None")}
    found |= {a for s in slices for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready")
              for a in e["addresses"]}
    return found


def unmentioned(addresses: set[str], rules: str) -> list[str]:
    """The addresses no rule names as a whole address (10.96.0.1 is not in a rule for 10.96.0.10)."""
    return sorted(addresses - set(IPV4.findall(rules)))


async def proxy_rules(space: str, network: Network) -> str:
    """A node's kube-proxy rules as text, in the lab's proxy mode; empty while there are none."""
    try:
        if network.proxyMode == "nftables":
            return await nft.list_table(space, f"ip {names.NFT_TABLE}")
        return await iptables.save_text(space, network.iptablesBackend)
    except (nft.NftError, iptables.IptablesError):
        return ""


async def lagging_nodes(lab_name: str, network: Network, nodes: list[dict], services: list[dict],
                        slices: list[dict]) -> dict[str, str]:
    """The nodes whose kernel does not yet hold what the API says, with what each one misses."""
    cidrs = {n["metadata"]["name"]: n.get("spec", {}).get("podCIDR") for n in nodes}
    addresses = expected_addresses(services, slices)
    lagging = {}
    for name in cidrs:
        space = names.node_netns(lab_name, name)
        peers = {c for other, c in cidrs.items() if other != name and c}
        routes = await asyncio.to_thread(_routes, space)
        rules = await proxy_rules(space, network)
        missing = [f"no route to {c}" for c in sorted(peers - routes)]
        missing += [f"no rule for {a}" for a in unmentioned(addresses, rules)]
        if missing:
            lagging[name] = ", ".join(missing)
    return lagging
