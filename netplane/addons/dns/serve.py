"""The DNS server of the netplane/dns image, run in each coredns pod: ``python -m netplane.addons.dns
-conf /etc/coredns/Corefile``.

It reads the API as an in-cluster client (its ServiceAccount token, the ``kubernetes`` Service):
list+watch of Namespaces, Services and EndpointSlices. Until the first lists are in, every question
in the cluster zone is answered SERVFAIL and ``/ready`` says 503. Then UDP and TCP on port 53,
``/health`` on :8080, ``/ready`` on :8181, Prometheus metrics on :9153 with CoreDNS's names, a
line per query on stdout when the Corefile says ``log``, and the Corefile read again when it
changes (the ConfigMap's volume is updated in place), as the reload plugin does.
"""
from __future__ import annotations

import asyncio
import bisect
import decimal
import hashlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from netplane.addons.dns import corefile, wire
from netplane.addons.dns.zone import Zone
from netplane.api.client import in_cluster
from netplane.api.informer import Informer, Informers

log = logging.getLogger("coredns")
RELOAD_CHECK = 2.0  # seconds between looks at the Corefile
TCP_IDLE = 10.0  # seconds a TCP connection may wait for its next query
DURATION_BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))  # CoreDNS's: 0.25 ms doubling to 8.192 s
SERVER_LABEL = "dns://:53"


@dataclass
class Metrics:
    """CoreDNS's request and response counters and its request duration histogram (no per-type
    label since CoreDNS 1.8.4), in Prometheus's text format."""
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (proto, family, type)
    responses: dict[str, int] = field(default_factory=dict)  # rcode
    durations: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))  # per bucket, +Inf
    seconds: float = 0.0

    def count(self, proto: str, family: str, qtype: str, rcode: str, seconds: float) -> None:
        key = (proto, family, qtype)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.responses[rcode] = self.responses.get(rcode, 0) + 1
        self.durations[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # the first bucket it is <= to
        self.seconds += seconds

    def text(self) -> str:
        common = f'server="{SERVER_LABEL}",view="",zone="."'
        lines = ["# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.",
                 "# TYPE coredns_dns_requests_total counter"]
        lines += [f'coredns_dns_requests_total{{family="{family}",proto="{proto}",{common},type="{qtype}"}} {n}'
                  for (proto, family, qtype), n in sorted(self.requests.items())]
        lines += ["# HELP coredns_dns_responses_total Counter of response status codes.",
                  "# TYPE coredns_dns_responses_total counter"]
        lines += [f'coredns_dns_responses_total{{plugin="kubernetes",rcode="{rcode}",{common}}} {n}'
                  for rcode, n in sorted(self.responses.items())]
        lines += ["# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took "
                  "per zone.", "# TYPE coredns_dns_request_duration_seconds histogram"]
        running = 0
        for le, n in zip([*(f"{b:g}" for b in DURATION_BUCKETS), "+Inf"], self.durations):
            running += n
            lines.append(f'coredns_dns_request_duration_seconds_bucket{{{common},le="{le}"}} {running}')
        lines.append(f"coredns_dns_request_duration_seconds_sum{{{common}}} {self.seconds:.9f}")
        lines.append(f"coredns_dns_request_duration_seconds_count{{{common}}} {running}")
        return "\n".join(lines) + "\n"


class Server:
    """The answers: the zone as the watched objects make it (built again after each change, at the
    next question), SERVFAIL until they are in."""

    def __init__(self, config: corefile.Config, informers: Informers) -> None:
        self.config, self.informers = config, informers
        self.watched = [informers.get(p) for p in ("namespaces", "services", "endpointslices")]
        self.pods: Informer | None = None  # watched only for `pods verified`, as the plugin does
        self.zone: Zone | None = None
        self.changed_at = int(time.time())
        self.metrics = Metrics()
        self.started: set[asyncio.Task] = set()  # the pod watch, when a reload asks for it
        for informer in self.watched:
            informer.add_handler(self._changed)
        self._watch_pods_if_asked(start=False)  # before Informers.run, which runs it

    def _watch_pods_if_asked(self, start: bool) -> None:
        if self.config.pods == "verified" and self.pods is None:
            self.pods = self.informers.get("pods")
            self.pods.add_handler(self._changed)
            self.watched.append(self.pods)
            if start:
                self.started.add(asyncio.get_running_loop().create_task(self.pods.run()))

    async def _changed(self, kind: str, obj: dict, old: dict | None) -> None:
        self.zone, self.changed_at = None, int(time.time())

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.watched)

    def current(self) -> Zone | None:
        if self.zone is None and self.synced:
            namespaces, services, slices = (list(i.cache.values()) for i in self.watched[:3])
            pods = list(self.pods.cache.values()) if self.pods is not None else []
            self.zone = Zone.build(self.config, namespaces, services, slices, self.changed_at, pods)
        return self.zone

    def answer(self, question: wire.Question) -> wire.Answer:
        """The zone's answer; before the first lists are in, SERVFAIL (with the SOA, as the plugin
        says it) for a name in the zone, the hosts block's answer for any other."""
        zone = self.current()
        if zone is not None:
            return zone.answer(question)
        unsynced = Zone.build(self.config, [], [], [], self.changed_at)
        name = question.key.rstrip(".")
        if name == self.config.zone or name.endswith("." + self.config.zone):
            return wire.Answer(wire.SERVFAIL, authority=(unsynced.soa(),))
        return unsynced.answer(question)

    def reconfigure(self, config: corefile.Config) -> None:
        self.config, self.zone = config, None
        self._watch_pods_if_asked(start=True)

    def handle(self, data: bytes, peer: tuple, proto: str) -> bytes | None:
        """The answer to one message (None: nothing to send back)."""
        began = time.perf_counter()
        try:
            query = wire.parse_query(data)
        except wire.FormatError:
            return wire.format_error(data)
        if query.opcode != 0 or query.question.qclass != wire.IN:  # the server's own refusals
            rcode = wire.NOTIMP if query.opcode != 0 else wire.REFUSED
            message = wire.error(query, rcode)
        else:
            answer = self.answer(query.question)
            rcode = answer.rcode
            message = wire.response(query, answer, query.limit(proto == "tcp"))
        took = time.perf_counter() - began
        qtype = wire.TYPE_NAMES.get(query.question.qtype, "other")
        family = "2" if ":" in peer[0] else "1"
        self.metrics.count(proto, family, qtype, wire.RCODE_NAMES.get(rcode, str(rcode)), took)
        if self.config.log:
            self._log(query, peer, proto, message, rcode, took)
        return message

    @staticmethod
    def _log(query: wire.Query, peer: tuple, proto: str, message: bytes, rcode: int, took: float) -> None:
        """A line as the log plugin's default format writes it."""
        flags = struct.unpack_from(">H", message, 2)[0]
        shown = ",".join(name for bit, name in ((wire.QR, "qr"), (wire.AA, "aa"), (wire.TC, "tc"), (wire.RD, "rd"),
                                                (wire.RA, "ra"), (wire.CD, "cd")) if flags & bit)
        q = query.question
        remote = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        size = 65535 if proto == "tcp" else max(query.udp_size or 0, wire.PLAIN_UDP_SIZE)
        print(f'[INFO] {remote}:{peer[1]} - {query.id} "{wire.TYPE_NAMES.get(q.qtype, q.qtype)} IN {q.key}. {proto} '
              f'{query.size} {str(query.dnssec_ok).lower()} {size}" '
              f"{wire.RCODE_NAMES.get(rcode, rcode)} {shown} {len(message)} {_seconds(took)}s", flush=True)


