"""`netplane bench proxy`: what the proxy modes cost as the number of Services grows, every mode
side by side in one run, driven through their Python interface (no lab, no API server).

Services are upstream-shaped: ClusterIP (10.96.0.0/16), one TCP port 80 -> 8080, 3 ready endpoints
each (pod IPs in the cluster CIDR 10.244.0.0/16). For every mode and every size N (`--services`,
plus the latency baseline, 100) a fresh set of throw-away namespaces is made:

    np.benchproxy.<tag>.<mode>.<N>.client   eth0 10.244.1.2/24, default via 10.244.1.1
    np.benchproxy.<tag>.<mode>.<N>.node     to-client 10.244.1.1/24, to-backend 10.244.2.1/24,
                                            forwarding on, the proxy mode's rules
    np.benchproxy.<tag>.<mode>.<N>.backend  eth0 10.244.2.2-4/24 (the target Service's 3 endpoints,
                                            each with a listener on 8080), default via 10.244.2.1

None of them has a link to any other namespace, so no packet leaves them; all are removed at the
end, also on an error or ^C. Measured for each mode and size:

- full sync: the mode's first sync (a new mode object) of the N Services into the fresh node;
- full resync: the same N again with full=True into the existing table, as upstream does
  periodically (and as a restarted proxy adopts its table);
- one changed Service: one endpoint of one Service (never the target) replaced, then an incremental
  sync (full=False) of all N; the median of CHANGES such syncs, each on another Service;
- first packet: CONNECTS sequential TCP connects from the client to the target Service's ClusterIP,
  each from its own source port (a new conntrack entry, its SYN DNATed by the node's rules), timed
  from connect() to the socket becoming writable (the SYN-ACK back through the NAT); the target sits
  in the middle of the Service list, where a linear rule list makes it wait an average time. The
  syncs run one after the other; the connects once all tables are loaded, interleaved in chunks
  over every mode and size, so that load from other processes does not skew one ratio.

The iptables modes (iptables-restore, legacy and nft backends) are measured when the proxier offers
them. The nft backend is run up to SLOW_LIMIT Services unless `slow` is given: iptables-nft-restore
took 232 s for 10,000 such Services on the reference machine (legacy: 2.3 s).

Targets on the reference machine (the 2-core VM), issue 22's: nftables full sync of 10,000 Services
<= 0.5 s, one changed Service <= 10 ms at any size, nftables first-packet p50 at 10,000 within 1.2x
of at 100. The nftables mode's peer, nftables-command, is the same mode sending each sync through
an `nft -f` process, as it did before libnftables ran in process.
"""
from __future__ import annotations

import asyncio
import errno
import inspect
import secrets
import select
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace

from netplane import names
from netplane.agent.proxy import proxier
from netplane.agent.proxy.model import Endpoint, ServicePort
from netplane.agent.proxy.modes import NftablesMode
from netplane.bench import percentile
from netplane.kernel import netns, nft, sysctl
from netplane.kernel.steps import Step, apply

LAB = "benchproxy"
NODE = "node-1"
CLUSTER_CIDR = "10.244.0.0/16"
CLIENT_IP, CLIENT_GW = "10.244.1.2", "10.244.1.1"
BACKEND_GW = "10.244.2.1"
BACKENDS = ("10.244.2.2", "10.244.2.3", "10.244.2.4")  # the target Service's endpoints
PORT, TARGET_PORT = 80, 8080
NAMESPACE = "bench"
MODES = ("nftables", "nftables-command", "iptables-legacy", "iptables-nft")  # nftables-command: nft -f per sync
SLOW_MODES = {"iptables-nft": "iptables-nft-restore took 232 s for 10,000 Services on the reference machine"}
SLOW_LIMIT = 1_000
FIRST_SOURCE_PORT = 20_000
CONNECT_TIMEOUT_MS = 2_000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    services: tuple[int, ...] = (1_000, 10_000)
    baseline: int = 100  # the size the first-packet latency is compared with
    connects: int = 300
    warmup: int = 20  # connects before the timed ones (neighbour entries, caches)
    changes: int = 10
    modes: tuple[str, ...] = MODES
    slow: bool = False  # iptables-nft above SLOW_LIMIT too
    tag: str = field(default_factory=lambda: secrets.token_hex(2))  # namespaces np.benchproxy.<tag>.*

    def sizes(self) -> list[int]:
        return sorted({self.baseline, *self.services})


