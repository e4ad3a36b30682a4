"""netplane's plugins through their resident server and without it (netplane/cni/shim.py, server.py).

The plugins are run as a runtime runs them (the launchers in cni/, through the Runtime), in a
throw-away node namespace; the server is the one the launchers start for this checkout.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from netplane import names
from netplane.cni import server, shim
from netplane.cni.runtime import Runtime, plugin_dir
from netplane.kernel import links, netns
from tests.labtools import eventually
from tests.test_cni import GATEWAY, network, node, pod  # noqa: F401 - fixtures

ROOT = shim.checkout()
SOCKET = shim.socket_path(ROOT)
LOG = Path(f"{SOCKET}.log")


def server_pid() -> int | None:
    """The pid of this checkout's running server (the one holding the lock), if any."""
    try:
        pid = int(Path(f"{SOCKET}.lock").read_text().strip() or 0)
    except FileNotFoundError:
        return None
    return pid if pid and Path(f"/proc/{pid}").exists() and b"netplane.cni.server" in Path(
        f"/proc/{pid}/cmdline").read_bytes() else None


def listening() -> bool:
    probe = subprocess.run([shim.python(ROOT), "-c", f"import socket; socket.socket(socket.AF_UNIX).connect({SOCKET!r})"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def running_server() -> int:
    """The checkout's server, started as a plugin starts it, listening."""
    if not listening():
        shim.start_server(ROOT)
    eventually(listening, timeout=20)
    return eventually(server_pid)


@pytest.fixture
def runtime(node: str, tmp_path: Path) -> Runtime:  # noqa: F811 - the launchers, in the node
    return Runtime([plugin_dir()], str(tmp_path / "cache"), exec_netns=node)


def served(container_id: str) -> list[str]:
    """The server's log lines about one container."""
    return [line for line in LOG.read_text().splitlines() if f"container={container_id} " in line] if LOG.exists() else []


def test_commands_go_through_the_server_and_work_as_in_process(node, runtime, pod, tmp_path, running_server, monkeypatch):
    conf = network(tmp_path)
    through_server, in_process = pod(1), pod(2)
    via_server = asyncio.run(runtime.add(conf, through_server))
    asyncio.run(runtime.check(conf, through_server))
    monkeypatch.setenv(shim.SERVER_SWITCH, "off")
    alone = asyncio.run(runtime.add(conf, in_process))
    asyncio.run(runtime.check(conf, in_process))

    assert [line.split()[2] for line in served(through_server.container_id)] == ["ADD", "CHECK"]
    assert all("status=0" in line for line in served(through_server.container_id))
    assert served(in_process.container_id) == []
    for result in (via_server, alone):
        assert [i["name"] for i in result["interfaces"]][::2] == ["cni0", "eth0"]
        assert result["ips"][0]["gateway"] == GATEWAY
    with links.netlink(node) as ipr:
        ports = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                 if link.get_attr("IFLA_MASTER") == links.index(ipr, "cni0")]
    assert sorted(ports) == sorted(r["interfaces"][1]["name"] for r in (via_server, alone))

    monkeypatch.delenv(shim.SERVER_SWITCH)
    asyncio.run(runtime.delete(conf, in_process))  # what one path made, the other removes
    with links.netlink(in_process.netns_path) as ipr:
        assert links.get(ipr, "eth0") is None


def test_the_server_lives_in_no_lab_namespace(node, running_server):
    own = os.stat(f"/proc/{running_server}/ns/net").st_ino
    assert own not in {os.stat("/proc/self/ns/net").st_ino, netns.inode(node)}
    assert running_server not in netns.pids_in(netns.listed(names.NETNS_PREFIX))
    assert oct(os.stat(SOCKET).st_mode & 0o777) == "0o600"


def test_when_the_code_changes_the_server_steps_aside_and_the_command_still_works(
        node, runtime, pod, tmp_path, running_server):
    conf, att = network(tmp_path), pod(1)
    source = Path(server.__file__).with_name("bridge.py")
    os.utime(source)  # newer than what the running server loaded
    asyncio.run(runtime.add(conf, att))
    assert served(att.container_id) == []  # declined: run in-process
    eventually(lambda: not Path(f"/proc/{running_server}").exists(), timeout=20)
    asyncio.run(runtime.delete(conf, att))  # no server: in-process, and it starts a fresh one
    fresh = eventually(server_pid, timeout=20)
    assert fresh != running_server


def test_stop_all_ends_the_server_after_what_is_under_way(running_server):
    assert running_server in server.stop_all()
    eventually(lambda: not Path(f"/proc/{running_server}").exists(), timeout=20)
    assert not Path(SOCKET).exists()
