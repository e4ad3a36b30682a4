"""Programs run inside namespaces (through netns.command) from an event loop: one to its end, or one
left running with the pipes its caller needs (a pod's processes); and, from threads, several at once,
one per namespace, or one whose output is read line by line while it runs (`nft monitor`).
programs.py has the one-at-a-time forms that need no asyncio."""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from netplane.kernel import netns
from netplane.kernel.programs import DEVNULL, PIPE, Result, Stream, encoded, finished

K = TypeVar("K", bound=Hashable)
TIMEOUT = 5.0
Process = asyncio.subprocess.Process


async def run(space: str | None, argv: Sequence[str], stdin: str | bytes | None = None,
              env: Mapping[str, str] | None = None) -> Result:
    """Run one program in the namespace without blocking the event loop."""
    proc = await start(space, argv, stdin=PIPE if stdin is not None else DEVNULL, stdout=PIPE, stderr=PIPE, env=env)
    out, err = await proc.communicate(encoded(stdin))
    return finished(proc.returncode, out, err)


async def start(space: str | None, argv: Sequence[str], stdin: Stream = DEVNULL, stdout: Stream = DEVNULL,
                stderr: Stream = DEVNULL, env: Mapping[str, str] | None = None, session: bool = False) -> Process:
    """Start a program in the namespace; with session, in a session of its own (the signals of
    netplane's terminal do not reach it)."""
    return await asyncio.create_subprocess_exec(*netns.command(space, list(argv)), stdin=stdin, stdout=stdout,
                                                stderr=stderr, env=env, start_new_session=session)


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