@dataclass
class Round:
    """One mode at one size."""

    mode: str
    services: int
    full_sync_s: float = float("nan")
    resync_s: float = float("nan")
    change_s: list[float] = field(default_factory=list)  # every incremental sync
    connect_s: list[float] = field(default_factory=list)  # every timed connect
    accepted: dict[str, int] = field(default_factory=dict)  # endpoint -> connections its listener accepted
    flows: int = 0  # conntrack entries in the node after the connects (each connect made one)
    error: str = ""

    @property
    def change_median_s(self) -> float:
        return statistics.median(self.change_s) if self.change_s else float("nan")

    def connect_percentile(self, p: float) -> float:
        return percentile(self.connect_s, p)


@dataclass
class Result:
    options: Options
    rounds: dict[str, dict[int, Round]] = field(default_factory=dict)  # mode -> size -> round
    skipped: dict[str, str] = field(default_factory=dict)  # mode or "mode N" -> why

    def get(self, mode: str, size: int) -> Round | None:
        found = self.rounds.get(mode, {}).get(size)
        return found if found is not None and not found.error else None

    def to_json(self) -> dict:
        return {
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.options).items()},
            "rounds": {mode: {str(n): {**asdict(r), "change_median_s": r.change_median_s,
                                       "connect_p50_s": r.connect_percentile(50),
                                       "connect_p99_s": r.connect_percentile(99)}
                              for n, r in by_size.items()} for mode, by_size in self.rounds.items()},
            "skipped": self.skipped,
        }


# --- the Services ----------------------------------------------------------------------------------

def cluster_ip(i: int) -> str:
    n = i + 10
    return f"10.96.{n // 256}.{n % 256}"


def pod_ip(j: int) -> str:
    """The j-th made-up pod IP (10.244.3.2 onwards: not on the client's or the backend's subnet)."""
    return f"10.244.{3 + j // 250}.{2 + j % 250}"


def target_index(n: int) -> int:
    return n // 2


def service(i: int, endpoints: tuple[str, ...]) -> ServicePort:
    return ServicePort(NAMESPACE, f"svc-{i:05d}", "http", "tcp", cluster_ip(i), PORT,
                       endpoints=tuple(Endpoint(ip, TARGET_PORT, NODE) for ip in endpoints))


def services(n: int) -> list[ServicePort]:
    """N Services of 3 endpoints each; the one at target_index(n) has the backend's real listeners."""
    target = target_index(n)
    return [service(i, BACKENDS if i == target else tuple(pod_ip(3 * i + k) for k in range(3)))
            for i in range(n)]


def changed(ports: list[ServicePort], k: int, version: int) -> ServicePort:
    """Service k with its first endpoint replaced (a pod restarted with a new IP)."""
    sp = ports[k]
    fresh = Endpoint(f"10.244.{200 + version // 250}.{2 + version % 250}", TARGET_PORT, NODE)
    return replace(sp, endpoints=(fresh, *sp.endpoints[1:]))


# --- the namespaces --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Topology:
    client: str
    node: str
    backend: str

    @classmethod
    def named(cls, tag: str) -> Topology:
        prefix = f"{names.lab_prefix(LAB)}{tag}."
        return cls(f"{prefix}client", f"{prefix}node", f"{prefix}backend")

    def namespaces(self) -> list[str]:
        return [self.client, self.node, self.backend]

    def plan(self) -> list[Step]:
        c, n, b = self.client, self.node, self.backend
        return [
            Step(c, "netns"), Step(n, "netns"), Step(b, "netns"),
            Step(n, "sysctl", args={"net.ipv4.ip_forward": "1"}),
            Step(n, "veth", "to-client", {"peer": "eth0", "peer_ns": c}),
            Step(n, "veth", "to-backend", {"peer": "eth0", "peer_ns": b}),
            Step(n, "addr", "to-client", {"cidr": f"{CLIENT_GW}/24"}),
            Step(n, "addr", "to-backend", {"cidr": f"{BACKEND_GW}/24"}),
            Step(n, "up", "to-client"), Step(n, "up", "to-backend"),
            Step(c, "addr", "eth0", {"cidr": f"{CLIENT_IP}/24"}), Step(c, "up", "eth0"),
            Step(c, "route", "eth0", {"gateway": CLIENT_GW}),
            *(Step(b, "addr", "eth0", {"cidr": f"{ip}/24"}) for ip in BACKENDS),
            Step(b, "up", "eth0"), Step(b, "route", "eth0", {"gateway": BACKEND_GW}),
        ]

    def remove(self) -> None:
        spaces = self.namespaces()
        netns.kill_all_in(spaces)  # an nft or iptables-restore cut short by ^C
        for name in spaces:
            nft.release(name)  # the in-process context would keep the namespace alive
            netns.delete(name)


