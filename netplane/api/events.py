"""Events as components record them with client-go's recorder: ``record(obj, type, reason,
message)`` returns at once and the Event is written in the background, so it is never in the way of
the work it tells of (Recorder says how). A repeat (same object, type, reason, message and source) counts up on the
Event it repeats (``count``, ``lastTimestamp``), as upstream's correlator aggregates. A core/v1
Event is named ``<object>.<hex time>`` and lives in the object's namespace (``default`` for an
object without one, a Node's)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import aiohttp

from netplane.api.errors import ApiError
from netplane.api.times import time_text

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
REMEMBERED = 4096  # repeats are recognised among this many recent Events
FLUSH_DELAY = 1.5  # seconds from the first Event of a burst to its writing


def reference(obj: dict, field_path: str = "") -> dict:
    """The involvedObject of an Event about obj (``field_path``: a part of it, such as a container)."""
    meta = obj["metadata"]
    ref = {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""), "name": meta["name"],
           "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    if meta.get("resourceVersion"):
        ref["resourceVersion"] = meta["resourceVersion"]
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class Recorder:
    """Events from one component (``source.component``; ``host`` for a node's). They are written
    FLUSH_DELAY after the first of a burst was said, all of the burst at once and repeats within
    it counted together, so that in this one-process lab their writes wait until the work they tell
    of (a burst of pod starts) is done instead of competing with it."""

    def __init__(self, client, component: str, host: str = "") -> None:
        self.client, self.component, self.host = client, component, host
        self.seen: OrderedDict[tuple, tuple[str, str, int]] = OrderedDict()  # key -> (namespace, name, count)
        self.queued: OrderedDict[tuple, list] = OrderedDict()  # key -> [reference, count, first seen, last seen]
        self.writer: asyncio.Task | None = None

    def record(self, obj: dict, type_: str, reason: str, message: str, field_path: str = "") -> None:
        """Say it; written in the background."""
        ref, ts = reference(obj, field_path), time_text()
        key = (ref.get("uid"), ref.get("fieldPath"), type_, reason, message)
        if key in self.queued:
            self.queued[key][1] += 1
            self.queued[key][3] = ts
        else:
            self.queued[key] = [ref, 1, ts, ts]
        if self.writer is None or self.writer.done():
            self.writer = asyncio.get_running_loop().create_task(self._flush())

    async def flushed(self) -> None:
        """Until everything said so far is written."""
        while self.writer is not None and not self.writer.done():
            await asyncio.shield(self.writer)

    async def _flush(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        while self.queued:
            key, (ref, count, first, last) = self.queued.popitem(last=False)
            await self._write(key, ref, count, first, last)

    async def _write(self, key: tuple, ref: dict, count: int, first: str, last: str) -> None:
        _, _, type_, reason, message = key
        try:
            if key in self.seen:
                namespace, name, before = self.seen[key]
                self.seen.move_to_end(key)
                try:
                    await self.client.patch("events", name, {"count": before + count, "lastTimestamp": last},
                                            namespace)
                    self.seen[key] = (namespace, name, before + count)
                    return
                except ApiError as err:
                    if err.code != 404:  # expired meanwhile: made again below
                        raise
            namespace = ref.get("namespace") or "default"
            name = f"{ref['name'][:236]}.{time.time_ns():x}"
            await self.client.create("events", {
                "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
                "involvedObject": ref, "reason": reason, "message": message, "type": type_,
                "count": count, "firstTimestamp": first, "lastTimestamp": last,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "reportingComponent": self.component, "reportingInstance": self.host or self.component})
            self.seen[key] = (namespace, name, count)
            while len(self.seen) > REMEMBERED:
                self.seen.popitem(last=False)
        except (ApiError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
            # an Event that cannot be written is dropped, as upstream's recorder drops it
            log.debug("event %s %s about %s not written: %r", type_, reason, ref.get("name"), err)
