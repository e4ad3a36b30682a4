"""Container logs read as the kubelet reads them for ``kubectl logs``: from the CRI log files the
launcher's copiers write (``<time> stdout|stderr F|P <text>``, launcher.py), one per run of a
container, ``<n>.log`` for its n-th restart, the current and the previous run kept.

The options are the PodLogOptions (netplane.api.podlog.LogOptions): ``tailLines`` (the last lines
of the run), ``sinceSeconds`` or ``sinceTime`` (what was written from then on), ``timestamps``
(each record's time before it), ``limitBytes`` (at most that much), ``follow`` (then what is
written next, until the container's run ends)."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from netplane.agent.containers import Unavailable
from netplane.api.podlog import LogOptions, epoch

FOLLOW_POLL = 0.2  # seconds between looks at a followed file


WAITING_WORDS = {"ErrImagePull": "image can't be pulled", "ImagePullBackOff": "trying and failing to pull image"}


def chosen_run(status: dict, runs: list[int], previous: bool, container: str, pod: str) -> int:
    """Which run's log a request means, as the kubelet chooses the container: previous is the last
    one that ended (lastState); else the running or ended one, or while it waits to start again,
    the one that ended last. ``runs`` are the runs with a log file, in order."""
    state, ended_before = status.get("state") or {}, (status.get("lastState") or {}).get("terminated")
    if previous:
        if ended_before is None or not runs:
            raise Unavailable(f'previous terminated container "{container}" in pod "{pod}" not found')
        return runs[-1] if "waiting" in state or len(runs) < 2 else runs[-2]
    if runs and ("running" in state or "terminated" in state or ended_before is not None):
        return runs[-1]
    reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
    raise Unavailable(f'container "{container}" in pod "{pod}" is waiting to start: '
                         f'{WAITING_WORDS.get(reason, reason)}')


@dataclass(frozen=True)
class Record:
    time: bytes
    stream: bytes
    partial: bool
    text: bytes

    def output(self, timestamps: bool) -> bytes:
        line = self.text if self.partial else self.text + b"\n"
        return self.time + b" " + line if timestamps else line


def parse(line: bytes) -> Record | None:
    """One record of a CRI log file (its newline taken off); None for one that is not."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    return Record(parts[0], parts[1], parts[2] == b"P", parts[3] if len(parts) == 4 else b"")


def records(data: bytes) -> tuple[list[Record], bytes]:
    """The whole records in data and what is left of a record not yet whole."""
    lines = data.split(b"\n")
    rest = lines.pop()
    return [r for r in map(parse, lines) if r is not None], rest


def tail(found: list[Record], lines: int) -> list[Record]:
    """The last ``lines`` records (the kubelet counts a file's records: a long line's parts count each)."""
    return found[-lines:] if lines else []


class Limit:
    """What is left of limitBytes."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def cut(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[:self.left]
        self.left -= len(data)
        return data

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


async def read(path: Path, options: LogOptions, write: Callable[[bytes], Awaitable[None]],
               running: Callable[[], bool]) -> None:
    """Write the run's log (path) as the options ask; with follow, what comes next too, until the
    run ends (``running()`` is false) and nothing more is written."""
    limit = Limit(options.limit_bytes)

    def chosen(found: list[Record]) -> bytes:
        if options.since is not None:
            found = [r for r in found if epoch(r.time.decode()) >= options.since]
        return limit.cut(b"".join(r.output(options.timestamps) for r in found))

    f = open(path, "rb")
    try:
        found, rest = records(f.read())
        if options.tail_lines is not None:
            found = tail(found, options.tail_lines)
        data = chosen(found)
        if data:
            await write(data)
        ended = False
        while options.follow and not limit.spent:
            more = f.read()
            try:
                rotated = os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                return
            if rotated:  # what was written before the move, then the new file
                more += f.read()
                f.close()
                f = open(path, "rb")
            if more:
                found, rest = records(rest + more)
                data = chosen(found)
                if data:
                    await write(data)
                continue
            if ended:
                return
            ended = not running()  # one more look after the run has ended, for its last words
            if not ended:
                await asyncio.sleep(FOLLOW_POLL)
    finally:
        f.close()
