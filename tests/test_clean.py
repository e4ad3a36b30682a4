"""Nothing is left behind: after `down`, after a failed `up`, and after `kill -9` followed by `clean`.

Each test brings up its own small lab (named t<hex>) and compares the root namespace with what it
was before (links, addresses, routes, rules, namespaces, netfilter).
"""
from __future__ import annotations

import os
import signal
import subprocess

import yaml

from conftest import root_snapshot, unique_lab
from labtools import NETPLANE, cli, eventually, get
from netplane import names
from netplane.kernel import netns
from netplane.lab import lifecycle
from netplane.cli.main import CNI_CACHE
from netplane.lab.state import ROOT, LabState, known_labs


def lab_file(tmp_path, name: str, manifest: dict | None = None) -> str:
    data = {"name": name, "nodes": ["node-1", "node-2"]}
    if manifest is not None:
        (tmp_path / "app.yaml").write_text(yaml.safe_dump(manifest))
        data["manifests"] = ["app.yaml"]
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


ECHO_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
            "spec": {"containers": [{"name": "echo", "image": "netplane/echo"}]}}


def root_state() -> dict[str, str]:
    """The root snapshot but for the list of namespaces, which other labs may change meanwhile
    (this lab's own namespaces are checked by leftovers(); the last test of the suite checks all)."""
    return {k: v for k, v in root_snapshot().items() if k != "netns"}


def leftovers(name: str) -> list:
    spaces = netns.listed(names.lab_prefix(name))
    return spaces + netns.pids_in(spaces) + ([str(LabState(name).dir)] if LabState(name).dir.exists() else [])


def test_clean_takes_only_labs_for_labs():
    """`netplane cni add`'s result cache lives beside the labs' state, under a name no lab can have."""
    cache = os.path.basename(CNI_CACHE)
    assert os.path.dirname(CNI_CACHE) == str(ROOT) and not names.is_lab_name(cache)
    made = not (ROOT / cache).exists()
    (ROOT / cache).mkdir(parents=True, exist_ok=True)
    try:
        assert cache not in known_labs() and cache not in lifecycle.clean([cache])
    finally:
        if made:
            (ROOT / cache).rmdir()


def test_down_leaves_the_root_namespace_as_it_was(tmp_path):
    before, name = root_state(), unique_lab()
    # no --lab: the lab file names the lab
    up = subprocess.run([NETPLANE, "up", lab_file(tmp_path, name, ECHO_POD)], capture_output=True, text=True,
                        timeout=120, stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stderr
    assert f"lab '{name}' is up" in up.stdout
    assert "nodes Ready 2/2, pods Running 3/3" in up.stderr  # it says what it is doing (its pod, 2 coredns)
    down = cli(name, "down")
    assert down.returncode == 0 and f"lab '{name}' is down" in down.stdout
    assert leftovers(name) == []
    assert root_state() == before
    again = cli(name, "down")
    assert again.returncode == 1 and f"lab '{name}' is not up" in again.stderr


def test_clean_after_kill_9_removes_every_trace(tmp_path):
    before, name = root_state(), unique_lab()
    assert cli(name, "up", lab_file(tmp_path, name, ECHO_POD)).returncode == 0
    pid = LabState(name).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert leftovers(name), "the lab's namespaces and pod processes outlive the control plane"
    assert name in lifecycle.existing_labs()
    LabState(name).remove()  # even with its state directory gone, the namespaces name the lab
    assert name in lifecycle.existing_labs()
    # `clean` without names removes every lab on the machine; the suite names its own so that a
    # lab the user has up survives the tests
    result = cli(name, "clean", name)
    assert result.returncode == 0 and result.stdout.strip() == f"removed lab '{name}': 7 namespaces"  # underlay, client, 2 nodes, 3 pods
    assert leftovers(name) == []
    assert root_state() == before


def test_a_failed_up_removes_what_it_made(tmp_path):
    before, name = root_state(), unique_lab()
    bad_service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
                   "spec": {"selector": {"app": "x"}, "ports": [{"port": 0}]}}
    result = cli(name, "up", lab_file(tmp_path, name, bad_service))
    assert result.returncode == 1
    assert "spec.ports[0].port" in result.stderr and "removing what was made" in result.stderr
    assert leftovers(name) == []
    assert root_state() == before


def test_a_bad_lab_file_is_refused_before_anything_is_made(tmp_path):
    before, name = root_state(), unique_lab()
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"name": name, "network": {"clusterCIDR": "10.244.0.0/16",
                                                             "serviceCIDR": "10.244.0.0/20"}}))
    result = cli(name, "up", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == ("Error: lab file: network.serviceCIDR: 10.244.0.0/20 overlaps "
                                     "network.clusterCIDR 10.244.0.0/16; choose ranges that do not overlap")
    assert leftovers(name) == [] and root_state() == before


def test_up_after_kill_9_resumes_the_lab_and_adopts_its_pods(tmp_path):
    name = unique_lab()
    assert cli(name, "up", lab_file(tmp_path, name, ECHO_POD)).returncode == 0
    try:
        before = get(name, "pods", "echo")
        os.kill(LabState(name).pid(), signal.SIGKILL)
        result = cli(name, "up")
        assert result.returncode == 0, result.stderr
        assert "starting the control plane of lab" in result.stderr and "again on its store" in result.stderr
        after = eventually(lambda: (p := get(name, "pods", "echo"))["status"].get("phase") == "Running" and p)
        # the same sandbox: same address, same process, no restart
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["status"]["podIP"] == before["status"]["podIP"]
        assert after["status"]["containerStatuses"][0]["containerID"] == before["status"]["containerStatuses"][0]["containerID"]
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
        reply = cli(name, "exec", "node/node-1", "--", "curl", "-sS", "-m", "3",
                    f"http://{after['status']['podIP']}:8080/hostname")
        assert reply.stdout == "echo"
    finally:
        cli(name, "down")
    assert leftovers(name) == []
