"""kernel/nft.py on the real kernel: transactions through libnftables in this process land in the
namespace they name, also after that namespace was replaced under the same name, and in the calling
thread's own namespace when none is named (the CNI server's threads each enter another)."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from conftest import unique_lab
from netplane.kernel import netns, nft


def tables(space: str) -> str:
    return asyncio.run(nft.list_ruleset(space))


@pytest.fixture
def spaces():
    names = [f"np.{unique_lab()}.nft-{i}" for i in range(2)]
    for name in names:
        netns.create(name)
    yield names
    for name in names:
        nft.release(name)
        netns.delete(name)


def test_a_transaction_lands_in_the_named_namespace_and_an_error_names_the_cause(spaces):
    one, two = spaces
    asyncio.run(nft.apply(one, "add table ip first\nadd chain ip first c\n"))
    assert "table ip first" in tables(one) and "table ip first" not in tables(two)
    before = asyncio.run(nft.generation(one))
    with pytest.raises(nft.NftError, match="No such file or directory"):
        asyncio.run(nft.apply(one, "add rule ip first nochain accept\n"))
    asyncio.run(nft.apply(one, "add rule ip first c accept\n"))
    assert asyncio.run(nft.generation(one)) != before  # every committed transaction moves it on
    listed = asyncio.run(nft.listed_json(one, "list chains ip", terse=True))
    assert [i["chain"]["name"] for i in listed if "chain" in i] == ["c"]


def test_a_namespace_made_again_under_its_name_gets_a_new_context(spaces):
    one, _ = spaces
    asyncio.run(nft.apply(one, "add table ip old\n"))
    netns.delete(one)
    netns.create(one)
    asyncio.run(nft.apply(one, "add table ip new\n"))
    assert "table ip new" in tables(one) and "table ip old" not in tables(one)


def test_no_namespace_means_the_calling_threads_own(spaces):
    one, two = spaces
    for space, table in ((one, "here1"), (two, "here2")):
        netns.run_in(space, lambda table=table: asyncio.run(nft.apply(None, f"add table ip {table}\n")))
    assert "here1" in tables(one) and "here2" not in tables(one)
    assert "here2" in tables(two) and "here1" not in tables(two)


def test_a_process_in_a_namespace_keeps_one_context_for_its_own(spaces):
    """As `netplane agent` runs in a node: no namespace named, the process's own."""
    one, _ = spaces
    script = ("import asyncio\nfrom netplane.kernel import nft\n"
              "async def main():\n"
              "    await nft.apply(None, 'add table ip own')\n"
              "    before = await nft.generation(None)\n"
              "    await nft.apply(None, 'add chain ip own c')\n"
              "    print(len(nft._contexts), before != await nft.generation(None))\n"
              "asyncio.run(main())\n")
    ran = subprocess.run(netns.command(one, [sys.executable, "-c", script]), capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["1", "True"] and "table ip own" in tables(one)
