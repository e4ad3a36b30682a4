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


def apply_docs(lab: str, path: Path, docs: list[dict]) -> None:
    """Write the objects to path as one YAML stream and `netplane apply -f` it."""
    path.write_text(yaml.safe_dump_all(docs))
    cli(lab, "apply", "-f", str(path), check=True)


def service_manifest(directory: Path, name: str, **spec) -> str:
    """A Service of the demo app's web pods (port 80 -> their `http` port) written to a file; `spec` adds fields."""
    body = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}))
    return str(path)


def get(lab: str, kind: str, name: str | None = None) -> dict:
    out = cli(lab, "get", kind, *([name] if name else []), "-o", "json", check=True).stdout
    return json.loads(out)


def pod_ip(lab: str, pod: str) -> str:
    return get(lab, "pods", pod)["status"]["podIP"]


_containers: dict[tuple[str, str], tuple[int, str]] = {}  # (lab, pod) -> its container's pid and start time


def _started(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat), "" when it is gone: with the pid, it
    tells a container's process from a later one that got the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return ""


def in_pod(lab: str, pod: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run argv in a pod's default container as `netplane exec` runs it (the same nsenter command
    line), without a CLI process each time: the container's process is looked up once through the
    CLI and remembered while it lives. Tests of `netplane exec` itself call the CLI."""
    from netplane.api import objects
    from netplane.kernel import nsenter
    found = _containers.get((lab, pod))
    if found is None or _started(found[0]) != found[1]:
        obj = get(lab, "pods", pod)
        wanted = objects.default_container(obj)
        pid = objects.container_pid(next(s for s in obj["status"]["containerStatuses"] if s["name"] == wanted))
        found = _containers[(lab, pod)] = (pid, _started(pid))
    return subprocess.run(nsenter.command(found[0], list(argv)), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def on_host(lab: str, host: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run argv in `node/NAME`'s or `underlay/client`'s network namespace, as `netplane exec` runs
    it there (netns.command), without a CLI process each time."""
    from netplane import names
    from netplane.kernel import netns
    space = names.client_netns(lab) if host == "underlay/client" else names.node_netns(lab, host.split("/", 1)[1])
    return subprocess.run(netns.command(space, list(argv)), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def http(lab: str, pod: str, url: str, timeout: int = 3) -> subprocess.CompletedProcess:
    """curl from inside a pod."""
    return in_pod(lab, pod, "curl", "-sS", "-m", str(timeout), url)


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
    """A lab brought up from a lab file under a unique name (the default lab's 4 pods, or `pods`
    with the lab file's own; its cluster DNS's besides; every node of the file), and always brought down."""
    from netplane.lab import lifecycle, model
    name = unique_lab()
    lines: list[str] = []
    try:
        lab = model.load(path, name)
        summary = lifecycle.up(lab, lines.append)
        assert summary.pods == pods + (DNS_PODS if "dns" in lab.addons else 0) and summary.nodes == len(lab.nodes), lines
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


def official_client(lab: str):
    """The official Python client's ApiClient for the lab's kubeconfig."""
    from kubernetes import config
    from netplane.lab.state import LabState
    return config.new_client_from_config(config_file=str(LabState(lab).kubeconfig))


def nft_table(space: str, table: str = "ip kube-proxy") -> dict:
    """A table as the kernel holds it: each chain's rules and each set's declaration and elements,
    without handles or the order of objects, so that tables built in different ways compare."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{space}", "nft", "-j", "list", "table", *table.split()],
                         capture_output=True, text=True, check=True).stdout
    found: dict = {"chains": {}, "sets": {}}
    for item in json.loads(out)["nftables"]:
        if "rule" in item:
            found["chains"][item["rule"]["chain"]].append(json.dumps(item["rule"]["expr"], sort_keys=True))
        elif "chain" in item:
            hook = {k: v for k, v in item["chain"].items() if k in ("type", "hook", "prio", "policy")}
            found["chains"].setdefault(item["chain"]["name"], []).append(json.dumps(hook, sort_keys=True))
        elif "set" in item or "map" in item:
            obj = item.get("set") or item["map"]
            found["sets"][obj["name"]] = (obj.get("timeout"), json.dumps(obj.get("type")), obj.get("flags"),
                                          sorted(json.dumps(e, sort_keys=True) for e in obj.get("elem", [])))
    return found
