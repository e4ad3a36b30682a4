"""A level-triggered loop: informers only say "something changed"; the loop recomputes everything."""
from __future__ import annotations

import asyncio
import logging
import signal
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
        self._timer: asyncio.TimerHandle | None = None

    async def trigger(self, *_: object) -> None:
        """Usable directly as an informer handler."""
        self._wake.set()

    def wake_in(self, seconds: float) -> None:
        """Run again after ``seconds`` (a deadline, a back-off, a schedule), unless an earlier
        wake-up is already due."""
        running = asyncio.get_running_loop()
        due = running.time() + max(seconds, 0.0)
        if self._timer is not None and running.time() < self._timer.when() <= due:
            return  # an earlier wake-up is still pending
        if self._timer is not None:
            self._timer.cancel()
        self._timer = running.call_at(due, self._wake.set)

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


async def supervise(name: str, run: Callable[[], Awaitable]) -> None:
    """Keep a component running: one that ends or fails is logged and started again."""
    while True:
        try:
            await run()
            log.error("%s ended; starting it again", name)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            log.exception("%s was cancelled from within; starting it again", name)
        except Exception:  # noqa: BLE001 - logged; the lab keeps running
            log.exception("%s failed; starting it again", name)
        await asyncio.sleep(1.0)


async def until_stopped(parts: dict[str, Callable[[], Awaitable]]) -> None:
    """Supervise every part until SIGTERM or SIGINT, then cancel them all."""
    tasks = [asyncio.create_task(supervise(name, run), name=name) for name, run in parts.items()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log.info("running %d parts", len(tasks))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
