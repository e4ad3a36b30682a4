"""Per-namespace sysctls. /proc/sys/net shows the namespace of the thread that opens a file, so
the values are written from a thread inside the namespace (netns.run_in)."""
from __future__ import annotations

from netplane.kernel import netns


def write(name: str, values: dict[str, str]) -> None:
    """Set sysctls (dotted keys, e.g. net.ipv4.ip_forward) inside the named namespace."""

    def work() -> None:
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)

    netns.run_in(name, work)


def read(name: str, key: str) -> str:
    def work() -> str:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()

    return netns.run_in(name, work)
