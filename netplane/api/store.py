"""Object storage for the embedded API server: SQLite, one global resourceVersion, an event log.

Every write runs under one lock and one SQLite transaction, takes the next resourceVersion and
appends one event per changed object; the log keeps the last ``log_size`` events (older ones are
compacted, and watching from before them is ``Gone``, as with etcd's compaction). After the commit
the events go to every subscriber queue, each on its own event loop.
"""
from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from netplane.api.errors import ApiError, Gone, already_exists, bad_request, conflict, invalid, not_found
from netplane.api.resources import Resource, api_version, by_plural

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
Event = tuple[int, str, str, dict]  # (rv, type, plural, obj); obj is shared: read it, never change it
Admit = Callable[[str, str, dict, "dict | None", "Store"], "dict | None"]

DEFAULT_NAMESPACES = ("default", "kube-system")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no look-alikes

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


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Kubernetes objects in one SQLite file; safe to call from several threads."""

    def __init__(self, path: str, admit: Admit | None = None, log_size: int = 10_000):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()  # re-entrant: the admission hook may read the store
        self._admit = admit
        self._log_size = log_size
        self._subscribers: list[tuple[asyncio.Queue, asyncio.AbstractEventLoop]] = []
        self._rv = self._meta("rv")
        self._compacted = self._meta("compacted")  # events with rv <= this are gone
        if self._rv == 0:
            for ns in DEFAULT_NAMESPACES:
                self.create("namespaces", {"metadata": {"name": ns}})

    def close(self) -> None:
        self._db.close()

    @property
    def resource_version(self) -> int:
        return self._rv

    # -- reads

    def get(self, plural: str, namespace: str | None, name: str) -> dict:
        res = by_plural(plural)
        with self._lock:
            obj = self._load(plural, _namespace(res, namespace), name)
        if obj is None:
            raise not_found(plural, name)
        return obj

    def list(self, plural: str, namespace: str | None = None) -> tuple[list[dict], int]:
        """All objects of a resource (in one namespace, or all) and the rv they are current at."""
        res = by_plural(plural)
        sql, args = "SELECT json FROM objects WHERE plural = ?", [plural]
        if res.namespaced and namespace:
            sql, args = sql + " AND namespace = ?", [plural, namespace]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY namespace, name", args).fetchall()
            return [json.loads(text) for (text,) in rows], self._rv

    def events_since(self, rv: int) -> list[Event]:
        """Every event after ``rv``, oldest first; ``Gone`` when the log no longer has them all."""
        with self._lock:
            if rv < self._compacted:
                raise Gone(f"too old resource version: {rv} ({self._compacted + 1})")
            rows = self._db.execute(
                "SELECT rv, type, plural, json FROM events WHERE rv > ? ORDER BY rv", (rv,)
            ).fetchall()
        return [(r, t, p, json.loads(text)) for r, t, p, text in rows]

    # -- writes

    def create(self, plural: str, obj: dict) -> dict:
        res = by_plural(plural)
        obj = _checked_copy(res, obj)
        meta = obj["metadata"]
        with self._lock:
            ns = _namespace(res, meta.get("namespace"))
            if res.namespaced:
                meta["namespace"] = ns
                if self._load("namespaces", "", ns) is None:
                    raise not_found("namespaces", ns)
            if not meta.get("name"):
                meta["name"] = self._generate_name(res, ns, meta)
            _validate_name(res, meta["name"])
            if self._load(plural, ns, meta["name"]) is not None:
                raise already_exists(plural, meta["name"])
            meta.pop("resourceVersion", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if res.kind == "Namespace":
                obj.setdefault("status", {}).setdefault("phase", "Active")
            obj = self._admitted("create", plural, obj, None)
            return copy.deepcopy(self._commit([(ADDED, plural, obj)])[0][3])

    def update(self, plural: str, obj: dict, subresource: str | None = None) -> dict:
        """Replaces an object; the main resource keeps the stored status, ``status`` keeps the rest."""
        res = by_plural(plural)
        if subresource not in (None, "status") or (subresource and not res.has_status):
            raise ApiError(404, "NotFound", f"{plural} has no subresource {subresource!r}")
        new = _checked_copy(res, obj)
        meta = new["metadata"]
        ns, name = _namespace(res, meta.get("namespace")), meta.get("name")
        if not name:
            raise invalid(res.kind, "", "metadata.name", "Required value: name is required")
        with self._lock:
            old = self._load(plural, ns, name)
            if old is None:
                raise not_found(plural, name)
            current = old["metadata"]["resourceVersion"]
            if meta.get("resourceVersion") not in (None, "", current):
                raise conflict(plural, name)
            if subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status", {})}
            else:
                for key in ("uid", "creationTimestamp", "namespace"):
                    if key in old["metadata"]:
                        meta[key] = old["metadata"][key]
                new.pop("status", None)
                if res.has_status and "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            verb = "update/status" if subresource else "update"
            new = self._admitted(verb, plural, new, old)
            new["metadata"]["resourceVersion"] = current
            if new == old:  # a no-op write keeps its rv and sends no event, as the apiserver does
                return old
            return copy.deepcopy(self._commit([(MODIFIED, plural, new)])[0][3])

    def delete(self, plural: str, namespace: str | None, name: str) -> dict:
        """Deletes an object and returns it; a Namespace takes the objects inside it along."""
        res = by_plural(plural)
        with self._lock:
            old = self._load(plural, _namespace(res, namespace), name)
            if old is None:
                raise not_found(plural, name)
            changes = []
            if plural == "namespaces":
                rows = self._db.execute(
                    "SELECT plural, json FROM objects WHERE namespace = ? ORDER BY plural, name",
                    (name,),
                ).fetchall()
                changes = [(DELETED, p, json.loads(text)) for p, text in rows]
            changes.append((DELETED, plural, old))
            return copy.deepcopy(self._commit(changes)[-1][3])

    # -- subscribers

    def subscribe(self) -> asyncio.Queue:
        """A queue on the running loop that gets every committed Event."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._subscribers.append((queue, asyncio.get_running_loop()))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = [(q, loop) for q, loop in self._subscribers if q is not queue]

    # -- internals

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _load(self, plural: str, namespace: str, name: str) -> dict | None:
        row = self._db.execute(
            "SELECT json FROM objects WHERE plural = ? AND namespace = ? AND name = ?",
            (plural, namespace, name),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def _generate_name(self, res: Resource, namespace: str, meta: dict) -> str:
        prefix = meta.get("generateName")
        if not prefix:
            raise invalid(
                res.kind, "", "metadata.name", "Required value: name or generateName is required"
            )
        while True:
            name = prefix + "".join(secrets.choice(_GENERATED_CHARS) for _ in range(5))
            if self._load(res.plural, namespace, name) is None:
                return name

    def _admitted(self, verb: str, plural: str, obj: dict, old: dict | None) -> dict:
        if self._admit is None:
            return obj
        result = self._admit(verb, plural, obj, old, self)
        return obj if result is None else result

    def _commit(self, changes: list[tuple[str, str, dict]]) -> list[Event]:
        """Writes the changes in one transaction, one rv each, then publishes their events."""
        rv, compacted, events = self._rv, self._compacted, []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for type_, plural, obj in changes:
                rv += 1
                meta = obj["metadata"]
                meta["resourceVersion"] = str(rv)
                key = (plural, meta.get("namespace", ""), meta["name"])
                text = json.dumps(obj, separators=(",", ":"))
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
        self._publish(events)
        return events

    def _publish(self, events: list[Event]) -> None:
        """Queues are fed directly on their own loop's thread, through call_soon_threadsafe elsewhere."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for queue, loop in list(self._subscribers):
            try:
                for event in events:
                    if loop is here:
                        queue.put_nowait(event)
                    else:
                        loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that loop is closed: nobody will read this queue again
                self.unsubscribe(queue)


def _namespace(res: Resource, namespace: str | None) -> str:
    """The stored namespace: "" for cluster-scoped resources, "default" when none is given."""
    return (namespace or "default") if res.namespaced else ""


def _checked_copy(res: Resource, obj: Any) -> dict:
    """A deep copy of a request body, with kind and apiVersion checked against the resource."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise bad_request("the request body must be a JSON object with an object 'metadata'")
    want = api_version(res)
    if obj.get("kind", res.kind) != res.kind or obj.get("apiVersion", want) != want:
        raise bad_request(
            f"the object ({obj.get('apiVersion')}, {obj.get('kind')}) does not match "
            f"the resource {res.plural} ({want}, {res.kind})"
        )
    obj = copy.deepcopy(obj)
    obj["kind"], obj["apiVersion"] = res.kind, want
    meta = obj.setdefault("metadata", {})
    if not res.namespaced:
        meta.pop("namespace", None)
    return obj


def _validate_name(res: Resource, name: str) -> None:
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise invalid(res.kind, name, "metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MESSAGE}')
