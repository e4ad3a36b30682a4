"""`netplane bench dns`: cluster DNS under a fixed offered load from pods, side by side with Debian's
dnsmasq in the same lab and the same run.

Four client pods (two per node) each send A queries at a fixed rate (open loop: a query leaves on
its schedule whether or not the last one was answered), each from a fresh socket as a stub resolver
does, for the names of 20 Services, spread over the run. The same load goes to the kube-dns Service
(netplane's DNS in its two coredns pods) and to a Service of dnsmasq's own (one pod serving the
same names from a hosts file; the peer), round after round, one after the other. Reported: the
answered rate, the median and 99th percentile of the time from a query's send to its answer, and
the queries lost (no answer in 1 s), each way; and the ratio of the two p99s.
"""
from __future__ import annotations

import json
import secrets
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netplane.lab import lifecycle, model
from netplane.lab.state import LabState

NAMES = 20
CLIENTS = (("dns-client-1", "node-1"), ("dns-client-2", "node-1"), ("dns-client-3", "node-2"),
           ("dns-client-4", "node-2"))
ZONE = "cluster.local"

# the load, run in each client pod: an open loop of queries, each from its own socket
LOAD = r"""
import json, random, select, socket, struct, sys, time
server, rate, seconds, names = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")

def query(ident, name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)

pending, latencies, sent, answered = {}, [], 0, 0
poller = select.epoll()
start = time.monotonic()
deadline = start + seconds
while True:
    now = time.monotonic()
    due = start + sent / rate
    if now >= due and now < deadline:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        ident = random.getrandbits(16)
        sock.sendto(query(ident, random.choice(names)), (server, 53))
        pending[sock.fileno()] = (sock, ident, time.monotonic())
        poller.register(sock.fileno(), select.EPOLLIN)
        sent += 1
        continue
    if now >= deadline + 1.0 or (now >= deadline and not pending):
        break
    wait = max(0.0, min(due - now, 0.05)) if now < deadline else 0.05
    for fd, _ in poller.poll(wait):
        sock, ident, at = pending.pop(fd)
        data = sock.recv(4096)
        if len(data) >= 4 and struct.unpack(">H", data[:2])[0] == ident and data[3] & 0xF == 0:
            latencies.append(time.monotonic() - at)
            answered += 1
        poller.unregister(fd)
        sock.close()
    for fd, (sock, ident, at) in list(pending.items()):
        if time.monotonic() - at > 1.0:
            del pending[fd]
            poller.unregister(fd)
            sock.close()
print(json.dumps({"sent": sent, "answered": answered, "seconds": seconds, "latencies": latencies}))
"""


@dataclass(frozen=True)
class Result:
    way: str
    offered: float  # queries per second, all clients together
    answered: float  # answered queries per second
    lost: int
    p50_ms: float
    p99_ms: float


def _kubectl(lab: str) -> list[str]:
    return ["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig)]


def _apply(lab: str, objects: list[dict]) -> None:
    subprocess.run([*_kubectl(lab), "apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                            "items": objects}).encode(),
                   check=True, capture_output=True)


def _objects(ips: dict[str, str]) -> list[dict]:
    """dnsmasq's pod, its hosts file and its Service, and the client pods."""
    hosts = "".join(f"{ip} {name}.default.svc.{ZONE}\n" for name, ip in ips.items())
    dnsmasq = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--addn-hosts=/etc/bench/hosts",
               "--user=root", "--port=53", "--cache-size=1000", "--dns-forward-max=1000"]
    out: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-hosts"}, "data": {"hosts": hosts}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dnsmasq", "labels": {"app": "bench-dnsmasq"}},
         "spec": {"nodeName": "node-2", "containers": [{"name": "dnsmasq", "image": "debian", "command": dnsmasq,
                                                         "volumeMounts": [{"name": "hosts", "mountPath": "/etc/bench"}]}],
                  "volumes": [{"name": "hosts", "configMap": {"name": "bench-hosts"}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dnsmasq"},
         "spec": {"selector": {"app": "bench-dnsmasq"}, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}},
    ]
    out += [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
             "spec": {"nodeName": node, "containers": [{"name": "load", "image": "python",
                                                        "command": ["sleep", "infinity"]}]}}
            for name, node in CLIENTS]
    return out


def _one_run(lab: str, way: str, server: str, rate: float, seconds: float, names: list[str]) -> Result:
    """Every client's load at once against server; the merged figures."""
    def load(client: str) -> dict:
        done = subprocess.run([*_kubectl(lab), "exec", client, "--", "python3", "-c", LOAD, server,
                               str(rate / len(CLIENTS)), str(seconds), ",".join(names)],
                              capture_output=True, check=True, timeout=seconds + 60)
        return json.loads(done.stdout)

    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        reports = list(pool.map(load, [c for c, _ in CLIENTS]))
    latencies = sorted(x for r in reports for x in r["latencies"])
    sent, answered = sum(r["sent"] for r in reports), sum(r["answered"] for r in reports)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    return Result(way, sent / seconds, answered / seconds, sent - answered,
                  statistics.median(latencies) * 1000 if latencies else float("nan"), p99 * 1000)


def run(rate: float, seconds: float, rounds: int) -> list[Result]:
    lab = model.parse({"name": f"bench-{secrets.token_hex(2)}"})
    lifecycle.up(lab, lambda line: None)
    try:
        services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"name-{i}"},
                     "spec": {"ports": [{"port": 80}]}} for i in range(NAMES)]
        _apply(lab.name, services)
        ips = {}
        for i in range(NAMES):
            ips[f"name-{i}"] = subprocess.run([*_kubectl(lab.name), "get", "svc", f"name-{i}", "-o",
                                               "jsonpath={.spec.clusterIP}"], capture_output=True, text=True,
                                              check=True).stdout
        _apply(lab.name, _objects(ips))
        subprocess.run([*_kubectl(lab.name), "wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s"],
                       check=True, capture_output=True)
        servers = {"netplane DNS (kube-dns)": "10.96.0.10",
                   "dnsmasq": subprocess.run([*_kubectl(lab.name), "get", "svc", "dnsmasq", "-o",
                                              "jsonpath={.spec.clusterIP}"], capture_output=True, text=True,
                                             check=True).stdout}
        names = [f"{name}.default.svc.{ZONE}" for name in ips]
        results = []
        for _ in range(rounds):  # interleaved, so that the machine's load hits both alike
            for way, server in servers.items():
                results.append(_one_run(lab.name, way, server, rate, seconds, names))
        return results
    finally:
        lifecycle.down(lab.name)


def lines(results: list[Result]) -> list[str]:
    out = []
    by_way: dict[str, list[Result]] = {}
    for r in results:
        by_way.setdefault(r.way, []).append(r)
        out.append(f"{r.way:24} offered {r.offered:7.0f}/s answered {r.answered:7.0f}/s lost {r.lost:5d} "
                   f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms")
    medians = {way: (statistics.median(r.p50_ms for r in rs), statistics.median(r.p99_ms for r in rs),
                     statistics.median(r.answered for r in rs)) for way, rs in by_way.items()}
    ways = list(medians)
    if len(ways) == 2:
        (a, (a50, a99, aq)), (b, (b50, b99, bq)) = medians.items()
        out.append(f"medians: {a} p50 {a50:.2f} ms p99 {a99:.2f} ms {aq:.0f}/s; {b} p50 {b50:.2f} ms "
                   f"p99 {b99:.2f} ms {bq:.0f}/s; p99 ratio {a} / {b}: {a99 / b99:.2f}")
    return out
