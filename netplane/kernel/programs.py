"""One program at a time, without asyncio (a CNI plugin process imports only this): run inside a
namespace with its stdin and environment and waited for, or a daemon left running in a session of its
own (etcd, the control plane), or the program this process becomes. commands.py runs them from an event loop and several at once."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, NoReturn, Union

from netplane.kernel import netns

PIPE, DEVNULL = subprocess.PIPE, subprocess.DEVNULL
Stream = Union[int, IO]  # PIPE, DEVNULL, an open file or a descriptor
Daemon = subprocess.Popen


@dataclass(frozen=True)
class Result:
    code: int  # -1: the program could not be started; negative: killed (after the timeout)
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def finished(code: int, out: bytes, err: bytes) -> Result:
    return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))


def encoded(stdin: str | bytes | None) -> bytes | None:
    return stdin.encode() if isinstance(stdin, str) else stdin


def run_now(space: str | None, argv: Sequence[str], stdin: str | bytes | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None) -> Result:
    """Run one program in the namespace and wait for it (from code that has no event loop); one that
    outlives the timeout is killed and says so in its err."""
    try:
        done = subprocess.run(netns.command(space, list(argv)), input=encoded(stdin), capture_output=True,
                              env=env, timeout=timeout, stdin=None if stdin is not None else DEVNULL)
    except subprocess.TimeoutExpired:
        return Result(-9, "", f"timed out after {timeout:.0f} s")
    except OSError as err:
        return Result(-1, "", str(err))
    return finished(done.returncode, done.stdout, done.stderr)


def start_daemon(argv: Sequence[str], log: Stream = DEVNULL) -> Daemon:
    """Start a long-lived program in a session of its own, its output to the log."""
    return subprocess.Popen(list(argv), stdin=DEVNULL, stdout=log, stderr=log, start_new_session=True)


def become(argv: Sequence[str]) -> NoReturn:
    """Replace this process with the program: its output and exit code are then the program's."""
    os.execvp(argv[0], list(argv))
