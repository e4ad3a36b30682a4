"""Running a command inside a running container, as `kubectl exec` and exec probes do: in all of
its process's namespaces (mount, UTS, IPC, network, PID), at its root and working directory, with
its environment."""
from __future__ import annotations


def environment(pid: int) -> dict[str, str]:
    """A process's environment as it was exec'd."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)


def command(pid: int, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """argv wrapped to run inside the process's container, with env (its own when None)."""
    env = environment(pid) if env is None else env
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
