"""Whether a lab's data plane has caught up with its API objects, read from the kernel: every node
has an overlay route to every other node's podCIDR, and its proxy rules hold every Service's
ClusterIP and ready endpoints. `up` waits for this, so the first request after it cannot race the
agents (only the lab can check it: it alone sees the nodes' namespaces)."""
from __future__ import annotations

import asyncio
import socket

from netplane import names
from netplane.kernel import iptables, nft
from netplane.kernel.links import index, netlink
from netplane.lab.model import Network


def _routes(node_netns: str) -> set[str]:
    with netlink(node_netns) as ipr:
        vxlan = index(ipr, names.VXLAN_IF)
        if vxlan is None:
            return set()
        return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=socket.AF_INET)
                if r.get_attr("RTA_OIF") == vxlan and r.get_attr("RTA_DST")}


def expected_addresses(services: list[dict], slices: list[dict]) -> set[str]:
    """ClusterIPs and ready endpoint addresses the proxy rules must mention."""
    found = {s["spec"]["clusterIP"] for s in services if s.get("spec", {}).get("clusterIP") not in (None, "", "None")}
    found |= {a for s in slices for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready")
              for a in e["addresses"]}
    return found


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
        missing += [f"no rule for {a}" for a in sorted(addresses) if a not in rules]
        if missing:
            lagging[name] = ", ".join(missing)
    return lagging
