"""Container logs: the launcher's log copier writing CRI log files (a real forked copier and real
pipes), and the kubelet's reading of them with the PodLogOptions."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from netplane.agent import containers, launcher, logs
from netplane.api.podlog import LogOptionError, LogOptions


def copier(path: str, max_bytes: int = launcher.LOG_MAX_BYTES) -> tuple[int, int, int]:
    """A copier forked as the launcher forks one: (its pid, the stdout and stderr write ends)."""
    request = {"log": path, "attach": f"netplane-test/{os.getpid()}/{path}"}
    ends = launcher._stdio(request)
    pid = os.fork()
    if pid == 0:
        for fd in ends.container:
            os.close(fd)
        launcher.LOG_MAX_BYTES = max_bytes
        launcher._copy_logs(request, ends)
    for fd in ends.copier:
        os.close(fd)
    _, out_w, err_w = ends.stdio
    return pid, out_w, err_w


def read_all(path, options: LogOptions, running=lambda: False) -> bytes:
    said = []

    async def write(data: bytes) -> None:
        said.append(data)

    asyncio.run(logs.read(path, options, write, running))
    return b"".join(said)


def test_the_copier_writes_cri_records_with_partial_lines_and_the_reader_joins_them(tmp_path):
    path = tmp_path / "0.log"
    pid, out, err = copier(str(path))
    os.write(out, b"one\ntw")
    os.write(err, b"problem\n")
    time.sleep(0.05)
    os.write(out, b"o\n" + b"x" * (launcher.LINE_MAX + 5) + b"\nno newline at the end")
    os.close(out)
    os.close(err)
    assert os.waitpid(pid, 0)[1] == 0
    found, rest = logs.records(path.read_bytes())
    assert rest == b""
    assert [(r.stream, r.partial, r.text[:5]) for r in found] == [
        (b"stdout", False, b"one"), (b"stderr", False, b"probl"), (b"stdout", False, b"two"),
        (b"stdout", True, b"xxxxx"), (b"stdout", False, b"xxxxx"), (b"stdout", True, b"no ne")]
    assert all(r.time.endswith(b"Z") and len(r.time.split(b".")[1]) == 10 for r in found)
    text = read_all(path, LogOptions())
    assert text == b"one\nproblem\ntwo\n" + b"x" * (launcher.LINE_MAX + 5) + b"\nno newline at the end"
    assert read_all(path, LogOptions(tail_lines=3)) == b"x" * (launcher.LINE_MAX + 5) + b"\nno newline at the end"
    assert read_all(path, LogOptions(tail_lines=2)) == b"xxxxx\nno newline at the end"  # records, as the kubelet counts
    assert read_all(path, LogOptions(tail_lines=0)) == b""
    assert read_all(path, LogOptions(limit_bytes=6)) == b"one\npr"


def test_the_copier_rotates_and_keeps_five_files_and_a_follower_reads_across_a_rotation(tmp_path):
    path = tmp_path / "0.log"
    pid, out, err = copier(str(path), max_bytes=2000)
    got: list[bytes] = []

    async def follow() -> None:
        async def write(data: bytes) -> None:
            got.append(data)

        reader = asyncio.create_task(logs.read(path, LogOptions(follow=True), write, lambda: not ended(pid)))
        for i in range(400):
            os.write(out, b"line %d\n" % i)
            if i % 50 == 0:
                await asyncio.sleep(0.3)  # the follower catches up between bursts
        os.close(out)
        os.close(err)
        await asyncio.wait_for(reader, 10)

    path.touch()
    asyncio.run(follow())
    assert ended(pid, wait=True)
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "0.log")
    assert len(rotated) == launcher.LOG_MAX_FILES - 1 and all(n.startswith("0.log.") for n in rotated)
    lines = b"".join(got).splitlines()
    assert lines[0] == b"line 0" and lines[-1] == b"line 399"


REAPED: set[int] = set()


def ended(pid: int, wait: bool = False) -> bool:
    """Whether the child has ended (reaped once, remembered)."""
    if pid not in REAPED and os.waitpid(pid, 0 if wait else os.WNOHANG)[0] == pid:
        REAPED.add(pid)
    return pid in REAPED


def test_the_run_a_request_means_and_the_words_when_there_is_none():
    ended = {"terminated": {"exitCode": 1}}
    running = {"state": {"running": {}}, "lastState": ended}
    assert logs.chosen_run(running, [0, 1], False, "c", "p") == 1
    assert logs.chosen_run(running, [0, 1], True, "c", "p") == 0
    backing_off = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": ended}
    assert logs.chosen_run(backing_off, [0, 1], False, "c", "p") == 1
    assert logs.chosen_run(backing_off, [0, 1], True, "c", "p") == 1
    with pytest.raises(containers.Unavailable, match='previous terminated container "c" in pod "p" not found'):
        logs.chosen_run({"state": {"running": {}}}, [0], True, "c", "p")
    with pytest.raises(containers.Unavailable, match="is waiting to start: trying and failing to pull image"):
        logs.chosen_run({"state": {"waiting": {"reason": "ImagePullBackOff"}}}, [], False, "c", "p")


def test_log_options_are_checked_as_upstream_checks_them():
    assert LogOptions.from_query({"sinceSeconds": "10"}, clock=lambda: 100.0).since == 90.0
    assert LogOptions.from_query({"tailLines": "0", "follow": "true"}) == LogOptions(follow=True, tail_lines=0)
    for query, words in [({"sinceSeconds": "1", "sinceTime": "2026-01-01T00:00:00Z"}, "at most one of"),
                         ({"tailLines": "-1"}, "tailLines: Invalid value: -1: must be greater than or equal to 0"),
                         ({"limitBytes": "0"}, "limitBytes: Invalid value: 0: must be greater than 0"),
                         ({"sinceTime": "yesterday"}, "sinceTime: Invalid value")]:
        with pytest.raises(LogOptionError, match=words):
            LogOptions.from_query(query)
