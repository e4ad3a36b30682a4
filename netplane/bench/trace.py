"""`netplane bench trace`: how long `netplane trace` takes on each path of the default lab, side by
side with the plainest peer on the same path: the same request made with curl through
`netplane exec` (both are one CLI run from the shell, Python start-up included; curl's packet makes
the same trip, the trace adds the captures in every namespace, scapy and the report).

Paths, on a fresh default lab: pod to pod on one node (client -> web-1), pod to pod across nodes
(client -> web-2, over VXLAN), pod to Service (client -> svc/web, DNAT), and the underlay client to
a node's NodePort. Target on the reference machine: a trace under 3 s.
"""
from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from netplane.lab import lifecycle, model

NETPLANE = str(Path(sys.executable).parent / "netplane")
NODE_PORT_SERVICE = "bench-np"


@dataclass(frozen=True)
class PathResult:
    path: str
    trace: list[float]
    peer: list[float]
    delivered: int  # traces that reported the probe delivered

    @property
    def ratio(self) -> float:
        return statistics.median(self.trace) / statistics.median(self.peer)


def _cli(lab: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NETPLANE, "--lab", lab, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _timed(lab: str, *args: str) -> tuple[float, int]:
    start = time.monotonic()
    done = _cli(lab, *args)
    return time.monotonic() - start, done.returncode


def _get(lab: str, *what: str) -> dict:
    return json.loads(_cli(lab, "get", *what, "-o", "json").stdout)


def _node_port(lab: str, work: Path) -> int:
    manifest = work / "service.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": NODE_PORT_SERVICE},
                                    "spec": {"type": "NodePort", "selector": {"app": "web"},
                                             "ports": [{"port": 80, "targetPort": 8080}]}}))
    if _cli(lab, "apply", "-f", str(manifest)).returncode != 0:
        raise RuntimeError(f"could not create the NodePort Service {NODE_PORT_SERVICE}")
    return int(_get(lab, "service", NODE_PORT_SERVICE)["spec"]["ports"][0]["nodePort"])


def _paths(lab: str, work: Path) -> list[tuple[str, list[str], list[str]]]:
    """(name, trace arguments, peer command) of each path."""
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in _get(lab, "pods")["items"]}
    svc = _get(lab, "service", "web")["spec"]["clusterIP"]
    port = _node_port(lab, work)
    curl = ["curl", "-sS", "-m", "3", "-o", "/dev/null"]
    return [
        ("pod to pod, one node", ["client", "web-1"], ["exec", "client", "--", *curl, f"http://{pods['web-1']}:8080/"]),
        ("pod to pod, two nodes", ["client", "web-2"], ["exec", "client", "--", *curl, f"http://{pods['web-2']}:8080/"]),
        ("pod to Service", ["client", "svc/web"], ["exec", "client", "--", *curl, f"http://{svc}/"]),
        ("client to NodePort", ["underlay/client", f"172.30.0.12:{port}"],
         ["exec", "underlay/client", "--", *curl, f"http://172.30.0.12:{port}/"]),
    ]


def run(rounds: int) -> list[PathResult]:
    lab = model.load(None, name=f"bench-{secrets.token_hex(2)}")
    lifecycle.up(lab, lambda line: None)
    try:
        results = []
        with tempfile.TemporaryDirectory() as work:
            paths = _paths(lab.name, Path(work))
        for name, trace_args, peer_args in paths:
            traces, peers, delivered = [], [], 0
            for _ in range(rounds):  # interleaved, so that load on the machine hits both alike
                seconds, code = _timed(lab.name, "trace", *trace_args)
                traces.append(seconds)
                delivered += code == 0
                peers.append(_timed(lab.name, *peer_args)[0])
            results.append(PathResult(name, traces, peers, delivered))
        return results
    finally:
        lifecycle.down(lab.name)
