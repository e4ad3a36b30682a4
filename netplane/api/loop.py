"""A level-triggered loop: informers only say "something changed"; the loop recomputes everything."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from netplane.api.errors import ApiError

log = logging.getLogger(__name__)


class Reconciler:
    """Runs `reconcile` after every trigger, coalescing bursts; retries with backoff after a failure."""

    def __init__(self, name: str, reconcile: Callable[[], Awaitable[None]], resync: float | None = None) -> None:
        self.name = name
        self._reconcile = reconcile
        self._resync = resync
        self._wake = asyncio.Event()

    async def trigger(self, *_: object) -> None:
        """Usable directly as an informer handler."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._resync)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._reconcile()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                # a Conflict is the normal outcome of two writers; the next pass reads the new version
                level = logging.INFO if err.code == 409 else logging.WARNING
                log.log(level, "%s: %s; retrying in %.1fs", self.name, err, backoff)
            except Exception:  # noqa: BLE001 - a controller must keep running; the error is logged
                log.exception("%s: reconcile failed, retrying in %.1fs", self.name, backoff)
            else:
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            self._wake.set()
