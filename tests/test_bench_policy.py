"""`netplane bench policy` at a tiny size: every figure is there, the server the policies isolate
let the client's connections in through the node's policy table (and nothing else would), and the
throw-away namespaces are gone afterwards. No timing is asserted: speed is for the benchmark to
show, not for a test to guess."""
from __future__ import annotations

import json
import secrets

from netplane.agent.policy import enforcer, model
from netplane.bench import policy as bench
from netplane.bench.proxy import BACKENDS, CLIENT_IP, LAB
from netplane.kernel import netns


def test_the_made_up_cluster_isolates_the_server_and_allows_the_client_only_by_its_policies():
    opts = bench.Options(pods=200, policies=100)
    pods, spaces, policies = bench.cluster(opts)
    found = enforcer.cluster(pods, spaces, policies)
    allowed = model.connection(found, CLIENT_IP, BACKENDS[0], "TCP", 8080)
    ingress = allowed.judgements[-1]
    assert allowed.allowed and len(ingress.isolated_by) == opts.policies // bench.LABELS
    assert all(key.startswith(f"ns{bench.NAMESPACES - 1}/") for key in ingress.isolated_by)
    stranger = next(p["status"]["podIP"] for p in pods[2:] if p["metadata"]["namespace"] == "ns5")
    assert not model.connection(found, stranger, BACKENDS[0], "TCP", 8080).allowed
    assert not model.connection(found, CLIENT_IP, BACKENDS[0], "TCP", 81).allowed


def test_tiny_benchmark_reports_every_figure_and_leaves_no_namespace():
    tag = secrets.token_hex(3)
    lines: list[str] = []
    try:
        result = bench.run(bench.Options(pods=60, policies=50, connects=20, changes=2, warmup=3, tag=tag), lines.append)
    finally:
        assert netns.listed(f"np.{LAB}.{tag}") == []
    data = json.loads(json.dumps(result.to_json()))
    assert data["pods"] == 60 and data["policies"] == 50 and data["elements"] > 0
    assert {k: len(v) for k, v in result.connect_s.items()} == {"bare": 20, "none": 20, "policies": 20}
    assert len(result.policy_change_s) == len(result.pod_change_s) == 2 and result.full_sync_s > 0
    table = "\n".join(bench.table(result))
    assert "one new pod" in table and "target first packet within 1.2x" in table
    assert lines[0].startswith("full sync of 50 policies over 60 pods")