@contextmanager
def topology(tag: str) -> Iterator[Topology]:
    """Client, node and backend namespaces, removed on exit whatever happened."""
    topo = Topology.named(tag)
    try:
        apply(topo.plan())
        yield topo
    finally:
        topo.remove()


class Listeners:
    """A TCP listener on TARGET_PORT on each backend address, drained without a thread (a thread
    would compete with the timed client for the GIL)."""

    def __init__(self, backend: str) -> None:
        self.sockets: dict[str, socket.socket] = {}
        self.accepted = {ip: 0 for ip in BACKENDS}
        try:
            for ip in BACKENDS:
                s = netns.socket_in(backend, socket.AF_INET, socket.SOCK_STREAM)
                self.sockets[ip] = s
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ip, TARGET_PORT))
                s.listen(4096)
                s.setblocking(False)
        except BaseException:
            self.close()
            raise

    def drain(self) -> None:
        for ip, s in self.sockets.items():
            while True:
                try:
                    conn, _ = s.accept()
                except (BlockingIOError, InterruptedError):
                    break
                conn.close()
                self.accepted[ip] += 1

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()


def connect_times(client: str, address: str, port: int, count: int, first_port: int,
                  listeners: Listeners | None = None) -> list[float]:
    """Seconds each of `count` sequential connects from the client namespace to address:port took,
    each from its own source port (first_port, first_port + 1, ...): every one a new flow."""
    times: list[float] = []
    for start in range(0, count, 100):  # sockets made 100 at a time, in one thread in the namespace
        batch = min(100, count - start)
        socks = netns.run_in(client, lambda: [socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                                              for _ in range(batch)])
        try:
            for i, s in enumerate(socks):
                s.bind((CLIENT_IP, first_port + start + i))
                s.setblocking(False)
                poller = select.poll()
                poller.register(s, select.POLLOUT)
                began = time.perf_counter()
                code = s.connect_ex((address, port))
                if code not in (0, errno.EINPROGRESS):
                    raise OSError(code, f"connect to {address}:{port}: {errno.errorcode.get(code, code)}")
                ready = poller.poll(CONNECT_TIMEOUT_MS)
                took = time.perf_counter() - began
                code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if not ready or code:
                    what = errno.errorcode.get(code, code) if code else "timed out"
                    raise OSError(code or errno.ETIMEDOUT, f"connect to {address}:{port} from port "
                                                           f"{first_port + start + i}: {what}")
                times.append(took)
                s.close()
                if listeners:
                    listeners.drain()
        finally:
            for s in socks:
                s.close()
    return times


# --- the modes -------------------------------------------------------------------------------------

def iptables_offered() -> bool:
    """Whether the proxier can make the iptables mode with a chosen backend."""
    return "iptables_backend" in inspect.signature(proxier.make_mode).parameters


