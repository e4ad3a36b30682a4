"""Names: the one place that turns labs, nodes and pods into namespace, file and interface names,
and the boundary that refuses a name that is not a lab's before it reaches a path."""
from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from labtools import NETPLANE
from netplane import names
from netplane.cli import main
from netplane.kernel import netns
from netplane.lab.state import ROOT, LabState


def test_namespaces_carry_the_lab_prefix_and_map_back():
    assert names.node_netns("lab1", "node-1") == "np.lab1.node-1"
    assert names.underlay_netns("lab1") == "np.lab1.underlay"
    assert names.pod_netns(names.lab_prefix("lab1"), "default", "web-1") == "np.lab1.pod.default.web-1"
    for ns in ("np.lab1.node-1", "np.lab1.underlay", "np.lab1.pod.default.web-1"):
        assert names.lab_of_netns(ns) == "lab1"
    assert names.lab_of_netns("cni-1234") is None
    assert names.lab_of_netns("np.Bad_Lab.x") is None


def test_interface_names_fit_the_kernel_limit():
    assert names.switch_port("node-1") == "to-node-1"
    long = names.switch_port("a-very-long-node-name-indeed")
    assert len(long) <= names.IFNAME_MAX and long.startswith("to-")
    veth = names.host_veth("0123456789abcdef")
    assert veth.startswith("veth") and len(veth) == 12
    assert names.host_veth("0123456789abcdef") == veth != names.host_veth("other")


def test_short_hash_is_stable_base32():
    assert names.short_hash("default/web/tcp/http") == names.short_hash("default/web/tcp/http")
    assert len(names.short_hash("x")) == 8 and names.short_hash("x").isupper()


def test_a_lab_name_is_checked_wherever_one_becomes_a_path_or_a_prefix():
    for bad in ("rel1.pod", "../x", "a/b", ".", "..", "", "A", "-a", "a-", "a" * 33, "lab\n", "l ab", None):
        assert not names.is_lab_name(bad), bad
        with pytest.raises(ValueError, match="lab name"):
            names.lab_prefix(bad)
        with pytest.raises(ValueError, match="lab name"):
            LabState(bad)
    assert names.is_lab_name("a") and names.is_lab_name("a" * 32) and names.is_lab_name("lab-1")
    assert names.lab_of_netns("np.rel1.pod.default.x") == "rel1"  # a namespace maps back to its own lab only


def test_names_the_api_accepts_make_namespace_and_file_names():
    """A pod name may have 253 characters and a namespace 63: too long for a file name (255) once
    joined, so the end gives way to a hash of the whole, stable and distinct."""
    prefix = names.lab_prefix("a" * 32)
    long = names.pod_netns(prefix, "n" * 63, "p" * 253)
    other = names.pod_netns(prefix, "n" * 63, "p" * 252 + "q")
    assert len(long) == names.NAME_MAX and long != other and long == names.pod_netns(prefix, "n" * 63, "p" * 253)
    assert long.startswith(f"{prefix}pod.{'n' * 63}.ppp") and names.lab_of_netns(long) == "a" * 32
    assert names.pod_netns(prefix, "default", "web-1") == f"{prefix}pod.default.web-1"  # short names stay readable
    assert names.fitted("x" * 300, 40) == names.fitted("x" * 300, 40) and len(names.fitted("x" * 300, 40)) == 40


def test_the_cli_refuses_a_name_that_is_not_a_lab_and_touches_nothing(make_netns, lab_name, tmp_path):
    """`--lab rel1.pod down` once removed lab rel1's pod namespaces, and `--lab ../../dir down` any
    directory holding a lab.json; now the name is refused before anything is looked at (click's
    runner calls the real commands in this process)."""
    pod = make_netns("pod.default.web-1")  # np.<lab>.pod.default.web-1, as a lab's pod
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "lab.json").write_text("{}")
    runner = CliRunner()
    for name in ("../../x", "x/..", ".", f"{lab_name}.pod", os.path.relpath(victim, ROOT)):
        for argv in (["--lab", name, "down"], ["--lab", name, "status"], ["clean", name], ["up", "--name", name]):
            done = runner.invoke(main.cli, argv)
            assert done.exit_code == 2 and "is not a lab name" in done.output, (argv, done.output)
    assert netns.exists(pod) and (victim / "lab.json").exists()
    env = {**os.environ, "NETPLANE_LAB": f"{lab_name}.pod"}  # the real command, from the environment
    done = subprocess.run([NETPLANE, "down"], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "--lab" in done.stderr and netns.exists(pod)


def test_an_agents_namespace_prefix_cannot_leave_run_netns():
    for bad in ("../", "a/b-", "a..b.", "np.lab", ""):
        done = CliRunner().invoke(main.cli, ["agent", "--server", "https://127.0.0.1:1", "--token", "t",
                                             "--netns-prefix", bad])
        assert done.exit_code == 2 and "--netns-prefix" in done.output, (bad, done.output)
