"""ipMasq for netplane-bridge: a pod's traffic to anywhere but its own subnet leaves masqueraded.

The reference bridge plugin does this with an iptables chain per attachment. Here one nftables
table per address family, ``netplane-ipmasq``, holds a ``postrouting`` NAT chain with a single
rule, ``<family> saddr vmap @sources``. Each pod address is one element of that map, commented
with its owner (network, container id, interface), that jumps to the chain of its subnet:
accept inside the subnet, masquerade elsewhere except multicast. ADD adds elements, DEL and GC
delete them by owner; each is one nft transaction per family in the namespace the plugin runs in.
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from netplane import names
from netplane.kernel import nft
from netplane.kernel.nftobjects import (ACCEPT, Chain, Element, Hook, Map, Masquerade, Match, Rule, Table, Transaction,
                                        VerdictMap, jump)

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
    by_family: dict[str, Transaction] = {}
    for address in addresses:
        family, kind, multicast = FAMILIES[address.version]
        chain, subnet = _subnet_chain(owner.network, str(address.network)), str(address.network)
        tx = by_family.get(family)
        if tx is None:
            tx = by_family[family] = Transaction(Table(family, TABLE))
            tx.add(tx.table)
            tx.add(Chain("postrouting", Hook("nat", "postrouting", "srcnat")))
            tx.add(Map("sources", kind))
            tx.flush(Chain("postrouting"))
            tx.add(Rule("postrouting", (VerdictMap((f"{family} saddr",), "sources"),)))
        tx.add(Chain(chain))
        tx.flush(Chain(chain))
        tx.add(Rule(chain, (Match(f"{family} daddr", subnet), ACCEPT)))
        tx.add(Rule(chain, (Match(f"{family} daddr", multicast, "!="), Masquerade(fully_random=False))))
        tx.add(Element("sources", (str(address.ip),), jump(chain), owner.comment))
    _apply(by_family.values())


def _apply(transactions: Iterable[Transaction]) -> None:
    for tx in transactions:
        asyncio.run(nft.Kernel().transact(None, tx))


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
    by_family = {}
    for family, _, _ in FAMILIES.values():
        going = [address for address, comment in _elements(family) if unwanted(comment)]
        if going:
            tx = by_family[family] = Transaction(Table(family, TABLE))
            for address in going:
                tx.delete(Element("sources", (address,)))
    _apply(by_family.values())


def delete(owner: Owner) -> None:
    """Stop masquerading the owner's addresses; none is fine."""
    _remove(lambda comment: comment == owner.comment)


def gc(network: str, keep: set[tuple[str, str]]) -> None:
    """Stop masquerading the network's addresses whose attachment is not among keep."""
    valid = {Owner(network, c, i).comment for c, i in keep}
    _remove(lambda comment: comment.startswith(f"{network} ") and comment not in valid)
