"""`netplane bench streams`: what kubectl's streams cost, side by side with the ways around them in
the same lab and the same run.

- exec round trip: `kubectl exec web-1 -- true` (kubectl, the API server, the kubelet port, a
  WebSocket each way, nsenter) next to `netplane exec web-1 -- true` (the CLI, nsenter) and to
  nsenter alone into the same container (the direct way; no CLI, no API).
- port-forward throughput: N MiB sent to a counting sink in a pod through `kubectl port-forward`
  (kubectl's SPDY in a WebSocket, the API server, the kubelet, the pod's loopback) next to the same
  bytes sent from another pod by a program started with `netplane exec` (its start-up included)
  and straight from the node's namespace to the pod's address (the direct way).
"""
from __future__ import annotations

import json
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netplane import names
from netplane.api import objects
from netplane.kernel import netns
from netplane.lab import lifecycle, model
from netplane.lab.state import LabState

NETPLANE = str(Path(sys.executable).parent / "netplane")
SINK_PORT = 7000
SINK = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("", {SINK_PORT}))
server.listen()
while True:
    conn, _ = server.accept()
    total = 0
    while chunk := conn.recv(1 << 16):
        total += len(chunk)
    conn.sendall(str(total).encode())
    conn.close()
"""


SEND = """
import socket
sock = socket.create_connection(("{ip}", {port}))
block, left = bytes(1 << 20), {size}
while left:
    left -= sock.send(block[:min(left, len(block))])
sock.shutdown(socket.SHUT_WR)
assert int(sock.recv(64)) == {size}
"""


@dataclass(frozen=True)
class Comparison:
    what: str
    unit: str
    samples: dict[str, list[float]]  # by way, in the order shown

    def median(self, way: str) -> float:
        return statistics.median(self.samples[way])


def _run(argv: list[str], stdin: bytes | None = None) -> float:
    """Seconds argv took; it must succeed."""
    start = time.monotonic()
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ...: {done.stderr.decode(errors='replace').strip()}")
    return time.monotonic() - start


def _send(sock: socket.socket, size: int) -> float:
    """Seconds to send size bytes to the sink and hear it counted them all."""
    block = b"\0" * (1 << 20)
    start = time.monotonic()
    left = size
    while left:
        left -= sock.send(block[:min(left, len(block))])
    sock.shutdown(socket.SHUT_WR)
    counted = int(sock.recv(64) or b"0")
    seconds = time.monotonic() - start
    sock.close()
    if counted != size:
        raise RuntimeError(f"the sink counted {counted} of {size} bytes")
    return seconds


def _kubectl(lab: str) -> list[str]:
    return ["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig)]


def _pod(lab: str, name: str) -> dict:
    return json.loads(subprocess.run([*_kubectl(lab), "get", "pod", name, "-o", "json"], capture_output=True,
                                     check=True).stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exec_round_trips(lab: str, rounds: int) -> Comparison:
    pid = objects.container_pid(_pod(lab, "web-1")["status"]["containerStatuses"][0])
    ways = {"kubectl exec": [*_kubectl(lab), "exec", "web-1", "--", "true"],
            "netplane exec": [NETPLANE, "--lab", lab, "exec", "web-1", "--", "true"],
            "nsenter (direct)": ["nsenter", "-t", str(pid), "-a", "true"]}
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(rounds):  # interleaved, so that load on the machine hits each alike
        for way, argv in ways.items():
            samples[way].append(_run(argv) * 1000)
    return Comparison("exec round trip (true)", "ms", samples)


def forward_throughput(lab: str, rounds: int, mebibytes: int) -> Comparison:
    size = mebibytes << 20
    sink_ip = _pod(lab, "bench-sink")["status"]["podIP"]
    local = _free_port()
    forwarder = subprocess.Popen([*_kubectl(lab), "port-forward", "pod/bench-sink", f"{local}:{SINK_PORT}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert forwarder.stdout is not None
        forwarder.stdout.readline()  # "Forwarding from 127.0.0.1:..."
        node = names.node_netns(lab, "node-2")

        def through_exec() -> float:
            return _run([NETPLANE, "--lab", lab, "exec", "client", "--", "python3", "-c", SEND.format(
                ip=sink_ip, port=SINK_PORT, size=size)])

        def direct() -> float:
            sock = netns.socket_in(node, socket.AF_INET, socket.SOCK_STREAM)
            sock.connect((sink_ip, SINK_PORT))
            return _send(sock, size)

        ways = {"kubectl port-forward": lambda: _send(socket.create_connection(("127.0.0.1", local)), size),
                "netplane exec client -- python3": through_exec, "node to pod (direct)": direct}
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(rounds):
            for way, send in ways.items():
                samples[way].append(mebibytes / send())
        return Comparison(f"port-forward throughput ({mebibytes} MiB to a sink)", "MiB/s", samples)
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=10)


def run(rounds: int, mebibytes: int) -> list[Comparison]:
    lab = model.load(None, name=f"bench-{secrets.token_hex(2)}")
    lifecycle.up(lab, lambda line: None)
    try:
        sink = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-sink"},
                "spec": {"nodeName": "node-2", "containers": [
                    {"name": "sink", "image": "python", "command": ["python3", "-c", SINK]}]}}
        subprocess.run([*_kubectl(lab.name), "apply", "-f", "-"], input=json.dumps(sink).encode(), check=True,
                       capture_output=True)
        subprocess.run([*_kubectl(lab.name), "wait", "--for=condition=Ready", "pod/bench-sink", "--timeout=60s"],
                       check=True, capture_output=True)
        return [exec_round_trips(lab.name, rounds), forward_throughput(lab.name, rounds, mebibytes)]
    finally:
        lifecycle.down(lab.name)


def lines(results: list[Comparison]) -> list[str]:
    out = []
    for r in results:
        ways = list(r.samples)
        first = r.median(ways[0])
        parts = [f"{way} {r.median(way):.1f} {r.unit}" for way in ways]
        ratios = [f"{ways[0]} / {way}: {first / r.median(way):.2f}" for way in ways[1:]]
        out.append(f"{r.what}, medians: " + ", ".join(parts) + "; ratios " + ", ".join(ratios))
    return out
