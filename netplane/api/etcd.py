"""The etcd storage backend: etcd v3 through its JSON gateway (``/v3/kv/*``, ``/v3/watch``).

Keys are the real apiserver's: ``<prefix>/<resource>/<namespace>/<name>`` (cluster-scoped ones
without the namespace), prefix ``/registry``, with its three historical names kept (``minions``
for nodes, ``services/specs`` and ``services/endpoints``), so ``etcdctl get --prefix
/registry/pods/`` shows what it shows on a real cluster. Values are the objects' JSON (the
apiserver stores core types as protobuf; JSON is what it stores for custom resources) without
``resourceVersion``: that is etcd's ``mod_revision`` of the key, and a list's is the revision of
the read. Writes are one txn per batch: a create compares ``create_revision == 0``
(AlreadyExists), an update or delete ``mod_revision == <its resourceVersion>`` (Conflict).

Events come from one etcd watch on the prefix per backend (a thread), not from our own commits:
etcd hands them over in revision order, and writes of other API servers on the same etcd arrive
the same way. They feed an in-memory log of the last ``log_size`` events, which answers
``events_since`` -- the apiserver's watch cache, in small. On start the watch begins ``log_size``
revisions back, so the log is refilled from etcd's history and informers resume across an API
server restart without a re-list; where etcd has compacted that history the log starts at the
compaction, and older resourceVersions are 410 Gone. The backend compacts etcd itself (keeping
``log_size`` revisions), as the apiserver does every few minutes.

Only the standard library: the gateway is plain HTTP/1.1 + JSON, and ``http.client`` with one
keep-alive connection per thread is all a synchronous Store needs; a gRPC stack would add a
compiled dependency for nothing the gateway lacks.
"""
from __future__ import annotations

import base64
import bisect
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from netplane.api import codec
from netplane.api.backends import ADDED, DELETED, MODIFIED, Change, Event, Publish, Stale, expected_rv, too_large
from netplane.api.errors import ApiError, Gone
from netplane.api.resources import RESOURCES, by_kind
from netplane.kernel import programs

log = logging.getLogger(__name__)