def available(mode: str) -> str:
    """Why `mode` cannot run here ("" when it can)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}"
    if mode.startswith("iptables") and not iptables_offered():
        return "the proxier has no iptables mode yet (make_mode has no iptables_backend)"
    return ""


def make(mode: str, node_ns: str):
    if mode == "nftables":
        return proxier.make_mode("nftables", node_ns, NODE, CLUSTER_CIDR)
    if mode == "nftables-command":  # the proxy's nftables mode as it was before libnftables in process
        return NftablesMode(node_ns, NODE, CLUSTER_CIDR, kernel=nft.Kernel(by_command=True))
    return proxier.make_mode("iptables", node_ns, NODE, CLUSTER_CIDR, iptables_backend=mode.split("-", 1)[1])


def timed(runner: asyncio.Runner, coro) -> float:
    """Seconds the coroutine took, on the runner's loop (which runs only meanwhile: pyroute2's
    synchronous IPRoute, used to build the namespaces, runs a loop of its own)."""

    async def clocked() -> float:
        began = time.perf_counter()
        await coro
        return time.perf_counter() - began

    return runner.run(clocked())


@dataclass
class Live:
    """A size's topology kept until the mode's first-packet latencies are measured."""

    round: Round
    topology: Topology
    target: ServicePort
    listeners: Listeners | None = None


def syncs(runner: asyncio.Runner, mode: str, n: int, topo: Topology, opts: Options) -> Live:
    """The mode's full sync, full resync and one-Service syncs of N Services in the topology's node."""
    r = Round(mode, n)
    ports = services(n)
    target = ports[target_index(n)]
    proxy = make(mode, topo.node)
    r.full_sync_s = timed(runner, proxy.sync(ports, True))
    r.resync_s = timed(runner, proxy.sync(ports, True))
    others = [k for k in range(n) if k != target_index(n)]
    for c in range(opts.changes):
        k = others[(c * 7919) % len(others)]  # spread over the list
        ports[k] = changed(ports, k, c)
        r.change_s.append(timed(runner, proxy.sync(ports, False)))
    return Live(r, topo, target)


def latencies(live: list[Live], opts: Options) -> None:
    """The first-packet latency of every mode at every size, interleaved in chunks: a burst of load
    from other processes then falls on all alike instead of on one, and the ratios stay fair."""
    try:
        for lv in live:
            lv.listeners = Listeners(lv.topology.backend)
        for lv in live:
            connect_times(lv.topology.client, lv.target.cluster_ip, lv.target.port, opts.warmup, FIRST_SOURCE_PORT,
                          lv.listeners)
        done, chunk = 0, max(1, opts.connects // 10)
        while done < opts.connects:
            count = min(chunk, opts.connects - done)
            for lv in live:
                lv.round.connect_s += connect_times(lv.topology.client, lv.target.cluster_ip, lv.target.port, count,
                                                    FIRST_SOURCE_PORT + opts.warmup + done, lv.listeners)
            done += count
        time.sleep(0.05)  # the last handshakes' ACKs
        for lv in live:
            lv.listeners.drain()
            lv.round.accepted = dict(lv.listeners.accepted)
            lv.round.flows = int(sysctl.read(lv.topology.node, "net.netfilter.nf_conntrack_count"))
    finally:
        for lv in live:
            if lv.listeners is not None:
                lv.listeners.close()


def _failed(mode: str, n: int, err: Exception, progress: Progress) -> Round:
    r = Round(mode, n, error=f"{type(err).__name__}: {err}"[:500])
    progress(f"{mode}, {n:,} Services: failed: {r.error}")
    return r


def measure(rounds: list[tuple[str, int]], opts: Options, progress: Progress) -> dict[tuple[str, int], Round]:
    """Each (mode, size): a fresh topology and the mode's syncs there, one after the other; then the
    first-packet latencies of all of them, interleaved. Every namespace is removed on the way out,
    whatever happened."""
    found: dict[tuple[str, int], Round] = {}
    live: list[Live] = []
    with ExitStack() as stack, asyncio.Runner() as runner:
        for mode, n in rounds:
            try:
                topo = stack.enter_context(topology(f"{opts.tag}.{mode}.{n}"))
                live.append(syncs(runner, mode, n, topo, opts))
            except Exception as err:  # noqa: BLE001 - one failing must not hide the others' figures
                found[(mode, n)] = _failed(mode, n, err, progress)
                continue
            r = live[-1].round
            progress(f"{mode}, {n:,} Services: full sync {_seconds(r.full_sync_s)}, resync {_seconds(r.resync_s)}, "
                     f"one change {_seconds(r.change_median_s)} (median of {len(r.change_s)})")
        if live:
            progress(f"first packet: {opts.connects} connects to each of {len(live)} Services, interleaved ...")
        try:
            latencies(live, opts)
        except Exception as err:  # noqa: BLE001
            live = [replace(lv, round=_failed(lv.round.mode, lv.round.services, err, progress)) for lv in live]
        for lv in live:
            found[(lv.round.mode, lv.round.services)] = lv.round
    return {key: found[key] for key in rounds}


def run(opts: Options, progress: Progress = lambda line: None) -> Result:
    """Every mode at every size."""
    result = Result(opts)
    rounds = []
    for mode in opts.modes:
        why = available(mode)
        if why:
            result.skipped[mode] = why
            progress(f"{mode}: skipped, {why}")
            continue
        for n in opts.sizes():
            if mode in SLOW_MODES and n > SLOW_LIMIT and not opts.slow:
                result.skipped[f"{mode} {n}"] = f"above {SLOW_LIMIT:,} Services only with --slow ({SLOW_MODES[mode]})"
                progress(f"{mode}, {n:,} Services: skipped ({result.skipped[f'{mode} {n}']})")
            else:
                rounds.append((mode, n))
    for (mode, n), r in measure(rounds, opts, progress).items():
        result.rounds.setdefault(mode, {})[n] = r
    return result


# --- the report ------------------------------------------------------------------------------------

def _seconds(v: float) -> str:
    return f"{v:.2f} s" if v >= 1 else f"{v * 1000:.1f} ms"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b and a == a and b == b else "-"


def table(result: Result) -> list[str]:
    """The report: one mode per column, the targets last, then the ratios."""
    opts = result.options
    modes = [m for m in opts.modes if m in result.rounds]
    top = max(opts.services)

    def cells(fn: Callable[[Round], str], n: int) -> list[str]:
        out = []
        for m in modes:
            r = result.rounds[m].get(n)
            out.append("skipped" if r is None else "failed" if r.error else fn(r))
        return out

    def target(n: int, text: str) -> str:
        return text if n == 10_000 else ""

    rows: list[tuple[str, list[str], str]] = [("", modes, "target (nftables)")]
    for n in opts.sizes():
        rows += [
            (f"full sync, {n:,} Services (fresh namespace)", cells(lambda r: _seconds(r.full_sync_s), n),
             target(n, "<= 0.5 s")),
            (f"full resync, {n:,} Services (existing table)", cells(lambda r: _seconds(r.resync_s), n), ""),
            (f"one changed Service at {n:,} (median of {opts.changes})",
             cells(lambda r: _seconds(r.change_median_s), n), "<= 10 ms"),
            (f"first packet p50 at {n:,} ({opts.connects} connects)",
             cells(lambda r: f"{r.connect_percentile(50) * 1e6:.0f} us", n), ""),
            (f"first packet p99 at {n:,}", cells(lambda r: f"{r.connect_percentile(99) * 1e6:.0f} us", n), ""),
        ]
    for n in opts.sizes():
        if n == opts.baseline:
            continue
        rows.append((f"first packet p50 {n:,} / {opts.baseline:,}",
                     [_ratio(*(None if r is None else r.connect_percentile(50)
                               for r in (result.get(m, n), result.get(m, opts.baseline)))) for m in modes],
                     "<= 1.2x" if n == top and top >= 10_000 else ""))
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{label:<{width}}  " + "".join(f"{v:>17}" for v in values) + f"  {t}".rstrip()
             for label, values, t in rows]
    lines += _ratio_lines(result)
    lines += _verdicts(result)
    for what, why in result.skipped.items():
        lines.append(f"skipped: {what}: {why}")
    for m in modes:
        for n, r in result.rounds[m].items():
            if r.error:
                lines.append(f"failed: {m} at {n:,} Services: {r.error}")
            elif r.accepted and min(r.accepted.values()) == 0:
                lines.append(f"note: {m} at {n:,}: an endpoint got no connection ({r.accepted})")
    return lines


def _ratio_lines(result: Result) -> list[str]:
    """Every other mode over nftables, at each size both ran."""
    lines = []
    for m in result.rounds:
        if m == "nftables":
            continue
        for n in result.options.sizes():
            mine, base = result.get(m, n), result.get("nftables", n)
            if mine is None or base is None:
                continue
            lines.append(f"ratio {m} / nftables at {n:,} Services: full sync {_ratio(mine.full_sync_s, base.full_sync_s)}, "
                         f"resync {_ratio(mine.resync_s, base.resync_s)}, "
                         f"one change {_ratio(mine.change_median_s, base.change_median_s)}, "
                         f"first packet p50 {_ratio(mine.connect_percentile(50), base.connect_percentile(50))}, "
                         f"p99 {_ratio(mine.connect_percentile(99), base.connect_percentile(99))}")
    return lines


def _verdicts(result: Result) -> list[str]:
    """The issue's nftables targets, met or missed (only when 10,000 Services were measured)."""
    big, small = result.get("nftables", 10_000), result.get("nftables", result.options.baseline)
    if big is None:
        return []
    lines = [
        f"target nftables full sync of 10,000 <= 0.5 s: {_seconds(big.full_sync_s)}, "
        + ("met" if big.full_sync_s <= 0.5 else "MISSED"),
        f"target nftables one changed Service at 10,000 <= 10 ms: {_seconds(big.change_median_s)}, "
        + ("met" if big.change_median_s <= 0.01 else "MISSED"),
    ]
    if small is not None:
        ratio = big.connect_percentile(50) / small.connect_percentile(50)
        lines.append(f"target nftables first packet p50 at 10,000 within 1.2x of at {result.options.baseline:,}: "
                     f"{ratio:.2f}x, " + ("met" if ratio <= 1.2 else "MISSED"))
    return lines
