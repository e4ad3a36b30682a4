"""Shared fixtures. Conventions for tests:

- every kernel object a test makes lives in a namespace named ``np.<lab>.*`` where ``<lab>`` is a
  fresh ``t<hex>`` name, so ``netplane clean`` would also find it and tests never collide;
- fixtures remove what a test made even when the test fails;
- the root namespace must look the same after the suite as before it (``test_zz_root_untouched``).
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from netplane import names
from netplane.kernel import netns


def unique_lab(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def lab_name() -> str:
    return unique_lab()


@pytest.fixture
def make_netns(lab_name: str) -> Iterator:
    """make_netns(role) creates ``np.<lab>.<role>`` with lo up; all are removed afterwards."""
    made: list[str] = []

    def make(role: str) -> str:
        name = f"{names.lab_prefix(lab_name)}{role}"
        netns.create(name)
        made.append(name)
        return name

    yield make
    netns.kill_all_in(made)
    for name in made:
        netns.delete(name)


def root_snapshot() -> dict[str, str]:
    """What the root namespace holds that a lab must never change: links, addresses, routes, rules,
    named namespaces, netfilter (nftables, and iptables in both backends when installed), and the
    pods' cgroups."""
    commands = {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "rules": ["ip", "rule", "show"],
        "netns": ["ip", "netns", "list"],
        "nftables": ["nft", "list", "ruleset"],
        "iptables-nft": ["iptables-nft-save"],
        "iptables-legacy": ["iptables-legacy-save"],
        "cgroups": ["sh", "-c", "ls -d /sys/fs/cgroup/*/netplane /sys/fs/cgroup/*/netplane/*/ 2>/dev/null"],
    }
    found = {}
    for key, argv in commands.items():
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True).stdout
            # counters and the save tool's timestamps change by themselves; they are not state
            found[key] = "\n".join(line for line in out.splitlines()
                                   if not line.startswith("#") and "counter packets" not in line)
    return found


ROOT_BEFORE: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def root_before() -> dict[str, str]:
    if not ROOT_BEFORE:
        ROOT_BEFORE.update(root_snapshot())
    return ROOT_BEFORE


SHARED_LABS = {  # the labs tests share: name -> proxy mode and how its lab file differs from the default lab's
    "nftables": ("nftables", {}),
    "iptables": ("iptables", {}),
    "reference-cni": ("nftables", {"network": {"cni": "reference"}}),
    "hosts": ("nftables", {"network": {"dnsDomain": "hosts.test"}, "controlPlane": {"mode": "hosts"},
                           "nodeResyncSeconds": 3}),
    "three-nodes": ("nftables", {"nodes": [
        {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "a"}},
        {"name": "node-2", "labels": {"topology.kubernetes.io/zone": "a"}},
        {"name": "node-3", "labels": {"topology.kubernetes.io/zone": "b"},
         "capacity": {"cpu": "1", "memory": "2Gi", "pods": "20"}}],
        "audit": {"level": "Metadata"}}),
}
_open_labs: dict[str, ExitStack] = {}


def on_labs(*names: str) -> pytest.MarkDecorator:
    """Run a test on these shared labs (SHARED_LABS) instead of the default lab in each proxy mode."""
    return pytest.mark.parametrize("lab", names, indirect=True)


@pytest.fixture(scope="session", params=["nftables", "iptables"])
def lab(request, tmp_path_factory) -> Iterator[str]:
    """A shared lab, up once for the whole suite: pytest runs every test of one shared lab together
    and brings the lab down before the next one comes up. Tests leave it as they found it (what
    they apply they delete). By default the default lab in each proxy mode; `on_labs` picks others."""
    from labtools import default_lab_file, running_lab
    mode, fields = SHARED_LABS[request.param]
    stack = _open_labs[request.param] = ExitStack()
    with stack:
        yield stack.enter_context(running_lab(default_lab_file(tmp_path_factory.mktemp(request.param), mode, **fields)))
    _open_labs.pop(request.param, None)


def close_shared_labs() -> None:
    """Bring down the shared lab that is up (pytest would at the very end, after the last test)."""
    for stack in list(_open_labs.values()):
        stack.close()
