"""The one informer: a list+watch cache of one resource that calls handlers on every change.

Like client-go's reflector: list, then watch from the list's resourceVersion; a watch that ends is
resumed from the last event seen; a 410 Gone or a failed connection leads to a re-list (after a
short, growing backoff), and a re-list reports what vanished meanwhile as DELETED.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiohttp

from netplane.api.client import Client
from netplane.api.errors import ApiError

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
EventHandler = Callable[[str, dict, "dict | None"], Awaitable[None]]  # (type, obj, old)
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0


def key_of(obj: dict) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Informer:
    def __init__(
        self,
        client: Client,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ):
        self.client = client
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache: dict[Key, dict] = {}
        self.synced = asyncio.Event()
        self._handlers: list[EventHandler] = []

    def add_handler(self, fn: EventHandler) -> None:
        """``fn(event_type, obj, old)`` runs after the cache has the change; ``old`` is None if new."""
        self._handlers.append(fn)

    async def run(self) -> None:
        """Keeps the cache current until the task is cancelled."""
        backoff = MIN_BACKOFF
        while True:
            try:
                rv = await self._relist()
                backoff = MIN_BACKOFF
                while True:
                    rv = await self._watch(rv)
            except (ApiError, aiohttp.ClientError, OSError, ValueError) as e:
                log.info("informer %s: %r; re-listing in %.1fs", self.plural, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _relist(self) -> str:
        listed = await self.client.list(
            self.plural, self.namespace, self.label_selector, self.field_selector
        )
        previous = dict(self.cache)
        self.cache.clear()
        self.cache.update((key_of(obj), obj) for obj in listed["items"])
        for key, obj in self.cache.items():
            await self._notify("ADDED", obj, previous.get(key))
        for key in previous.keys() - self.cache.keys():
            await self._notify("DELETED", previous[key], previous[key])
        self.synced.set()
        return listed["metadata"]["resourceVersion"]

    async def _watch(self, rv: str) -> str:
        """Applies one watch's events; returns the resourceVersion to resume from."""
        timeout = random.randint(300, 600)  # spread the re-watches of many informers, as client-go does
        # with BOOKMARKs a healthy watch is never silent for long, so one that is has lost its
        # server (a dead host sends no FIN): the client gives up on it and fails over
        events = self.client.watch(
            self.plural, rv, self.namespace, self.label_selector, self.field_selector, timeout, allow_bookmarks=True
        )
        async for event in events:
            kind, obj = event["type"], event["object"]
            rv = obj["metadata"]["resourceVersion"]
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            key = key_of(obj)
            old = self.cache.pop(key, None) if kind == "DELETED" else self.cache.get(key)
            if kind != "DELETED":
                self.cache[key] = obj
            await self._notify(kind, obj, old)
        return rv

    async def _notify(self, kind: str, obj: dict, old: dict | None) -> None:
        for fn in self._handlers:
            try:
                await fn(kind, obj, old)
            except Exception:  # one faulty handler must not stop the cache or the others
                log.exception("informer %s: handler %r failed on %s", self.plural, fn, kind)


class Informers:
    """One informer per resource and selectors, shared by everyone who asks for it (client-go's
    SharedInformerFactory): one list+watch and one cache, however many handlers. Its owner runs
    them, once; handlers must not change the objects they are given."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._made: dict[tuple[str, str | None, str | None, str | None], Informer] = {}

    def get(self, plural: str, namespace: str | None = None, label_selector: str | None = None,
            field_selector: str | None = None) -> Informer:
        key = (plural, namespace, label_selector, field_selector)
        if key not in self._made:
            self._made[key] = Informer(self.client, *key)
        return self._made[key]

    def parts(self) -> dict[str, Callable[[], Awaitable]]:
        """Each informer's run, by a name that tells them apart (informer/pods/spec.nodeName=node-1)."""
        return {"/".join(["informer", *(k for k in key if k)]): informer.run for key, informer in self._made.items()}

    async def run(self) -> None:
        await asyncio.gather(*(informer.run() for informer in self._made.values()))
