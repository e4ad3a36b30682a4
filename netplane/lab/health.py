"""What `netplane status` tells beyond the API's objects: the health of each control-plane member
(its API server's /readyz and its etcd member's Raft status, probed where they listen) and of each
node agent (its node Lease, read as the node lifecycle controller reads it)."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from netplane import names
from netplane.controllers.nodelifecycle import parse_time
from netplane.kernel import netns
from netplane.lab.hosts import API_PORT, ETCD_CLIENT_PORT
from netplane.lab.model import Lab
from netplane.lab.state import LabState

PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Member:
    """One control-plane host: its API server and, with storage etcd, its etcd member."""

    host: str
    address: str
    api: str  # "ok", or why not
    etcd: str | None  # "leader", "follower", or why not; None: the host runs no etcd member


@dataclass(frozen=True)
class Agent:
    """One node's agent, as its node Lease shows it."""

    node: str
    holder: str  # the Lease's holderIdentity ("" when there is no Lease)
    renewed: float | None  # seconds since the last renewal; None without a Lease
    duration: int
    pods: tuple[int, int]  # (Running, all) on the node

    @property
    def health(self) -> str:
        if self.renewed is None:
            return "no Lease yet"
        if self.renewed > self.duration:
            return f"silent for {self.renewed:.0f}s (lease {self.duration}s)"
        return "ok"


def _fetch(url: str, context: ssl.SSLContext | None, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=PROBE_SECONDS, context=context) as response:
        return response.read()


def _why(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}: {err.read().decode(errors='replace').strip()[:80]}"
    reason = getattr(err, "reason", err)
    return f"unreachable ({reason or type(err).__name__})"


def api_health(address: str, context: ssl.SSLContext) -> str:
    try:
        answer = _fetch(f"https://{address}:{API_PORT}/readyz", context).decode().strip()
    except (OSError, ValueError) as err:
        return _why(err)
    return "ok" if answer == "ok" else answer[:80]


def etcd_health(address: str) -> str:
    """The member's role in the Raft cluster, from etcd's maintenance Status (v3 JSON gateway)."""
    try:
        status = json.loads(_fetch(f"http://{address}:{ETCD_CLIENT_PORT}/v3/maintenance/status", None, b"{}"))
    except (OSError, ValueError) as err:
        return _why(err)
    if status.get("errors"):
        return "; ".join(status["errors"])[:80]
    leader, me = status.get("leader"), status.get("header", {}).get("member_id")
    if not leader or leader == "0":
        return "no leader"
    return "leader" if leader == me else "follower"


def members(lab: Lab, state: LabState) -> list[Member]:
    """Each control-plane host's health (controlPlane mode hosts; none for an embedded one), probed
    from the lab's client namespace, all at once."""
    if lab.controlPlane.mode != "hosts":
        return []
    context = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    with_etcd = lab.controlPlane.storage == "etcd"

    def probe(index: int, address: str) -> Member:
        return Member(names.control_plane_host(index), address, api_health(address, context),
                      etcd_health(address) if with_etcd else None)

    def probe_all() -> list[Member]:
        # threads made here are in the client namespace too: a new thread starts in its maker's
        with ThreadPoolExecutor(max_workers=len(lab.control_plane_ips)) as pool:
            return list(pool.map(probe, range(1, len(lab.control_plane_ips) + 1), lab.control_plane_ips))

    return netns.run_in(names.client_netns(lab.name), probe_all)


def agents(nodes: list[dict], leases: list[dict], pods: list[dict]) -> list[Agent]:
    by_node = {lease["metadata"]["name"]: lease.get("spec", {}) for lease in leases}
    counts: dict[str, list[int]] = {}  # node -> [Running, all]
    for pod in pods:
        count = counts.setdefault(pod.get("spec", {}).get("nodeName", ""), [0, 0])
        count[0] += pod.get("status", {}).get("phase") == "Running"
        count[1] += 1
    now = datetime.now(timezone.utc)
    found = []
    for node in sorted(n["metadata"]["name"] for n in nodes):
        spec = by_node.get(node, {})
        renewed = spec.get("renewTime")
        age = (now - parse_time(renewed)).total_seconds() if renewed else None
        running, total = counts.get(node, [0, 0])
        found.append(Agent(node, spec.get("holderIdentity", ""), age, spec.get("leaseDurationSeconds", 0),
                           (running, total)))
    return found
