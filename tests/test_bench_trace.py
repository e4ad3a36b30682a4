"""`netplane bench trace` at its smallest: every path traced and requested once, on a real lab.
Speed is never asserted here; the README has the figures."""
from __future__ import annotations

from netplane import names
from netplane.bench import trace as bench
from netplane.kernel import netns


def test_every_path_is_traced_delivered_and_compared_with_curl():
    results = bench.run(1)
    assert [r.path for r in results] == ["pod to pod, one node", "pod to pod, two nodes", "pod to Service",
                                         "client to NodePort"]
    for r in results:
        assert r.delivered == 1 and len(r.trace) == len(r.peer) == 1 and r.ratio > 0
    assert not netns.listed(f"{names.NETNS_PREFIX}bench-")  # its lab is gone
