"""Storage backends of the API server: where objects, resourceVersions and the event log live.

``Store`` keeps every piece of object logic (validation, defaults, generateName, uid, timestamps,
admission, the status/main merge, subscribers); a backend only keeps objects and their versions:

- ``get`` / ``list``: stored objects with ``metadata.resourceVersion`` set; ``list`` (sorted by
  namespace and name) also returns the resourceVersion it is current at, or lists the objects as
  they were at an older one (``Gone`` once compacted);
- ``commit(changes)``: writes a batch of ``(type, plural, obj)`` atomically, gives each its
  resourceVersion and returns the events. Preconditions come with the changes: ADDED means "no
  such object yet", MODIFIED and DELETED "still at the resourceVersion the object carries" (none
  carried: unconditional). A failed precondition raises ``Stale`` and writes nothing;
- ``events_since(rv)``: the events after ``rv``, oldest first, or ``Gone`` once compacted;
- ``compact(rv)``: forget the events up to ``rv`` (each backend also compacts by itself, keeping
  about ``log_size`` events).

Every committed event reaches ``publish`` exactly once and in resourceVersion order: SQLite calls
it from ``commit``; etcd from its watch, so writes of other API servers on the same etcd arrive too.
``publish([None])`` means "events were lost": every watch must end and its client re-list.

The store picks one by URL (store.open_backend).
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Protocol

from netplane.api import codec
from netplane.api.errors import ApiError, Gone

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
Event = tuple[int, str, str, dict]  # (rv, type, plural, obj); obj is shared: read it, never change it
Change = tuple[str, str, dict]  # (type, plural, obj) for commit
Publish = Callable[[list], None]


class Stale(Exception):
    """The precondition of ``changes[index]`` failed: the object exists, is gone, or has moved on."""

    def __init__(self, index: int):
        super().__init__(f"precondition of change {index} failed")
        self.index = index


class Backend(Protocol):
    fresh: bool  # nothing was ever stored: the Store makes the default namespaces

    def get(self, plural: str, namespace: str, name: str) -> dict | None: ...

    def list(self, plural: str, namespace: str | None, rv: int | None = None) -> tuple[list[dict], int]: ...

    def commit(self, changes: list[Change]) -> list[Event]: ...

    def events_since(self, rv: int) -> list[Event]: ...

    def revision(self) -> int: ...

    def compact(self, rv: int) -> None: ...

    def close(self) -> None: ...


def too_large(rv: int, current: int) -> ApiError:
    """A read at a resourceVersion the store has not reached yet (the apiserver's answer)."""
    return ApiError(504, "Timeout", f"Too large resource version: {rv}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})


def expected_rv(type_: str, obj: dict) -> int | None:
    """The precondition of one change: 0 for "absent", an rv, or None for "whatever is there"."""
    if type_ == ADDED:
        return 0
    rv = obj["metadata"].get("resourceVersion")
    return int(rv) if rv else None


# -- SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    plural TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (plural, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL,
    plural TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _dumps(obj: dict) -> str:
    return codec.dumps(obj).decode()


class SqliteBackend:
    """One SQLite file: the objects, one global resourceVersion counter, and the event log.

    WAL with ``synchronous=NORMAL``: a COMMIT has written its WAL frames with write(2) before it
    returns, so every acknowledged write survives a ``kill -9`` of the process (the page cache
    keeps them); only a power loss can take back the last transactions, which would need an fsync
    per commit (``synchronous=FULL``) and costs an order of magnitude in creates/s.
    """

    def __init__(self, path: str, log_size: int, publish: Publish):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one connection, used from any thread
        self._log_size = log_size
        self._publish = publish
        self._rv = self._meta("rv")
        self._compacted = self._meta("compacted")  # events with rv <= this are gone
        self.fresh = self._rv == 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def revision(self) -> int:
        return self._rv

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT json FROM objects WHERE plural = ? AND namespace = ? AND name = ?",
                (plural, namespace, name),
            ).fetchone()
        return codec.loads(row[0]) if row else None

    def list(self, plural: str, namespace: str | None, rv: int | None = None) -> tuple[list[dict], int]:
        sql, args = "SELECT json FROM objects WHERE plural = ?", [plural]
        if namespace:
            sql, args = sql + " AND namespace = ?", [plural, namespace]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY namespace, name", args).fetchall()
            items = [codec.loads(text) for (text,) in rows]
            if rv is None or rv == self._rv:
                return items, self._rv
            return self._as_of(plural, args[1:], items, rv), rv

    def _as_of(self, plural: str, namespace: list[str], current: list[dict], rv: int) -> list[dict]:
        """The objects as they were at ``rv``: today's, with every later change undone from the log."""
        if rv > self._rv:
            raise too_large(rv, self._rv)
        if rv < self._compacted:
            raise Gone(f"too old resource version: {rv} ({self._compacted + 1})")
        sql = "SELECT type, namespace, name FROM events WHERE plural = ? AND rv > ?"
        later = self._db.execute(sql + (" AND namespace = ?" if namespace else "") + " ORDER BY rv",
                                 [plural, rv, *namespace]).fetchall()
        first: dict[tuple[str, str], str] = {}
        for type_, ns, name in later:
            first.setdefault((ns, name), type_)
        state = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in current}
        for key, type_ in first.items():
            if type_ == ADDED:  # made after rv
                state.pop(key, None)
                continue
            row = self._db.execute(
                "SELECT json FROM events WHERE plural = ? AND namespace = ? AND name = ? AND rv <= ? "
                "ORDER BY rv DESC LIMIT 1", (plural, *key, rv)).fetchone()
            if row is None:  # its version at rv is older than the log
                raise Gone(f"too old resource version: {rv}: the state of {plural} at it was compacted")
            state[key] = codec.loads(row[0])
        return [state[key] for key in sorted(state)]

    def events_since(self, rv: int) -> list[Event]:
        with self._lock:
            if rv < self._compacted:
                raise Gone(f"too old resource version: {rv} ({self._compacted + 1})")
            rows = self._db.execute(
                "SELECT rv, type, plural, json FROM events WHERE rv > ? ORDER BY rv", (rv,)
            ).fetchall()
        return [(r, t, p, codec.loads(text)) for r, t, p, text in rows]

    def commit(self, changes: list[Change]) -> list[Event]:
        with self._lock:
            rv, compacted, events = self._rv, self._compacted, []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i, (type_, plural, obj) in enumerate(changes):
                    meta = obj["metadata"]
                    key = (plural, meta.get("namespace", ""), meta["name"])
                    want = expected_rv(type_, obj)
                    if want is not None:
                        row = self._db.execute(
                            "SELECT rv FROM objects WHERE plural = ? AND namespace = ? AND name = ?", key
                        ).fetchone()
                        if (row[0] if row else 0) != want:
                            raise Stale(i)
                    rv += 1
                    meta["resourceVersion"] = str(rv)
                    text = _dumps(obj)
                    if type_ == DELETED:
                        self._db.execute(
                            "DELETE FROM objects WHERE plural = ? AND namespace = ? AND name = ?", key
                        )
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)", (*key, rv, text)
                        )
                    self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (rv, type_, *key, text))
                    events.append((rv, type_, plural, obj))
                if rv - self._log_size > compacted:
                    compacted = rv - self._log_size
                    self._db.execute("DELETE FROM events WHERE rv <= ?", (compacted,))
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (("rv", rv), ("compacted", compacted))
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rv, self._compacted = rv, compacted
            self._publish(events)  # under the lock: subscribers see the events in rv order
        return events

    def compact(self, rv: int) -> None:
        with self._lock:
            rv = min(rv, self._rv)
            if rv <= self._compacted:
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM events WHERE rv <= ?", (rv,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (rv,))
            self._db.execute("COMMIT")
            self._compacted = rv

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0
