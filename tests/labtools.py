"""Helpers for tests that drive a whole lab: the real CLI, and requests from inside pods."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import yaml

from conftest import unique_lab

NETPLANE = str(Path(sys.executable).parent / "netplane")


def cli(lab: str, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `netplane` command for a lab."""
    return subprocess.run([NETPLANE, "--lab", lab, *args], capture_output=True, text=True, timeout=timeout,
                          check=check, stdin=subprocess.DEVNULL)


def get(lab: str, kind: str, name: str | None = None) -> dict:
    out = cli(lab, "get", kind, *([name] if name else []), "-o", "json", check=True).stdout
    return json.loads(out)


def pod_ip(lab: str, pod: str) -> str:
    return get(lab, "pods", pod)["status"]["podIP"]


def http(lab: str, pod: str, url: str, timeout: int = 3) -> subprocess.CompletedProcess:
    """curl from inside a pod's network namespace."""
    return cli(lab, "exec", pod, "--", "curl", "-sS", "-m", str(timeout), url)


def eventually(check: Callable[[], object], timeout: float = 15, interval: float = 0.1) -> object:
    """Wait for check() to return something truthy; the last value or error is in the failure."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # noqa: BLE001 - kept for the failure message
            last = err
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s; last: {last!r}")


async def eventually_async(check: Callable[[], object], timeout: float = 15, interval: float = 0.02) -> object:
    """eventually() on an event loop: check() may be a coroutine function; the loop runs meanwhile."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except Exception as err:  # noqa: BLE001 - kept for the failure message
            last = err
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s; last: {last!r}")


def default_lab_file(directory: Path, proxy_mode: str, backend: str = "nft", extra: tuple[dict, ...] = (),
                     network: dict | None = None, **fields: object) -> str:
    """The default lab, written as a lab file in the given proxy mode (and iptables backend), with
    the `extra` objects applied after the demo app, more `network` fields and top-level `fields`."""
    default = resources.files("netplane.lab")
    data = yaml.safe_load(default.joinpath("default.yaml").read_text())
    data["network"] |= {"proxyMode": proxy_mode, "iptablesBackend": backend} | (network or {})
    data |= fields
    data["manifests"] = [str(default.joinpath(m)) for m in data["manifests"]]
    if extra:
        more = directory / "extra.yaml"
        more.write_text(yaml.safe_dump_all(extra))
        data["manifests"].append(str(more))
    path = directory / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


DNS_PODS = 2  # the coredns replicas every lab has unless its lab file says `addons: []`


@contextmanager
def running_lab(path: str, pods: int = 4) -> Iterator[str]:
    """A lab brought up from a lab file under a unique name (the default lab's 2 nodes and its 4
    pods, or `pods` with the lab file's own; its cluster DNS's besides), and always brought down."""
    from netplane.lab import lifecycle, model
    name = unique_lab()
    lines: list[str] = []
    try:
        lab = model.load(path, name)
        summary = lifecycle.up(lab, lines.append)
        assert summary.pods == pods + (DNS_PODS if "dns" in lab.addons else 0) and summary.nodes == 2, lines
        yield name
    finally:
        if lifecycle.is_up(name):
            lifecycle.down(name)


@contextmanager
def bare_lab(**fields) -> Iterator[str]:
    """A lab of the given lab-file fields (no manifests: no demo app) under a unique name, always
    brought down."""
    from netplane.lab import lifecycle, model
    name = unique_lab()
    try:
        lifecycle.up(model.parse({"name": name, **fields}), lambda line: None)
        yield name
    finally:
        if lifecycle.is_up(name):
            lifecycle.down(name)


def kubectl(lab: str, *args: str, stdin: str | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """kubectl with the lab's kubeconfig (and ``env`` added to its environment); ``check``: it must succeed."""
    from netplane.lab.state import LabState
    result = subprocess.run(["kubectl", "--kubeconfig", str(LabState(lab).kubeconfig), *args], input=stdin,
                            capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result
