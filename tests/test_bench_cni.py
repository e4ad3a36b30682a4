"""`netplane bench cni` at its smallest, on the real plugins; speed is never asserted here."""
from __future__ import annotations

from netplane import names
from netplane.bench import cni as bench
from netplane.kernel import netns


def test_both_plugin_sets_attach_detach_and_attach_in_parallel(tmp_path):
    results = bench.compare(2, 3, tmp_path)
    assert [r.label for r in results] == ["reference bridge + host-local", "netplane-bridge + netplane-host-local"]
    for r in results:
        assert len(r.adds) == len(r.dels) == 2 and r.distinct and r.parallel > 0
    assert "ratio netplane / reference: ADD median" in bench.lines(results)[-1]
    assert not netns.listed(f"{names.NETNS_PREFIX}bench-")
