"""`netplane bench scale` at its smallest (3 nodes x 2 pods, Mininet with 3 bridges x 2 hosts);
speed is never asserted here, only that both sides ran and the report has its shape."""
from __future__ import annotations

import subprocess

import pytest

from netplane import names
from netplane.bench import scale as bench
from netplane.kernel import netns


@pytest.fixture(scope="module")
def mininet() -> None:
    """Debian's mininet (and bridge-utils for LinuxBridge), installed when missing."""
    bench.ensure_mininet(lambda line: None)


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_a_small_run_measures_both_sides_and_leaves_nothing(mininet):
    before = root_links()
    lines: list[str] = []
    rows = bench.run((3,), 2, lines.append)
    assert len(rows) == 1
    row = rows[0]
    assert (row.nodes, row.pods_per_node) == (3, 2)
    ours, peer = row.netplane, row.mininet
    assert ours.pods == 6 and ours.detail["pod_processes"] == 12  # per pod: its pause process and its echo server
    assert ours.detail["launchers"] == 3  # one launcher per node
    assert 0 < ours.up and 0 < ours.down
    assert 0 < ours.per_pod.pss <= ours.per_pod.rss <= ours.per_pod_max.rss
    assert ours.own_per_node.rss > 0 and ours.own_per_node.pss > 0
    assert {"namespaces and links", "control plane start", "pods Running"} <= set(ours.detail["phases"])
    # the peer really ran: Mininet built 3 bridges of 2 hosts and the bridge joining them
    assert peer.pods == 6 and peer.detail == {"switches": 4, "links": 9}
    assert 0 < peer.up and 0 < peer.down and peer.per_pod.rss > 0 and peer.own_per_node.rss > 0
    table = bench.table(rows)
    assert table[0].split()[:3] == ["size", "measure", "netplane"]
    assert len(table) == 1 + 6 and all(line.startswith("3 x 2") for line in table[1:])
    assert any("Mininet up" in line for line in lines)
    assert not [n for n in netns.listed(names.NETNS_PREFIX) if n.startswith(f"{names.NETNS_PREFIX}scale-")]
    assert root_links() == before  # Mininet's bridges and veths are gone
