"""The system's tools run inside namespaces (through netns.command): one from an event loop,
several at once, one per namespace, or one whose output is read line by line while it runs
(`nft monitor`)."""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from netplane.kernel import netns

K = TypeVar("K", bound=Hashable)
TIMEOUT = 5.0


@dataclass(frozen=True)
class Result:
    code: int  # -1: the program could not be started; negative: killed (after the timeout)
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


async def run(space: str | None, argv: Sequence[str], stdin: str | None = None) -> Result:
    """Run one program in the namespace without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *netns.command(space, list(argv)), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return Result(proc.returncode, out.decode(), err.decode())


def run_all(commands: Mapping[K, tuple[str | None, Sequence[str]]], stdin: Mapping[K, str] | None = None,
            timeout: float = TIMEOUT) -> dict[K, Result]:
    """Run each (namespace, argv) at once and wait for all; a program that outlives the timeout is
    killed and says so in its err."""
    stdin = stdin or {}
    running, results = {}, {}
    for key, (space, argv) in commands.items():
        try:
            running[key] = subprocess.Popen(netns.command(space, list(argv)), text=True, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE,
                                            stdin=subprocess.PIPE if key in stdin else subprocess.DEVNULL)
        except OSError as err:
            results[key] = Result(-1, "", str(err))
    for key, proc in running.items():
        try:
            out, err = proc.communicate(stdin.get(key), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"timed out: {err}"
        results[key] = Result(proc.returncode, out, err)
    return results


class Lines:
    """A program in a namespace whose standard output a thread reads into lines until it is stopped."""

    def __init__(self, space: str | None, argv: Sequence[str], name: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(netns.command(space, list(argv)), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name=name, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def printed(self, prefix: str) -> bool:
        with self._changed:
            return any(line.startswith(prefix) for line in self.lines)

    def wait_for(self, line: str, deadline: float) -> bool:
        """Whether the program printed ``line`` before the monotonic ``deadline`` (or its end)."""
        with self._changed:
            while line not in self.lines:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return line in self.lines
                self._changed.wait(left)
            return True

    def stop(self) -> str:
        """End the program; everything it printed, one line each."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=TIMEOUT)
        self.proc.stdout.close()
        with self._changed:
            return "\n".join(self.lines) + "\n"
