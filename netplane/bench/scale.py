"""`netplane bench scale`: bring-up time, down time and memory of labs of N nodes x P echo pods, side
by side, in the same run, with Mininet bringing up the same number of hosts and links.

netplane, per size (a fresh lab each): `up` of a lab of N nodes with P echo pods pinned to each
node, to every pod Running and every node's routes in place; the memory of the lab's own processes
(the control-plane process, which holds the API server, the controllers and every node agent, and
netplane's resident CNI server) per node, and of each echo pod's processes; then `down`.

Mininet (Debian's `mininet`, its Python API run by /usr/bin/python3 in a subprocess): N Linux
bridges with P hosts each and one more bridge joining them, no controller; that is the lab's shape,
where every node is a bridge (cni0) with P pods and the underlay switch joins the nodes. Timed:
build + start, then stop; memory of the Mininet process per switch and of each host's shell.
Mininet's one-time init (which raises the machine's sysctl limits and mounts cgroups) is skipped:
bridges and hosts need neither, and the machine keeps its settings.

Memory is read from /proc: RSS (VmRSS in status) counts every page a process maps, shared or not,
so forked processes each count their parent's pages again; PSS (Pss in smaps_rollup) divides each
shared page among the processes that map it, so PSS adds up to what the machine really spends.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from netplane import names
from netplane.cni import resident as cni_server
from netplane.kernel import netns
from netplane.lab import lifecycle, model
from netplane.lab.state import LabState

Say = Callable[[str], None]
MININET_PYTHON = "/usr/bin/python3"  # Debian's mininet is a module of the system's Python
MININET_PACKAGES = ("mininet", "bridge-utils")  # LinuxBridge drives bridges with brctl
MININET_TIMEOUT = 600.0
UP_TIMEOUT = 600.0  # longer than `up`'s own: the bench measures how long it takes, however long
SETTLE_SECONDS, SETTLED_BUSY = 60.0, 0.15  # before each round: wait up to 60 s for the CPUs to be < 15% busy


@dataclass(frozen=True)
class Memory:
    """Megabytes (MiB)."""

    rss: float
    pss: float

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss)

    def __truediv__(self, count: int) -> Memory:
        return Memory(self.rss / max(count, 1), self.pss / max(count, 1))


ZERO = Memory(0.0, 0.0)


@dataclass(frozen=True)
class Side:
    """One system's figures at one size."""

    up: float  # seconds
    down: float
    own_per_node: Memory  # the system's own processes, divided by the nodes (switches)
    per_pod: Memory  # median over pods (hosts) of the memory of its processes
    per_pod_max: Memory
    pods: int  # pods (hosts) measured
    detail: dict  # what else was seen (phases, process counts)


@dataclass(frozen=True)
class Row:
    nodes: int
    pods_per_node: int
    netplane: Side
    mininet: Side

    def to_json(self) -> dict:
        return asdict(self)