def _seconds(took: float) -> str:
    """A duration as Go's FormatFloat(x, 'f', -1, 64) writes it: the shortest digits, never an exponent."""
    return format(decimal.Decimal(repr(took)), "f")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        answer = self.server.handle(data, addr, "udp")
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


async def _tcp(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Queries one after another on one connection, each after its two-byte length."""
    peer = writer.get_extra_info("peername")
    try:
        while True:
            length = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))[0]
            answer = server.handle(await reader.readexactly(length), peer, "tcp")
            if answer is None:
                break
            writer.write(struct.pack(">H", len(answer)) + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def _http_address(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port or default_port)


async def _serve_http(server: Server) -> list[web.AppRunner]:
    """/health, /ready and /metrics, each on its own port as the plugins serve them."""
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="OK") if server.synced else web.Response(status=503, text="kubernetes\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=server.metrics.text(), content_type="text/plain")

    runners = []
    for where, path, handler, port in ((server.config.health, "/health", health, 8080),
                                       (server.config.ready, "/ready", ready, 8181),
                                       (server.config.metrics, "/metrics", metrics, 9153)):
        app = web.Application()
        app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *_http_address(where, port)).start()
        runners.append(runner)
    return runners


async def _reload(path: Path, server: Server, read: Callable[[], bytes]) -> None:
    """Read the Corefile again when it changes; a Corefile that does not parse changes nothing."""
    seen = hashlib.sha256(read()).digest()
    while True:
        await asyncio.sleep(RELOAD_CHECK)
        try:
            text = read()
        except OSError:
            continue
        if hashlib.sha256(text).digest() == seen:
            continue
        seen = hashlib.sha256(text).digest()
        try:
            server.reconfigure(corefile.parse(text.decode()))
            print(f"[INFO] Reloading complete: {path}", flush=True)
        except corefile.CorefileError as err:
            print(f"[ERROR] Corefile changes not loaded: {err}", flush=True)


async def run(path: Path) -> None:
    read = path.read_bytes
    config = corefile.parse(read().decode())
    client = in_cluster()
    informers = Informers(client)
    server = Server(config, informers)
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(server), local_addr=("0.0.0.0", config.port),
                                                 family=socket.AF_INET)
    tcp = await asyncio.start_server(lambda r, w: _tcp(server, r, w), "0.0.0.0", config.port, reuse_address=True)
    runners = await _serve_http(server)
    print(f".:{config.port}\nnetplane/dns: serving {config.zone}", flush=True)  # CoreDNS's first lines
    try:
        await asyncio.gather(informers.run(), _reload(path, server, read))
    finally:
        udp.close()
        tcp.close()
        for runner in runners:
            await runner.cleanup()
        await client.close()


def main(argv: list[str]) -> int:
    path = Path("/etc/coredns/Corefile")
    if "-conf" in argv:
        path = Path(argv[argv.index("-conf") + 1])
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s", stream=sys.stdout)
    try:
        asyncio.run(run(path))
    except corefile.CorefileError as err:
        print(f"[FATAL] {path}: {err}", flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
