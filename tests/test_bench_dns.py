"""`netplane bench dns` at its smallest: both servers answer the same load from the four client pods,
on a real lab. Speed is never asserted here; the README has the figures."""
from __future__ import annotations

from netplane import names
from netplane.bench import dns as bench
from netplane.kernel import netns


def test_both_servers_answer_the_load_and_the_lab_is_gone():
    results = bench.run(rate=200, seconds=1.0, rounds=1)
    assert [r.way for r in results] == ["netplane DNS (kube-dns)", "dnsmasq"]
    for r in results:
        assert r.answered >= 0.9 * r.offered and r.p99_ms > 0, r
    assert any("p99 ratio" in line for line in bench.lines(results))
    assert not netns.listed(f"{names.NETNS_PREFIX}bench-")  # its lab is gone
