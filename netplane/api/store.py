"""Object storage for the embedded API server: the rules of objects, over a storage backend.

Every write runs under one lock, reads what it needs and commits its changes as one batch to the
backend (backends.py: SQLite, one global resourceVersion and an event log; etcd.py: etcd), which
gives each change its resourceVersion, checks that nothing moved meanwhile, and keeps about
``log_size`` events (watching from before them is ``Gone``, as with etcd's compaction). The backend
hands the events to ``_publish``, which feeds every subscriber queue, each on its own event loop.
No SQL here: what needs the storage goes through the backend's get/list/commit/events_since.

The rules of an object's life (system fields, generation, graceful deletion, finalizers, the Scale
view) are pure functions in writes.py; this module only runs them under its lock and stores
the result, so that another storage backend can run the same rules. ``dry_run`` runs everything up
to the commit and returns what would have been stored.
"""
from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from netplane.api import conversion, writes, managed, schema, validation
from netplane.api.backends import ADDED, DELETED, MODIFIED, Backend, Event, Publish, SqliteBackend, Stale
from netplane.api.errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from netplane.api.writes import DeleteOptions, clone
from netplane.api.resources import RESOURCES, Resource, api_version, by_plural
from netplane.api.times import time_text

Admit = Callable[[str, str, dict, "dict | None", "Store"], "dict | None"]
Change = Callable[[dict], dict]  # a patch: the object (or its Scale) in, the patched one out

DEFAULT_NAMESPACES = ("default", "kube-system")
_GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no look-alikes

