"""ipMasq for netplane-bridge: a pod's traffic to anywhere but its own subnet leaves masqueraded.

The reference bridge plugin does this with an iptables chain per attachment. Here one nftables
table per address family, ``netplane-ipmasq``, holds a ``postrouting`` NAT chain with a single
rule, ``<family> saddr vmap @sources``. Each pod address is one element of that map, commented
with its owner (network, container id, interface), that jumps to the chain of its subnet:
accept inside the subnet, masquerade elsewhere except multicast. ADD adds elements, DEL and GC
delete them by owner; each is one ``nft -f`` transaction in the namespace the plugin runs in.
"""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from netplane import names
from netplane.kernel import nft

TABLE = "netplane-ipmasq"
FAMILIES = {4: ("ip", "ipv4_addr", "224.0.0.0/4"), 6: ("ip6", "ipv6_addr", "ff00::/8")}
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Owner:
    network: str
    container_id: str
    ifname: str

    @property
    def comment(self) -> str:
        return f"{self.network} {self.container_id} {self.ifname}"


def _subnet_chain(network: str, subnet: str) -> str:
    return f"masq-{names.short_hash(network + subnet)}"


def add(owner: Owner, addresses: list[Interface]) -> None:
    """Masquerade what these addresses send outside their subnets (re-adding is harmless)."""
    lines = []
    for address in addresses:
        family, kind, multicast = FAMILIES[address.version]
        chain, subnet = _subnet_chain(owner.network, str(address.network)), str(address.network)
        lines += [
            f"add table {family} {TABLE}",
            f"add chain {family} {TABLE} postrouting {{ type nat hook postrouting priority srcnat; }}",
            f"add map {family} {TABLE} sources {{ type {kind} : verdict; }}",
            f"flush chain {family} {TABLE} postrouting",
            f"add rule {family} {TABLE} postrouting {family} saddr vmap @sources",
            f"add chain {family} {TABLE} {chain}",
            f"flush chain {family} {TABLE} {chain}",
            f"add rule {family} {TABLE} {chain} {family} daddr {subnet} accept",
            f"add rule {family} {TABLE} {chain} {family} daddr != {multicast} masquerade",
            f'add element {family} {TABLE} sources {{ {address.ip} comment "{owner.comment}" : jump {chain} }}',
        ]
    if lines:
        asyncio.run(nft.apply(None, "\n".join(lines) + "\n"))


def _elements(family: str) -> list[tuple[str, str]]:
    """(address, owner comment) of each element of the family's map; none without the table."""
    try:
        listed = asyncio.run(nft.listed_json(None, f"list map {family} {TABLE} sources"))
    except nft.NftError:
        return []
    found = []
    for item in listed:
        for key, _ in item.get("map", {}).get("elem", []):
            element = key.get("elem", {}) if isinstance(key, dict) else {"val": key}
            found.append((str(element.get("val")), str(element.get("comment", ""))))
    return found


def _remove(unwanted) -> None:
    """Delete every element whose owner comment unwanted(comment) picks."""
    lines = [f"delete element {family} {TABLE} sources {{ {address} }}"
             for family, _, _ in FAMILIES.values()
             for address, comment in _elements(family) if unwanted(comment)]
    if lines:
        asyncio.run(nft.apply(None, "\n".join(lines) + "\n"))


def delete(owner: Owner) -> None:
    """Stop masquerading the owner's addresses; none is fine."""
    _remove(lambda comment: comment == owner.comment)


def gc(network: str, keep: set[tuple[str, str]]) -> None:
    """Stop masquerading the network's addresses whose attachment is not among keep."""
    valid = {Owner(network, c, i).comment for c, i in keep}
    _remove(lambda comment: comment.startswith(f"{network} ") and comment not in valid)
