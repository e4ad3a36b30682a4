"""The typed nftables transaction and its strict fake: what the fake refuses, the real kernel refuses
too (and what it accepts, the kernel accepts, ending in the same table); a refused transaction
changes nothing in either."""
from __future__ import annotations

import asyncio

import pytest

from labtools import nft_table
from netplane.kernel import nft
from netplane.kernel.nftfake import Fake, FakeError
from netplane.kernel.nftobjects import (
    ACCEPT, IP_SADDR, Chain, Element, Hook, Lookup, Map, Match, Rule, Set, Table, Transaction, goto, jump)

TABLE = Table("ip", "fakecheck")


def base() -> Transaction:
    """A table with chains a (with a rule jumping to b) and b, a set s in use, a map m with one element."""
    tx = Transaction(TABLE)
    tx.add(TABLE)
    for chain in (Chain("a"), Chain("b"), Chain("in", Hook("filter", "input", "0"))):
        tx.add(chain)
    tx.add(Set("s", "ipv4_addr"))
    tx.add(Map("m", "ipv4_addr"))
    tx.add(Rule("a", (jump("b"),)))
    tx.add(Rule("in", (Lookup((IP_SADDR,), "s"), ACCEPT)))
    tx.add(Element("m", ("10.0.0.1",), goto("b")))
    return tx


def one(*ops: tuple[str, object]) -> Transaction:
    tx = Transaction(TABLE)
    for verb, obj in ops:
        getattr(tx, verb)(obj)
    return tx


REFUSED = {  # what the kernel refuses, as the fake must
    "a rule jumps to a missing chain": one(("add", Rule("b", (jump("nope"),)))),
    "a rule reads a missing set": one(("add", Rule("b", (Lookup((IP_SADDR,), "nope"), ACCEPT)))),
    "a map element goes to a missing chain": one(("add", Element("m", ("10.0.0.2",), goto("nope")))),
    "a chain in use is deleted": one(("delete", Chain("b"))),
    "a set in use is deleted": one(("delete", Set("s", "ipv4_addr"))),
    "a missing element is deleted": one(("delete", Element("m", ("10.0.0.9",)))),
    "a map key is added with another verdict": one(("add", Element("m", ("10.0.0.1",), goto("a")))),
    "a missing chain is flushed": one(("flush", Chain("nope"))),
    "an existing chain is created": one(("create", Chain("a"))),
    "a base chain's hook changes": one(("add", Chain("in", Hook("filter", "input", "10")))),
    "a set's declaration changes": one(("add", Set("s", "ipv4_addr", ("interval",)))),
    "the good part of a bad transaction": one(("add", Rule("b", (ACCEPT,))), ("add", Rule("b", (jump("nope"),)))),
}
ACCEPTED = {  # what the kernel takes, as the fake must
    "the same map element again": one(("add", Element("m", ("10.0.0.1",), goto("b")))),
    "an existing chain added again": one(("add", Chain("a")), ("add", Chain("in", Hook("filter", "input", "0")))),
    "a chain deleted with its rules": one(("delete", Chain("a"))),
    "a chain emptied, then deleted": one(("flush", Chain("a")), ("delete", Element("m", ("10.0.0.1",))),
                                         ("delete", Chain("b"))),
    "a set's match with a mask and an anonymous set": one(
        ("add", Rule("b", (Match(IP_SADDR, ("10.1.0.0/16", "10.2.0.0/16"), "!="), ACCEPT))),
        ("add", Rule("b", (Match("meta mark", 0, "==", mask=0x4000), ACCEPT)))),
}


@pytest.fixture
def space(make_netns):
    made = make_netns("fake")
    yield made
    nft.release(made)


def kernel_dump(space: str) -> dict:
    return nft_table(space, TABLE.text())


@pytest.mark.parametrize("case", REFUSED)
def test_what_the_fake_refuses_the_kernel_refuses_and_neither_changes(case, space):
    fake = Fake()
    fake.apply(base())
    asyncio.run(nft.apply(space, base().text()))
    before, kernel_before = fake.dump(), kernel_dump(space)
    with pytest.raises(FakeError):
        fake.apply(REFUSED[case])
    with pytest.raises(nft.NftError):
        asyncio.run(nft.apply(space, REFUSED[case].text()))
    assert fake.dump() == before and kernel_dump(space) == kernel_before
    assert fake.transactions == 1


@pytest.mark.parametrize("case", ACCEPTED)
def test_what_the_fake_accepts_the_kernel_accepts_with_the_same_result(case, space, make_netns):
    fake = Fake()
    fake.apply(base())
    fake.apply(ACCEPTED[case])
    asyncio.run(nft.apply(space, base().text() + ACCEPTED[case].text()))
    loaded = make_netns("fake-dump")
    asyncio.run(nft.apply(loaded, fake.dump()))
    assert kernel_dump(loaded) == kernel_dump(space)
    nft.release(loaded)


def test_a_transaction_counts_its_operations_and_batches_elements():
    tx = base()
    tx.add(Element("m", ("10.0.0.2",), goto("a")))
    assert tx.counts() == {"add table": 1, "add chain": 3, "add set": 1, "add map": 1, "add rule": 2, "add element": 2}
    assert tx.commands().splitlines()[-1] == "add element ip fakecheck m { 10.0.0.1 : goto b, 10.0.0.2 : goto a }"
    # only adds: one block (the kernel tests above load it and compare it with the fake's commands)
    assert tx.text().startswith("table ip fakecheck {\n") and "\tmap m { type ipv4_addr : verdict; elements = { " \
        "10.0.0.1 : goto b, 10.0.0.2 : goto a } }" in tx.text()
    with pytest.raises(ValueError):
        one(("delete", Rule("a", (ACCEPT,)))).text()  # rules go with their chain's flush
