"""Per-namespace sysctls. /proc/sys/net shows the namespace of the process that opens it, so the
values are written by a short-lived forked child that has entered the namespace (never a thread)."""
from __future__ import annotations

import ctypes
import os

from netplane.kernel import netns

CLONE_NEWNET = 0x40000000


def _enter(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns.path(name), os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns into {name} failed")
    os.close(fd)


def write(name: str, values: dict[str, str]) -> None:
    """Set sysctls (dotted keys, e.g. net.ipv4.ip_forward) inside the named namespace."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: enter, write, report, exit without running any Python cleanup
        os.close(read_fd)
        try:
            _enter(name)
            for key, value in values.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(value)
            os.write(write_fd, b"ok")
        except BaseException as err:  # noqa: BLE001 - the parent raises it
            os.write(write_fd, str(err).encode()[:4000])
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    if answer != "ok":
        raise OSError(f"sysctl in {name}: {answer}")
