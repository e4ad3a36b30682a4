"""`netplane cni test`, the CNI conformance suite, on real plugins. Conventions for tests:

- the suite passes on netplane's own plugins (cni/, a conflist shaped like the node agent's) and on
  the reference bridge, ptp, macvlan and ipvlan with host-local, and bridge and macvlan with static
  (/usr/lib/cni; configs in tests/data/cni_confs/), skipping only what a plugin does not claim (GC
  and STATUS are 1.1.0; Debian's plugins stop at 1.0.0) or what its IPAM rules out (static: no
  distinct addresses); ipvlan needs a kernel with ipvlan links and is skipped without one;
- it fails, naming the broken rule, on the deliberately broken plugins of tests/data/cni_broken/
  (wrappers around the reference bridge, or netplane's for 1.1.0 checks), each run only on the
  check its defect breaks;
- nothing is left behind: no ``np.cnit-*`` namespace, and the root namespace is untouched (the
  suite's plugins run in its own throw-away "host" namespace).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
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
CONFS = Path(__file__).parent / "data" / "cni_confs"
NOT_CLAIMED_BY_REFERENCE = {"gc", "status"}  # 1.1.0 commands; Debian's plugins claim up to 1.0.0
POD_CIDR = "10.244.1.0/24"


def reference_conf(plugin: str = "bridge", version: str = "1.0.0") -> dict:
    return {"cniVersion": version, "name": "cnit", "type": plugin, "bridge": "cni0", "isGateway": True,
            "isDefaultGateway": True, "hairpinMode": True, "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]]}}


def netplane_conf(plugin: str = "netplane-bridge") -> dict:
    conf = cni_config(POD_CIDR, 1450, Path("/nonexistent"))  # the suite points dataDir at its own temp dir
    conf["plugins"][0]["type"] = plugin
    return conf


def run(conf: dict, dirs: list[str], only: list[str] | None = None) -> dict[str, conformance.Outcome]:
    loaded, exe = conformance.load(json.dumps(conf), dirs)
    return {o.id: o for o in conformance.run(loaded, dirs, exe, only)}


def not_passed(outcomes: dict[str, conformance.Outcome]) -> dict[str, str]:
    return {o.id: o.reason for o in outcomes.values() if o.result != conformance.PASS}


def kernel_has(kind: str) -> bool:
    """Whether this kernel makes links of kind (ipvlan is missing from some)."""
    from netplane.kernel import links
    name = "np.cnit-probe"
    netns.create(name)
    try:
        with links.netlink(name) as ipr:
            ipr.link("add", ifname="m0", kind="veth", peer="m1")
            try:
                ipr.link("add", ifname="probe", kind=kind, link=links.index(ipr, "m0"))
            except Exception:  # noqa: BLE001 - NetlinkError: EOPNOTSUPP
                return False
            return True
    finally:
        netns.delete(name)


@pytest.fixture(autouse=True)
def no_leftover_namespaces():
    yield
    assert netns.listed("np.cnit-") == []


def test_suite_passes_on_netplane_plugins(tmp_path: Path):
    conf = cni_config(POD_CIDR, 1450, tmp_path / "ignored")  # the suite points dataDir at its own temp dir
    outcomes = run(conf, [plugin_dir()])
    assert [o.id for o in outcomes.values()] == [c.id for c in conformance.CHECKS]
    assert not_passed(outcomes) == {}  # netplane's plugins claim 1.1.0: GC and STATUS run too
    assert not (tmp_path / "ignored").exists()


def test_suite_passes_on_reference_bridge():
    outcomes = run(reference_conf(), [REFERENCE])
    assert set(not_passed(outcomes)) == NOT_CLAIMED_BY_REFERENCE
    assert all("needs cniVersion 1.1.0" in outcomes[c].reason for c in NOT_CLAIMED_BY_REFERENCE)


@pytest.mark.parametrize("name, skipped", [
    ("ptp", set()),
    ("macvlan", set()),  # the suite makes the config's master (a veth end) in its host namespace
    ("ipvlan", set()),
    ("bridge-static", {"parallel-add"}),  # static IPAM: the same address every time
    ("macvlan-static", {"parallel-add"}),
])
def test_suite_passes_on_reference_plugins(name: str, skipped: set[str]):
    conf = json.loads((CONFS / f"{name}.json").read_text())
    if conf["type"] == "ipvlan" and not kernel_has("ipvlan"):
        with pytest.raises(conformance.ConfError, match="this kernel cannot make ipvlan links"):
            run(conf, [REFERENCE])
        pytest.skip("this kernel has no ipvlan links")
    outcomes = run(conf, [REFERENCE])
    reasons = not_passed(outcomes)
    assert {k: v for k, v in reasons.items() if k not in NOT_CLAIMED_BY_REFERENCE | skipped} == {}
    assert all(outcomes[c].result == conformance.SKIP for c in NOT_CLAIMED_BY_REFERENCE | skipped)
    if skipped:
        assert "the IPAM is static" in outcomes["parallel-add"].reason


def test_master_option_names_the_host_link():
    conf = json.loads((CONFS / "macvlan.json").read_text())
    del conf["master"]
    loaded, exe = conformance.load(json.dumps(conf), [REFERENCE])
    outcomes = conformance.run(loaded, [REFERENCE], exe, ["connectivity"], master="uplink0")
    assert [(o.id, o.result) for o in outcomes] == [("connectivity", conformance.PASS)]


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
    ("ifgone-check-bridge", "check", "CHECK should fail once eth0 was deleted from the container"),
    ("second-del-bridge", "del-idempotent", "a second DEL of the same attachment (its interface already gone) "
                                            "should succeed; plugin: exit 1"),
    ("cacheless-del-bridge", "del-robust", "DEL without prevResult should still remove what ADD made; left: veth"),
    ("version-lax-bridge", "version", "ADD with cniVersion 0.0.9 (unsupported) should fail with error code 1"),
    ("old-shape-bridge", "version-results", 'a 0.3.1 result\'s ips entries need "version": "4"'),
    ("chain-intolerant-bridge", "chaining", "CHECK of the chain (plugin, then tuning) with the chain's final "
                                            "result as prevResult should succeed; the plugin failed"),
])
def test_suite_fails_on_broken_plugin_naming_the_rule(plugin: str, check: str, rule: str):
    outcome = run(reference_conf(plugin), [BROKEN, REFERENCE], [check])[check]
    assert outcome.result == conformance.FAIL
    assert rule in outcome.reason
    assert f"[SPEC: {outcome.section}]" in outcome.reason


@pytest.mark.parametrize("plugin, check, rule", [
    ("gc-noop-bridge", "gc", "GC should release what belongs to attachments not in cni.dev/valid-attachments"),
    ("status-down-bridge", "status", "STATUS on a healthy configuration (empty IPAM range) should exit 0"),
])
def test_suite_fails_on_broken_1_1_plugin_naming_the_rule(plugin: str, check: str, rule: str):
    outcome = run(netplane_conf(plugin), [BROKEN, plugin_dir()], [check])[check]
    assert outcome.result == conformance.FAIL
    assert rule in outcome.reason and "[SPEC: " in outcome.reason
    if check == "gc":  # both the host veth and the IPAM reservation of the stale attachment are named
        assert "veth" in outcome.reason and "IPAM reservation" in outcome.reason


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


def test_cli_junit_report(tmp_path: Path):
    bad, report = tmp_path / "bad.json", tmp_path / "report.xml"
    bad.write_text(json.dumps(reference_conf("outside-bridge")))
    result = CliRunner().invoke(cli, ["cni", "test", "--conf", str(bad), "--plugin-dir", BROKEN,
                                      "--plugin-dir", REFERENCE, "--check", "version", "--check", "add-result",
                                      "--check", "gc", "--junit", str(report)])
    assert result.exit_code == 1, result.output
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["version", "add-result", "gc"]
    assert cases["version"].find("failure") is None and cases["version"].find("skipped") is None
    assert "outside the configured IPAM range" in cases["add-result"].find("failure").get("message")
    assert "needs cniVersion 1.1.0" in cases["gc"].find("skipped").get("message")


def test_cli_plugin_dir():
    result = CliRunner().invoke(cli, ["cni", "plugin-dir"])
    assert result.exit_code == 0 and result.output.strip() == plugin_dir()
    assert (Path(plugin_dir()) / "netplane-bridge").exists()


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