def _kib(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def memory(pids: list[int]) -> Memory:
    """RSS and PSS of processes, summed (a process gone meanwhile counts nothing)."""
    rss = pss = 0
    for pid in pids:
        try:
            rss += _kib(f"/proc/{pid}/status", "VmRSS:")
            pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return Memory(rss / 1024, pss / 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return found


def lab_file(directory: Path, name: str, nodes: int, pods_per_node: int) -> Path:
    """A lab of `nodes` nodes and its manifest: pods_per_node echo pods pinned to each node, and no
    add-ons (the peer's hosts have no cluster DNS either)."""
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"echo-{n}-{i}", "labels": {"app": "echo"}},
             "spec": {"nodeName": f"node-{n}", "containers": [{"name": "echo", "image": "netplane/echo"}]}}
            for n in range(1, nodes + 1) for i in range(1, pods_per_node + 1)]
    (directory / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    path = directory / "lab.yaml"
    path.write_text(yaml.safe_dump({"name": name, "nodes": nodes, "manifests": ["pods.yaml"], "addons": []}))
    return path


def _median(values: list[Memory]) -> Memory:
    if not values:
        return ZERO
    return Memory(statistics.median(v.rss for v in values), statistics.median(v.pss for v in values))


def _max(values: list[Memory]) -> Memory:
    return Memory(max((v.rss for v in values), default=0.0), max((v.pss for v in values), default=0.0))


def measure_lab(name: str, nodes: int, cni_cpu_before: tuple[int | None, float] = (None, 0.0)
                ) -> tuple[Memory, list[Memory], Memory, dict]:
    """(the lab's own processes per node, each pod's processes, the launchers' total, detail);
    cni_cpu_before: the CNI server's pid and CPU time before the lab came up."""
    state = LabState(name)
    daemon = state.pid()
    if daemon is None:
        raise RuntimeError(f"lab {name!r} has no control-plane process")
    pod_spaces = [s for s in netns.listed(names.lab_prefix(name)) if ".pod." in s]
    in_pods = {s: netns.pids_in([s]) for s in pod_spaces}
    pod_pids = {p for pids in in_pods.values() for p in pids}
    # the daemon's children: the nodes' launchers (nsenter exec'd into them) and whatever else
    launchers = [p for p in _children(daemon) if p not in pod_pids]
    own = [daemon] + ([cni] if (cni := cni_server.running()) else [])
    detail = {"control_plane": asdict(memory([daemon])), "cni_server": asdict(memory(own[1:])),
              "launchers": len(launchers), "pod_processes": len(pod_pids),
              "cpu_seconds": {"control_plane": cpu_seconds(daemon), "cni_server": sum(
                  cpu_seconds(p) - (cni_cpu_before[1] if p == cni_cpu_before[0] else 0.0) for p in own[1:])}}
    return memory(own) / nodes, [memory(p) for p in in_pods.values()], memory(launchers), detail


def netplane_round(nodes: int, pods_per_node: int, say: Say) -> Side:
    name = f"scale-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory() as work:
        lab = model.load(str(lab_file(Path(work), name, nodes, pods_per_node)), name)
        cni = cni_server.running()
        cni_before = (cni, cpu_seconds(cni) if cni else 0.0)
        start = time.monotonic()
        summary = lifecycle.up(lab, lambda line: None, timeout=UP_TIMEOUT)
        up = time.monotonic() - start
    try:
        own, pods, launchers, detail = measure_lab(name, nodes, cni_before)
    finally:
        start = time.monotonic()
        lifecycle.down(name)
        down = time.monotonic() - start
    count = len(pods)
    if count != nodes * pods_per_node or summary.pods != count:
        raise RuntimeError(f"netplane: {count} pods measured, {summary.pods} Running; expected {nodes * pods_per_node}")
    # a pod's share of its node's launcher is part of what the pod costs: added to PSS, where shares
    # add up (to RSS it would add the launcher's whole interpreter once per pod)
    share = Memory(0.0, launchers.pss / max(count, 1))
    detail |= {"phases": dict(summary.phases), "launchers_memory": asdict(launchers)}
    return Side(up, down, own, _median(pods) + share, _max(pods) + share, count, detail)


MININET_SCRIPT = r'''
import json, os, resource, sys, time
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

switches, hosts = int(sys.argv[1]), int(sys.argv[2])

class Lab(Topo):
    """N bridges of P hosts each, joined by one more bridge (as the lab's underlay joins its nodes)."""
    def build(self):
        core = self.addSwitch("s%d" % (switches + 1))
        for s in range(1, switches + 1):
            switch = self.addSwitch("s%d" % s)
            self.addLink(switch, core)
            for h in range(1, hosts + 1):
                self.addLink(self.addHost("h%d" % ((s - 1) * hosts + h)), switch)

def kib(path, field):
    for line in open(path):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

def mem(pid):
    return {"rss": kib("/proc/%d/status" % pid, "VmRSS:") / 1024, "pss": kib("/proc/%d/smaps_rollup" % pid, "Pss:") / 1024}

setLogLevel("error")
# Mininet's one-time init raises the machine's sysctl limits and mounts cgroups; neither is needed
# for bridges and hosts, and the machine's own settings stay as they are. Only this process's fd
# limit must grow: a host holds a pty and pipes in the Mininet process.
Mininet.inited = True
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
start = time.monotonic()
net = Mininet(topo=Lab(), switch=LinuxBridge, controller=None, build=False)
try:
    net.build()
    net.start()
    up = time.monotonic() - start
    out = {"up": up, "own": mem(os.getpid()), "hosts": [mem(h.pid) for h in net.hosts],
           "switches": len(net.switches), "links": len(net.links)}
finally:
    start = time.monotonic()
    net.stop()
out["down"] = time.monotonic() - start
print(json.dumps(out))
'''


def ensure_mininet(say: Say) -> None:
    """Install Debian's mininet (and bridge-utils, for LinuxBridge) when missing."""
    if _has_mininet():
        return
    say(f"installing {' '.join(MININET_PACKAGES)} (apt-get) for the peer ...")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *MININET_PACKAGES], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0 or not _has_mininet():
        raise RuntimeError(f"could not install {' '.join(MININET_PACKAGES)}: {result.stderr.strip()[-500:]}")