def open_backend(target: str, log_size: int, publish: Publish) -> Backend:
    """The backend a URL names: ``etcd://host:port[,host:port...][/prefix]``, or ``sqlite:///path``
    or a plain path (SQLite)."""
    if target.startswith("etcd://"):
        from netplane.api.etcd import EtcdBackend  # only etcd users pay for it

        url = urlsplit(target)
        endpoints = [e for e in url.netloc.split(",") if e]
        return EtcdBackend(endpoints, url.path or "/registry", log_size, publish)
    if target.startswith("sqlite://"):
        target = target[len("sqlite://"):]
    return SqliteBackend(target, log_size, publish)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """Kubernetes objects in a storage backend; safe to call from several threads.

    ``path``: a SQLite file (or ``sqlite:///path``), or ``etcd://host:port[,host:port...][/prefix]``.
    """

    def __init__(self, path: str, admit: Admit | None = None, log_size: int = 10_000):
        self._lock = threading.RLock()  # re-entrant: the admission hook may read the store
        self._admit = admit
        self._subscribers: list[Subscription] = []
        self._backend = open_backend(path, log_size, self._publish)
        if self._backend.fresh:
            for ns in DEFAULT_NAMESPACES:
                try:
                    self.create("namespaces", {"metadata": {"name": ns}})
                except ApiError as e:  # another API server on the same etcd was first
                    if e.code != 409:
                        raise

    def close(self) -> None:
        self._backend.close()

    @property
    def resource_version(self) -> int:
        return self._backend.revision()

    # -- reads

    def get(self, plural: str, namespace: str | None, name: str) -> dict:
        res = by_plural(plural)
        with self._lock:
            obj = self._load(plural, _namespace(res, namespace), name)
        if obj is None:
            raise not_found(plural, name, res.group)
        return obj

    def list(
        self, plural: str, namespace: str | None = None, resource_version: int | None = None
    ) -> tuple[list[dict], int]:
        """All objects of a resource (in one namespace, or all), sorted by namespace and name, and the
        rv they are current at: now, or as they were at ``resource_version`` (``Gone`` if compacted)."""
        res = by_plural(plural)
        return self._backend.list(plural, namespace if res.namespaced else None, resource_version)

    def events_since(self, rv: int) -> list[Event]:
        """Every event after ``rv``, oldest first; ``Gone`` when the log no longer has them all."""
        # not under self._lock: etcd's log may wait for its watch thread, which publishes
        return self._backend.events_since(rv)

    # -- writes

    def create(self, plural: str, obj: dict, dry_run: bool = False, manager: str | None = None) -> dict:
        """``manager``: the field manager the new object's fields are recorded for (managedFields)."""
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
            validation.check(res, obj)
            if self._load(plural, ns, meta["name"]) is not None:
                raise already_exists(plural, meta["name"], res.group)
            writes.prepare_create(res, obj, _now())
            validation.generated_selector(res, obj)
            obj = self._admitted("create", plural, obj, None)
            self._track(res, None, obj, manager, None)
            if dry_run:
                return clone(obj)
            return clone(self._commit([(ADDED, plural, obj)])[0][3])

    def update(self, plural: str, obj: dict, subresource: str | None = None, dry_run: bool = False,
               manager: str | None = None) -> dict:
        """Replaces an object; the main resource keeps the stored status, ``status`` keeps the rest,
        ``scale`` takes an autoscaling/v1 Scale and changes only ``spec.replicas``."""
        res = by_plural(plural)
        _check_subresource(res, subresource)
        if subresource == "scale":
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(meta, dict) or not meta.get("name"):
                raise bad_request("the request body must be an autoscaling/v1 Scale with metadata.name")
            with self._lock:
                old = self._existing(res, meta.get("namespace"), meta["name"])
                return self._replace(res, old, writes.apply_scale(res, old, obj), None, dry_run, manager, "scale")
        new = _checked_copy(res, obj)
        meta = new["metadata"]
        ns, name = _namespace(res, meta.get("namespace")), meta.get("name")
        if not name:
            raise invalid(res.kind, "", "metadata.name", "Required value: name is required")
        with self._lock:
            return self._replace(res, self._existing(res, ns, name), new, subresource, dry_run, manager)

    def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        change: Change,
        subresource: str | None = None,
        dry_run: bool = False,
        manager: str | None = None,
    ) -> dict:
        """Applies ``change`` to the stored object (or to its Scale) and stores the result as an
        update would, atomically; a resourceVersion the change leaves behind must be current."""
        res = by_plural(plural)
        _check_subresource(res, subresource)
        with self._lock:
            old = self._existing(res, namespace, name)
            if subresource == "scale":
                new = writes.apply_scale(res, old, change(writes.scale_of(old)))
                return self._replace(res, old, new, None, dry_run, manager, "scale")
            new = _checked_copy(res, change(clone(old)))
            for key in ("name", "namespace"):
                if new["metadata"].get(key) != old["metadata"].get(key):
                    raise bad_request(f"a patch cannot change metadata.{key} "
                                      f"({old['metadata'].get(key)} -> {new['metadata'].get(key)})")
            return self._replace(res, old, new, subresource, dry_run, manager)

    def apply(self, plural: str, namespace: str | None, name: str, config: Any, manager: str, force: bool = False,
              dry_run: bool = False) -> tuple[dict, bool]:
        """Server-side apply of ``config`` by ``manager`` (managed.py): the object, and whether it was
        created by it. A field another manager owns with another value is a 409 unless ``force``."""
        res = by_plural(plural)
        config = _checked_copy(res, config)
        meta = config["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if meta.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = _namespace(res, namespace)
        who = managed.Manager(manager, "Apply", api_version(res))
        with self._lock:
            live = self._load(plural, _namespace(res, namespace), name)
            merged = managed.apply(live, config, schema.for_kind(res.kind), who, force, time_text(_now()))
            if live is None:
                return self.create(plural, merged, dry_run), True
            return self._replace(res, live, merged, None, dry_run), False

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        options: DeleteOptions | None = None,
        dry_run: bool = False,
    ) -> dict:
        """Deletes an object and returns it; a Namespace takes the objects inside it along.

        A pod bound to a node, given a grace period, and an object with finalizers are only marked
        (``deletionTimestamp``) and returned: the kubelet, or whoever owns the finalizers, removes
        them later (a delete with grace 0, an update that empties the finalizers)."""
        res = by_plural(plural)
        options = options or DeleteOptions()
        with self._lock:
            old = self._existing(res, namespace, name)
            writes.check_preconditions(res, old, options.preconditions)
            action, obj = writes.plan_delete(res, old, options, _now())
            changes = self._orphaned(old) if options.propagation_policy == "Orphan" else []
            if action == "update":
                changes.append((MODIFIED, plural, obj))
            elif action == "remove":
                changes += self._removal(plural, obj)
            if dry_run or not changes:
                return clone(obj)
            events = self._commit(changes)
            return clone(events[-1][3] if action != "none" else obj)

    # -- subscribers

    def subscribe(self, wanted: Callable[[str, dict], bool] | None = None) -> Subscription:
        """A feed, on the running loop, of every committed Event whose (plural, obj) is wanted."""
        subscription = Subscription(asyncio.get_running_loop(), wanted)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not subscription]

    # -- internals

    def _load(self, plural: str, namespace: str, name: str) -> dict | None:
        return self._backend.get(plural, namespace, name)

    def _in_namespace(self, namespace: str) -> list[tuple[str, dict]]:
        """(plural, object) of everything in a namespace, by plural, then name."""
        plurals = sorted(r.plural for r in RESOURCES if r.namespaced)
        return [(p, o) for p in plurals for o in self._backend.list(p, namespace)[0]]

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

    def _existing(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self._load(res.plural, _namespace(res, namespace), name)
        if obj is None:
            raise not_found(res.plural, name, res.group)
        return obj

    def _replace(self, res: Resource, old: dict, new: dict, subresource: str | None, dry_run: bool,
                 manager: str | None = None, tracked_as: str | None = None) -> dict:
        """The update path shared by PUT, PATCH and apply: rv check, admission, generation, managed
        fields, and the removal of a deleting object whose last finalizer went. ``tracked_as``: the
        subresource the write is recorded for when it is not ``subresource`` (a Scale's)."""
        current = old["metadata"]["resourceVersion"]
        if new["metadata"].get("resourceVersion") not in (None, "", current):
            raise conflict(res.plural, old["metadata"]["name"], res.group)
        new = writes.prepare_update(res, new, old, subresource)
        if subresource in (None, writes.EPHEMERAL):
            validation.check(res, new, old)
        new = self._admitted("update/status" if subresource else "update", res.plural, new, old)
        writes.after_admission(old, new)
        self._track(res, old, new, manager, tracked_as or subresource)
        new["metadata"]["resourceVersion"] = current
        if new == old:  # a no-op write keeps its rv and sends no event, as the apiserver does
            return old
        changes = self._removal(res.plural, new) if writes.finished_deleting(new) else [(MODIFIED, res.plural, new)]
        if dry_run:
            return clone(new)
        return clone(self._commit(changes)[-1][3])

    @staticmethod
    def _track(res: Resource, old: dict | None, new: dict, manager: str | None, subresource: str | None) -> None:
        """Record what a write by manager changed in new's managedFields; a write without a manager
        (the store's own callers) leaves them as they were."""
        meta = new["metadata"]
        if manager is None:
            if old is not None and "managedFields" not in meta and old["metadata"].get("managedFields"):
                meta["managedFields"] = old["metadata"]["managedFields"]
            return
        who = managed.Manager(manager, "Update", api_version(res), subresource or "")
        fields = managed.track(old, new, schema.for_kind(res.kind), who, time_text(_now()))
        if fields:
            meta["managedFields"] = fields
        else:
            meta.pop("managedFields", None)

    def _removal(self, plural: str, obj: dict) -> list[tuple[str, str, dict]]:
        """The changes that remove an object: a Namespace takes what is inside it along."""
        changes = []
        if plural == "namespaces":
            changes = [(DELETED, p, o) for p, o in self._in_namespace(obj["metadata"]["name"])]
        return changes + [(DELETED, plural, obj)]

    def _orphaned(self, owner: dict) -> list[tuple[str, str, dict]]:
        """propagationPolicy=Orphan: the owner's dependents lose their reference to it."""
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace")
        changes = []
        for plural, obj in self._in_namespace(namespace) if namespace else []:
            freed = writes.orphaned(obj, uid)
            if freed is not None:
                changes.append((MODIFIED, plural, freed))
        return changes

    def _commit(self, changes: list[tuple[str, str, dict]]) -> list[Event]:
        """Writes the changes as one batch, each given its rv; the backend publishes their events.

        Each change carries its precondition (ADDED: not there yet; MODIFIED, DELETED: still at the
        object's resourceVersion), which only another API server on the same etcd can break while
        we hold the lock: then it is AlreadyExists or Conflict, and the client retries."""
        try:
            return self._backend.commit(changes)
        except Stale as e:
            type_, plural, obj = changes[e.index]
            error = already_exists if type_ == ADDED else conflict
            raise error(plural, obj["metadata"]["name"], by_plural(plural).group) from None

    def _publish(self, events: list[Event]) -> None:
        """Subscriptions are fed directly on their own loop's thread, through call_soon_threadsafe elsewhere."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for subscription in list(self._subscribers):
            try:
                if subscription.loop is here:
                    subscription.offer(events)
                else:
                    subscription.loop.call_soon_threadsafe(subscription.offer, events)
            except RuntimeError:  # that loop is closed: nobody will read this queue again
                self.unsubscribe(subscription)


class Subscription:
    """One watcher's feed: the events it wants, queued on its loop, and `progress`, the newest
    resourceVersion offered to it: every wanted event up to it is in the queue or was taken from it.
    Events it does not want never wake it (with a watch per node, most events are some other's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wanted: Callable[[str, dict], bool] | None) -> None:
        self.loop, self.wanted = loop, wanted
        self.queue: asyncio.Queue = asyncio.Queue()
        self.progress = 0

    def offer(self, events: list[Event]) -> None:
        for event in events:
            if self.wanted is None or self.wanted(event[2], event[3]):
                self.queue.put_nowait(event)
        if events:
            self.progress = max(self.progress, events[-1][0])


def _namespace(res: Resource, namespace: str | None) -> str:
    """The stored namespace: "" for cluster-scoped resources, "default" when none is given."""
    return (namespace or "default") if res.namespaced else ""


def _check_subresource(res: Resource, subresource: str | None) -> None:
    error = writes.error_for_subresource(res, subresource)
    if error is not None:
        raise error


def _checked_copy(res: Resource, obj: Any) -> dict:
    """A deep copy of a request body, with kind and apiVersion checked against the resource, decoded
    as the internal type holds it (conversion.py)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise bad_request("the request body must be a JSON object with an object 'metadata'")
    want = api_version(res)
    if obj.get("kind", res.kind) != res.kind or obj.get("apiVersion", want) != want:
        raise bad_request(
            f"the object ({obj.get('apiVersion')}, {obj.get('kind')}) does not match "
            f"the resource {res.plural} ({want}, {res.kind})"
        )
    obj = clone(obj)
    obj["kind"], obj["apiVersion"] = res.kind, want
    meta = obj.setdefault("metadata", {})
    if not res.namespaced:
        meta.pop("namespace", None)
    conversion.decode(res, obj)
    return obj