# the real apiserver's keys for these three; every other resource lives under its plural
_SEGMENTS = {r.plural: r.plural for r in RESOURCES} | {
    "nodes": "minions", "services": "services/specs", "endpoints": "services/endpoints"
}
_NAMESPACED = {r.plural: r.namespaced for r in RESOURCES}
MAX_TXN_OPS = 128  # etcd's --max-txn-ops default; a bigger batch goes in several txns
PAGE = 1000  # keys per range request of a list, all read at the list's revision
CALL_TIMEOUT = 10.0
CAUGHT_UP_WAIT = 1.0  # how long events_since waits for the watch to bring this backend's own writes
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class EtcdError(Exception):
    """etcd answered a request with an error (the gateway's gRPC status)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"etcd: {message} (code {code})")
        self.code = code
        self.message = message


class _Restart(Exception):
    """The watch must start again: etcd compacted the revisions it was to begin with."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that covers every key starting with ``prefix`` (which ends in ``/``)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _keepalive(sock: socket.socket) -> None:
    """Probe an idle connection after 5 s, every 2 s, and drop it after 3 unanswered probes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((socket.TCP_KEEPIDLE, 5), (socket.TCP_KEEPINTVL, 2), (socket.TCP_KEEPCNT, 3)):
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


class Gateway:
    """Synchronous JSON calls to the gateway; one keep-alive connection per thread.

    A call that fails on the connection is tried again on a fresh one to the next endpoint (a member
    that refuses, is unreachable or does not answer in time); only when every endpoint has failed
    is it a 503. A write whose reply was lost
    is tried again, which a precondition then turns into AlreadyExists or Conflict: these calls
    are not idempotent, as etcd's own clients' are not.
    """

    def __init__(self, endpoints: list[str]):
        if not endpoints:
            raise ValueError("etcd:// needs at least one host:port")
        self.endpoints = [(host.strip("[]"), int(port)) for host, _, port in (e.rpartition(":") for e in endpoints)]
        self._current = 0
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for close()

    def endpoint(self) -> tuple[str, int]:
        return self.endpoints[self._current % len(self.endpoints)]

    def next_endpoint(self, failed: tuple[str, int]) -> None:
        """failed did not serve a connection: the next ones are tried from now on (unless another
        thread moved on already)."""
        if self.endpoint() == failed:
            self._current += 1

    def connect(self, timeout: float | None) -> http.client.HTTPConnection:
        host, port = self.endpoint()
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def call(self, path: str, body: dict) -> dict:
        data = codec.dumps(body)
        error: Exception | None = None
        for _ in range(len(self.endpoints) + 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connect(CALL_TIMEOUT)
                self._open.add(conn)
            try:
                conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                self._open.discard(conn)
                self._local.conn = None
                error = err
                if isinstance(err, OSError):  # refused, unreachable, timed out: that member is gone
                    self.next_endpoint((conn.host, conn.port))
                continue
            try:
                reply = codec.loads(text)
            except ValueError:
                reply = {}
            if resp.status != 200 or not isinstance(reply, dict):
                message = reply.get("message") or reply.get("error") if isinstance(reply, dict) else None
                raise EtcdError(int(reply.get("code") or 0) if isinstance(reply, dict) else 0,
                                message or f"HTTP {resp.status}: {text[:200]!r}")
            return reply
        where = ", ".join(f"{h}:{p}" for h, p in self.endpoints)
        raise ApiError(503, "ServiceUnavailable", f"etcd is unavailable ({where}): {error}")

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()


class EtcdBackend:
    def __init__(self, endpoints: list[str], prefix: str, log_size: int, publish: Publish):
        self._gw = Gateway(endpoints)
        self._prefix = prefix.rstrip("/").encode() + b"/"
        self._log_size = log_size
        self._compact_step = max(1, log_size // 10)
        self._publish = publish
        self._cond = threading.Condition()
        self._log: list[Event] = []  # the watch cache, rv order
        self._floor = 0  # the log holds every event after this rv: watching from before it is Gone
        self._seen = 0  # the last revision the watch delivered
        self._written = 0  # the last revision this backend wrote
        self._compacted = 0  # the last compaction this backend asked for
        self._closed = threading.Event()
        self._stream: http.client.HTTPConnection | None = None
        head = self._gw.call("/v3/kv/range", {
            "key": _b64(self._prefix), "range_end": _b64(_prefix_end(self._prefix)), "count_only": True
        })
        self.fresh = int(head.get("count", 0)) == 0
        start = self._available(max(1, int(head["header"]["revision"]) - log_size + 1))
        self._floor = self._seen = start - 1
        self._thread = threading.Thread(target=self._follow, name=f"etcd-watch {prefix}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        deadline = time.monotonic() + 5
        while self._thread.is_alive() and time.monotonic() < deadline:
            stream = self._stream
            if stream is not None and stream.sock is not None:
                try:
                    stream.sock.shutdown(socket.SHUT_RDWR)  # wakes the watch thread out of its read
                except OSError:
                    pass
            self._thread.join(0.1)
        self._gw.close()

    # -- reads

    def revision(self) -> int:
        reply = self._gw.call("/v3/kv/range", {"key": _b64(self._prefix), "keys_only": True, "limit": 1})
        return int(reply["header"]["revision"])

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        reply = self._gw.call("/v3/kv/range", {"key": _b64(self._key(plural, namespace, name))})
        kvs = reply.get("kvs")
        return _decode(kvs[0]) if kvs else None

    def list(self, plural: str, namespace: str | None, rv: int | None = None) -> tuple[list[dict], int]:
        start = self._key_prefix(plural, namespace)
        end, rev, items = _prefix_end(start), rv or 0, []
        while True:
            body = {"key": _b64(start), "range_end": _b64(end), "limit": PAGE}
            if rev:
                body["revision"] = rev  # every page from the same snapshot
            try:
                reply = self._gw.call("/v3/kv/range", body)
            except EtcdError as err:
                if "compacted" in err.message:
                    raise Gone(f"too old resource version: {rev}") from None
                if "future revision" in err.message:
                    raise too_large(rev, self.revision()) from None
                raise
            rev = rev or int(reply["header"]["revision"])
            kvs = reply.get("kvs", [])
            items.extend(_decode(kv) for kv in kvs)
            if not reply.get("more") or not kvs:
                break
            start = base64.b64decode(kvs[-1]["key"]) + b"\0"
        if namespace is None and _NAMESPACED[plural]:  # key order puts "a-b/" before "a/"
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items, rev

    def events_since(self, rv: int) -> list[Event]:
        with self._cond:
            # read-your-writes: our own commits reach the log through etcd's watch a moment later
            self._cond.wait_for(lambda: self._seen >= self._written or self._closed.is_set(), CAUGHT_UP_WAIT)
            if rv < self._floor:
                raise Gone(f"too old resource version: {rv} ({self._floor + 1})")
            return self._log[bisect.bisect_right(self._log, rv, key=lambda e: e[0]):]

    # -- writes

    def commit(self, changes: list[Change]) -> list[Event]:
        events: list[Event] = []
        for first in range(0, len(changes), MAX_TXN_OPS):
            events += self._txn(changes[first:first + MAX_TXN_OPS], first)
        rev = events[-1][0] if events else 0
        if rev - self._log_size - self._compacted >= self._compact_step:
            self.compact(rev - self._log_size)
        return events

    def compact(self, rv: int) -> None:
        if rv <= self._compacted:
            return
        try:
            self._gw.call("/v3/kv/compaction", {"revision": rv})
        except EtcdError as err:
            if "compacted" not in err.message:  # another server compacted further: fine
                raise
        self._compacted = rv

    def _txn(self, changes: list[Change], offset: int) -> list[Event]:
        compares, success, failure = [], [], []
        for type_, plural, obj in changes:
            meta = obj["metadata"]
            key = _b64(self._key(plural, meta.get("namespace", ""), meta["name"]))
            want = expected_rv(type_, obj)
            if want == 0:
                compares.append({"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
            elif want is not None:
                compares.append({"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(want)})
            if type_ == DELETED:
                success.append({"request_delete_range": {"key": key}})
            else:
                success.append({"request_put": {"key": key, "value": _b64(_stored(obj))}})
            failure.append({"request_range": {"key": key, "keys_only": True}})
        reply = self._gw.call("/v3/kv/txn", {"compare": compares, "success": success, "failure": failure})
        if not reply.get("succeeded"):
            raise Stale(offset + _failed(changes, reply.get("responses", [])))
        rev = int(reply["header"]["revision"])
        self._written = max(self._written, rev)
        for _, _, obj in changes:
            obj["metadata"]["resourceVersion"] = str(rev)
        return [(rev, type_, plural, obj) for type_, plural, obj in changes]

    # -- keys

    def _key_prefix(self, plural: str, namespace: str | None) -> bytes:
        key = self._prefix + _SEGMENTS[plural].encode() + b"/"
        return key + namespace.encode() + b"/" if namespace and _NAMESPACED[plural] else key

    def _key(self, plural: str, namespace: str, name: str) -> bytes:
        return self._key_prefix(plural, namespace) + name.encode()

    def _stub(self, key: bytes) -> tuple[str, dict] | None:
        """(plural, object with only its names) from a key, for a delete etcd sent without prev_kv."""
        rest = key[len(self._prefix):].decode()
        for res in RESOURCES:
            segment = _SEGMENTS[res.plural] + "/"
            parts = rest[len(segment):].split("/")
            if rest.startswith(segment) and len(parts) == 1 + res.namespaced:
                meta = {"name": parts[-1], **({"namespace": parts[0]} if res.namespaced else {})}
                version = f"{res.group}/{res.version}" if res.group else res.version
                return res.plural, {"kind": res.kind, "apiVersion": version, "metadata": meta}
        return None

    # -- the watch

    def _available(self, start: int) -> int:
        """The first revision from ``start`` on that etcd still has: where compaction left off.

        Known before the watch thread starts, so that a resourceVersion older than the log is
        Gone from the first call on (etcd says where it compacted only in a watch's cancel)."""
        try:
            self._gw.call("/v3/kv/range", {"key": _b64(self._prefix), "keys_only": True, "limit": 1,
                                           "revision": str(start)})
            return start
        except EtcdError as err:
            if "compacted" not in err.message:
                raise
        conn = self._gw.connect(timeout=CALL_TIMEOUT)
        try:
            resp = self._watch_request(conn, start)
            while line := resp.readline():
                result = json.loads(line).get("result") or {}
                if result.get("canceled"):
                    return max(start, int(result.get("compact_revision") or start))
            raise EtcdError(0, "the watch ended before etcd said where it compacted")
        finally:
            conn.close()

    def _follow(self) -> None:
        """The watch thread: follows the prefix from the last revision seen, reconnecting as needed."""
        backoff = 0.1
        while not self._closed.is_set():
            try:
                resp = self._open_watch(self._seen + 1)
                backoff = 0.1
                while line := resp.readline():
                    self._receive(json.loads(line))
            except _Restart:
                backoff = 0.0  # at once, from the compaction on
            except (OSError, http.client.HTTPException, ValueError, EtcdError) as err:
                if isinstance(err, OSError) and self._stream is not None:
                    self._gw.next_endpoint((self._stream.host, self._stream.port))
                if not self._closed.is_set():
                    log.warning("etcd watch %s: %s; reconnecting in %.1fs", self._prefix.decode(), err, backoff)
            finally:
                if self._stream is not None:
                    self._stream.close()
            self._closed.wait(backoff)
            backoff = min(max(backoff * 2, 0.1), 5.0)

    def _open_watch(self, start: int) -> http.client.HTTPResponse:
        conn = self._gw.connect(timeout=CALL_TIMEOUT)
        self._stream = conn
        conn.connect()
        conn.sock.settimeout(None)  # connected in time; then a watch is quiet as long as nothing changes,
        _keepalive(conn.sock)  # but a member whose host died is noticed by TCP keepalive
        if self._closed.is_set():
            raise OSError("closed")
        return self._watch_request(conn, start)

    def _watch_request(self, conn: http.client.HTTPConnection, start: int) -> http.client.HTTPResponse:
        create = {
            "key": _b64(self._prefix), "range_end": _b64(_prefix_end(self._prefix)),
            "start_revision": str(start), "prev_kv": True,  # a DELETE then carries the deleted object
        }
        conn.request("POST", "/v3/watch", json.dumps({"create_request": create}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise EtcdError(resp.status, resp.read().decode(errors="replace"))
        return resp

    def _receive(self, message: dict) -> None:
        if "error" in message:
            error = message["error"]
            raise EtcdError(int(error.get("grpc_code") or error.get("code") or 0), error.get("message", ""))
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = int(result.get("compact_revision") or 0)
            if not compacted:
                raise EtcdError(0, f"watch canceled: {result.get('cancel_reason', '')}")
            self._lost(compacted)
            raise _Restart(compacted)
        events = [e for e in map(self._event, result.get("events") or ()) if e is not None]
        if events:
            with self._cond:
                self._log.extend(events)
                self._seen = events[-1][0]
                if len(self._log) > self._log_size + self._compact_step:  # trimmed in steps, not per event
                    cut = len(self._log) - self._log_size
                    self._floor = self._log[cut - 1][0]
                    del self._log[:cut]
                self._publish(events)  # under the lock: events_since and subscribers agree
                self._cond.notify_all()

    def _lost(self, compacted: int) -> None:
        """etcd compacted revisions this watch never saw: everything before is Gone, and every open
        watch ends, so that its client comes back, gets 410 and re-lists."""
        with self._cond:
            lost = compacted - 1 > self._seen
            self._floor = self._seen = max(self._seen, compacted - 1)
            self._log.clear()
            self._cond.notify_all()
            if lost:
                self._publish([None])

    def _event(self, event: dict) -> Event | None:
        kv = event["kv"]
        rv = int(kv["mod_revision"])
        found: tuple[str | None, dict] | None
        if event.get("type") == "DELETE":
            type_, prev = DELETED, event.get("prev_kv")
            if prev:
                obj = _decode(prev)
                found = _plural(obj), obj
            else:
                found = self._stub(base64.b64decode(kv["key"]))
        else:
            type_ = ADDED if kv.get("create_revision") == kv["mod_revision"] else MODIFIED
            obj = _decode(kv)
            found = _plural(obj), obj
        if found is None or found[0] is None:
            log.warning("etcd watch: skipping %s, not one of our objects", base64.b64decode(kv["key"]))
            return None
        plural, obj = found
        obj["metadata"]["resourceVersion"] = str(rv)
        return rv, type_, plural, obj


def _decode(kv: dict) -> dict:
    obj = codec.loads(base64.b64decode(kv["value"]))
    obj["metadata"]["resourceVersion"] = kv["mod_revision"]
    return obj


def _plural(obj: dict) -> str | None:
    try:
        return by_kind(obj.get("kind", "")).plural
    except KeyError:
        return None


def _stored(obj: dict) -> bytes:
    """The value etcd keeps: the object without resourceVersion, which is the key's mod_revision."""
    meta = obj["metadata"]
    rv = meta.pop("resourceVersion", None)
    try:
        return _DUMPS(obj).encode()
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


def _failed(changes: list[Change], responses: list[dict]) -> int:
    """Which change's precondition failed, from the failure branch's reads of every key."""
    for i, ((type_, _, obj), resp) in enumerate(zip(changes, responses)):
        want = expected_rv(type_, obj)
        kvs = resp.get("response_range", {}).get("kvs")
        have = int(kvs[0]["mod_revision"]) if kvs else 0
        if want is not None and have != want:
            return i
    return 0


# -- a throwaway etcd for tests and benchmarks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_etcd(binary: str = "etcd") -> Iterator[str]:
    """A single-member etcd on 127.0.0.1 (free ports, a temp data dir), as an ``etcd://`` URL;
    killed and removed on exit, also when the block fails."""
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found (Debian: apt-get install etcd-server)")
    work = tempfile.mkdtemp(prefix="netplane-etcd-")
    proc = None
    try:
        for _ in range(3):  # a free port can be taken between looking and binding
            client, peer = _free_port(), _free_port()
            argv = [
                path, "--name", "netplane", "--data-dir", os.path.join(work, "data"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"netplane=http://127.0.0.1:{peer}",
                "--logger", "zap", "--log-outputs", os.path.join(work, "etcd.log"),
            ]
            proc = programs.start_daemon(argv)
            if _healthy(proc, client):
                break
            proc.kill()
            proc.wait()
            shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
        else:
            with open(os.path.join(work, "etcd.log"), errors="replace") as f:
                raise RuntimeError(f"etcd did not start: {f.read()[-2000:]}")
        yield f"etcd://127.0.0.1:{client}"
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _healthy(proc: programs.Daemon, port: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if json.loads(conn.getresponse().read()).get("health") == "true":
                return True
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    return False
