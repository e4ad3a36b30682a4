"""`netplane bench proxy` at a tiny size: every figure is there, the traffic went through the
Service's DNAT to the real listeners, and the throw-away namespaces are gone afterwards (also after
a ^C). No timing is asserted: speed is for the benchmark to show, not for a test to guess."""
from __future__ import annotations

import ipaddress
import json
import secrets

import pytest

from netplane.bench import proxy as bench
from netplane.kernel import netns


def leftovers(tag: str) -> list[str]:
    return netns.listed(f"np.{bench.LAB}.{tag}.")


def runnable_modes() -> tuple[str, ...]:
    return tuple(m for m in bench.MODES if not bench.available(m))


def test_services_are_upstream_shaped_and_the_target_has_the_real_listeners():
    ports = bench.services(10)
    assert len({sp.cluster_ip for sp in ports}) == len({sp.id for sp in ports}) == 10
    for sp in ports:
        assert ipaddress.ip_address(sp.cluster_ip) in ipaddress.ip_network("10.96.0.0/16")
        assert (sp.protocol, sp.port, len(sp.endpoints)) == ("tcp", 80, 3)
        assert {e.port for e in sp.endpoints} == {8080}
        assert all(ipaddress.ip_address(e.ip) in ipaddress.ip_network(bench.CLUSTER_CIDR) for e in sp.endpoints)
    assert tuple(e.ip for e in ports[bench.target_index(10)].endpoints) == bench.BACKENDS
    moved = bench.changed(ports, 3, 0)
    assert moved.id == ports[3].id and moved.endpoints[1:] == ports[3].endpoints[1:]
    assert moved.endpoints[0] != ports[3].endpoints[0]


def test_slow_mode_runs_above_the_limit_only_when_asked(monkeypatch):
    ran = []
    monkeypatch.setattr(bench, "available", lambda mode: "")
    monkeypatch.setattr(bench, "measure", lambda rounds, opts, progress: {
        key: ran.append(key) or bench.Round(*key) for key in rounds})
    result = bench.run(bench.Options(services=(1_000, 10_000), modes=bench.MODES))
    assert ("iptables-nft", 10_000) not in ran and ("iptables-legacy", 10_000) in ran
    assert ("nftables", 100) in ran and ("iptables-nft", 1_000) in ran
    assert "--slow" in result.skipped["iptables-nft 10000"]
    ran.clear()
    bench.run(bench.Options(services=(1_000, 10_000), modes=bench.MODES, slow=True))
    assert ("iptables-nft", 10_000) in ran


def test_tiny_benchmark_reports_every_figure_and_leaves_no_namespace():
    tag = secrets.token_hex(3)
    opts = bench.Options(services=(20,), baseline=10, connects=20, warmup=3, changes=2, modes=runnable_modes(),
                         tag=tag)
    lines: list[str] = []
    try:
        result = bench.run(opts, lines.append)
    finally:
        assert leftovers(tag) == []
    assert set(result.rounds) == set(opts.modes) and "nftables" in result.rounds
    for mode, by_size in result.rounds.items():
        assert sorted(by_size) == [10, 20]
        for n, r in by_size.items():
            assert r.error == "", f"{mode} at {n}: {r.error}"
            assert r.full_sync_s > 0 and r.resync_s > 0
            assert len(r.change_s) == 2 and all(t > 0 for t in r.change_s)
            assert len(r.connect_s) == 20 and all(t > 0 for t in r.connect_s)
            assert r.connect_percentile(50) <= r.connect_percentile(99)
            # every connect (warm-up included) reached one of the target's endpoints through the DNAT,
            # and each was a flow of its own in the node's conntrack table
            assert set(r.accepted) == set(bench.BACKENDS) and sum(r.accepted.values()) == 23
            assert r.flows >= 23
    assert len(lines) == len(opts.modes) * 2 + 1 + len(result.skipped)  # a line a round, one for the connects
    report = "\n".join(bench.table(result))
    assert "first packet p50 20 / 10" in report and "full sync, 20 Services" in report
    json.dumps(result.to_json())


def test_namespaces_are_removed_when_interrupted(monkeypatch):
    tag = secrets.token_hex(3)

    def interrupted(*args, **kwargs):
        assert len(leftovers(tag)) == 6  # client, node and backend of both sizes exist meanwhile
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "connect_times", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run(bench.Options(services=(20,), baseline=10, changes=1, modes=("nftables",), tag=tag))
    assert leftovers(tag) == []


def test_a_failing_size_is_reported_and_the_others_still_measured(monkeypatch):
    tag = secrets.token_hex(3)
    real = bench.syncs

    def syncs(runner, mode, n, topo, opts):
        if n == 20:
            raise RuntimeError("nft said no")
        return real(runner, mode, n, topo, opts)

    monkeypatch.setattr(bench, "syncs", syncs)
    result = bench.run(bench.Options(services=(20,), baseline=10, connects=5, warmup=1, changes=1,
                                     modes=("nftables",), tag=tag))
    assert leftovers(tag) == []
    assert "nft said no" in result.rounds["nftables"][20].error
    assert result.get("nftables", 20) is None and len(result.get("nftables", 10).connect_s) == 5
    assert any("failed: nftables at 20 Services" in line for line in bench.table(result))