def _has_mininet() -> bool:
    if not (Path(MININET_PYTHON).exists() and shutil.which("brctl") and shutil.which("mnexec")):
        return False
    return subprocess.run([MININET_PYTHON, "-c", "import mininet.net"], capture_output=True).returncode == 0


def mininet_round(switches: int, hosts_per_switch: int) -> Side:
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "mininet_scale.py"
        script.write_text(MININET_SCRIPT)
        result = subprocess.run([MININET_PYTHON, str(script), str(switches), str(hosts_per_switch)],
                                capture_output=True, text=True, timeout=MININET_TIMEOUT, cwd=work,
                                stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"the Mininet run failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    hosts = [Memory(h["rss"], h["pss"]) for h in out["hosts"]]
    own = Memory(out["own"]["rss"], out["own"]["pss"]) / switches
    return Side(out["up"], out["down"], own, _median(hosts), _max(hosts), len(hosts),
                {"switches": out["switches"], "links": out["links"]})


def busy_fraction(window: float = 0.5) -> float:
    """How busy the machine's CPUs were over `window` seconds (from /proc/stat: not idle, not iowait)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total, idle = sample()
    time.sleep(window)
    total2, idle2 = sample()
    return 1.0 - (idle2 - idle) / max(total2 - total, 1)


def settle(limit: float = SETTLE_SECONDS) -> None:
    """Wait (up to `limit` s) for the machine to go quiet before a round: the kernel frees the
    namespaces of the round before in the background, and that work must not be billed to the next."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and busy_fraction() > SETTLED_BUSY:
        pass


def run(sizes: tuple[int, ...], pods_per_node: int, say: Say) -> list[Row]:
    """For each size, a netplane lab then the Mininet peer, one after the other, in this run."""
    ensure_mininet(say)
    rows = []
    for nodes in sizes:
        settle()
        say(f"{nodes} nodes x {pods_per_node} pods: netplane ...")
        ours = netplane_round(nodes, pods_per_node, say)
        say(f"{nodes} nodes x {pods_per_node} pods: netplane up {ours.up:.1f} s, down {ours.down:.1f} s; "
            f"Mininet ({nodes} switches x {pods_per_node} hosts) ...")
        settle()
        peer = mininet_round(nodes, pods_per_node)
        say(f"{nodes} nodes x {pods_per_node} pods: Mininet up {peer.up:.1f} s, down {peer.down:.1f} s")
        rows.append(Row(nodes, pods_per_node, ours, peer))
    return rows


def _ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}" if peer > 0 else "-"


def table(rows: list[Row]) -> list[str]:
    """One block per size: each measure for netplane and Mininet, and netplane / Mininet."""
    lines = [f"{'size':16} {'measure':34} {'netplane':>14} {'Mininet':>14} {'ratio':>7}"]
    for r in rows:
        size = f"{r.nodes} x {r.pods_per_node}"
        n, m = r.netplane, r.mininet
        for label, ours, peer, unit in (
            ("up (to all Running / started)", n.up, m.up, "s"),
            ("down", n.down, m.down, "s"),
            ("own processes per node, RSS", n.own_per_node.rss, m.own_per_node.rss, "MB"),
            ("own processes per node, PSS", n.own_per_node.pss, m.own_per_node.pss, "MB"),
            ("per pod / host, RSS (median)", n.per_pod.rss, m.per_pod.rss, "MB"),
            ("per pod / host, PSS (median)", n.per_pod.pss, m.per_pod.pss, "MB"),
        ):
            lines.append(f"{size:16} {label:34} {ours:11.2f} {unit:2} {peer:11.2f} {unit:2} {_ratio(ours, peer):>7}")
    return lines
