"""`netplane cni test`, the CNI conformance suite, on real plugins. Conventions for tests:

- the suite passes on netplane's own plugins (cni/, a conflist shaped like the node agent's) and on
  the reference bridge + host-local (/usr/lib/cni);
- it fails, naming the broken rule, on the deliberately broken plugins of tests/data/cni_broken/
  (wrappers around the reference bridge), each run only on the check its defect breaks;
- nothing is left behind: no ``np.cnit-*`` namespace, and the root namespace is untouched (the
  suite's plugins run in its own throw-away "host" namespace).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netplane.agent.node import cni_config
from netplane.cli.main import cli
from netplane.cni import conformance
from netplane.cni.runtime import plugin_dir
from netplane.kernel import netns

REFERENCE = "/usr/lib/cni"
BROKEN = str(Path(__file__).parent / "data" / "cni_broken")
POD_CIDR = "10.244.1.0/24"


def reference_conf(plugin: str = "bridge", version: str = "1.0.0") -> dict:
    return {"cniVersion": version, "name": "cnit", "type": plugin, "bridge": "cni0", "isGateway": True,
            "isDefaultGateway": True, "hairpinMode": True, "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]]}}


def run(conf: dict, dirs: list[str], only: list[str] | None = None) -> dict[str, conformance.Outcome]:
    loaded, exe = conformance.load(json.dumps(conf), dirs)
    return {o.id: o for o in conformance.run(loaded, dirs, exe, only)}


@pytest.fixture(autouse=True)
def no_leftover_namespaces():
    yield
    assert netns.listed("np.cnit-") == []


def test_suite_passes_on_netplane_plugins(tmp_path: Path):
    conf = cni_config(POD_CIDR, 1450, tmp_path / "ignored")  # the suite points dataDir at its own temp dir
    outcomes = run(conf, [plugin_dir()])
    assert [o.id for o in outcomes.values()] == [c.id for c in conformance.CHECKS]
    failed = {o.id: o.reason for o in outcomes.values() if o.result != conformance.PASS}
    assert failed == {}
    assert not (tmp_path / "ignored").exists()


def test_suite_passes_on_reference_plugins():
    outcomes = run(reference_conf(), [REFERENCE])
    failed = {o.id: o.reason for o in outcomes.values() if o.result != conformance.PASS}
    assert failed == {}


def test_check_is_skipped_before_0_4_0():
    outcomes = run(reference_conf(version="0.3.1"), [REFERENCE], ["version", "check"])
    assert outcomes["version"].result == conformance.PASS
    assert outcomes["check"].result == conformance.SKIP
    assert "0.4.0" in outcomes["check"].reason


@pytest.mark.parametrize("plugin, check, rule", [
    ("leaky-bridge", "del-cleanup", "DEL should remove what ADD made; left in the plugin's namespace: veth"),
    ("outside-bridge", "add-result", "outside the configured IPAM range ['10.244.1.0/24']"),
    ("outside-bridge", "add-applied", "result's addresses ['192.0.2.10/24'] are not on eth0"),
    ("lax-check-bridge", "check", "CHECK should fail once eth0 lost its address"),
])
def test_suite_fails_on_broken_plugin_naming_the_rule(plugin: str, check: str, rule: str):
    outcome = run(reference_conf(plugin), [BROKEN, REFERENCE], [check])[check]
    assert outcome.result == conformance.FAIL
    assert rule in outcome.reason
    assert f"[SPEC: {outcome.section}]" in outcome.reason


def test_cli_json_and_exit_status(tmp_path: Path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(reference_conf()))
    bad.write_text(json.dumps(reference_conf("outside-bridge")))
    runner = CliRunner()
    ok = runner.invoke(cli, ["cni", "test", "--conf", str(good), "--plugin-dir", REFERENCE,
                             "--check", "version", "--check", "bad-input", "-o", "json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["passed"] is True
    assert [(c["id"], c["result"]) for c in report["checks"]] == [("version", "pass"), ("bad-input", "pass")]
    failed = runner.invoke(cli, ["cni", "test", "--conf", str(bad), "--plugin-dir", BROKEN,
                                 "--plugin-dir", REFERENCE, "--check", "add-result"])
    assert failed.exit_code == 1
    assert "add-result" in failed.output and "FAIL" in failed.output and "outside the configured" in failed.output


def test_cli_refuses_what_it_cannot_test(tmp_path: Path):
    two = reference_conf() | {"plugins": [reference_conf(), reference_conf("ptp")]}
    (tmp_path / "two.json").write_text(json.dumps(two))
    (tmp_path / "missing.json").write_text(json.dumps(reference_conf("no-such-plugin")))
    runner = CliRunner()
    for name, message in [("two.json", "exactly one plugin"), ("missing.json", "'no-such-plugin' not found")]:
        result = runner.invoke(cli, ["cni", "test", "--conf", str(tmp_path / name), "--plugin-dir", REFERENCE])
        assert result.exit_code == 1 and message in result.output, result.output
    with pytest.raises(conformance.ConfError, match="unknown checks"):
        run(reference_conf(), [REFERENCE], ["no-such-check"])
