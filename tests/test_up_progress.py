"""What `up` shows while it works: the bar drawn on a terminal (a pure function), the plain lines
written otherwise, and the summary it ends with."""
from __future__ import annotations

import subprocess

import yaml

from conftest import unique_lab
from labtools import NETPLANE, cli
from netplane.lab.lifecycle import Progress, UpSummary, bar


def test_the_bar_fills_with_ready_nodes_and_running_pods():
    empty = bar(Progress(0, 2, 0, 8, 0.0), width=80)
    half = bar(Progress(2, 2, 3, 8, 1.25), width=100)  # 5 of 10 things done; at most 40 cells
    full = bar(Progress(2, 2, 8, 8, 3.0), width=100)
    assert empty.startswith("[....") and "#" not in empty
    assert half == "[####################....................] nodes Ready 2/2, pods Running 3/8   1.2 s"
    assert full.startswith("[" + "#" * 40 + "]") and full.endswith("pods Running 8/8   3.0 s")
    assert len(bar(Progress(10, 50, 100, 500, 12.0), width=60)) <= 60  # cut to the terminal's width
    assert bar(Progress(0, 0, 0, 0, 0.0)).startswith("[" + "#" * 10)  # nothing to wait for: full


def test_the_summary_names_the_slowest_phase():
    summary = UpSummary(12.34, 50, 500, "/k", (("namespaces and links", 1.5), ("pods Running", 7.25), ("data plane", 0.5)))
    assert summary.text("big") == "lab 'big' is up in 12.3 s: 50 nodes, 500 pods; slowest phase: pods Running (7.2 s)"
    assert summary.phase_text() == "phases: namespaces and links 1.5 s, pods Running 7.2 s, data plane 0.5 s"
    assert UpSummary(1.0, 1, 0, "/k").text("x") == "lab 'x' is up in 1.0 s: 1 nodes, 0 pods"


def test_up_off_a_terminal_writes_plain_lines_and_ends_with_the_summary(tmp_path):
    name = unique_lab()
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
             "spec": {"nodeName": "node-1", "containers": [{"name": "echo", "image": "netplane/echo"}]}}
            for i in range(2)]
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"name": name, "nodes": 1, "manifests": ["pods.yaml"]}))
    try:
        up = subprocess.run([NETPLANE, "up", str(tmp_path / "lab.yaml")], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
        assert up.returncode == 0, up.stderr
        err = up.stderr.splitlines()
        assert "\r" not in up.stderr and "\x1b" not in up.stderr  # no bar off a terminal
        assert f"[{name}] pod/p0 created" in err and f"[{name}] pod/p1 created" in err
        assert f"[{name}] nodes Ready 1/1, pods Running 4/4" in err  # the counts (2 coredns), a line when they change
        assert f"[{name}] data plane: routes and rules in place on every node" in err
        out = up.stdout.splitlines()
        assert out[0].startswith(f"lab '{name}' is up in ") and out[0].split(": ", 1)[1].startswith("1 nodes, 4 pods; slowest phase: ")
        assert out[1].startswith("phases: namespaces and links ") and "pods Running" in out[1]
    finally:
        cli(name, "down")
