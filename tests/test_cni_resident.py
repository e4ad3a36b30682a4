"""netplane's plugins through their resident server and without it (cni/netplane-plugin, netplane/cni/resident.py).

The plugins are run as a runtime runs them (the launchers in cni/, through the Runtime), in a
throw-away node namespace; the server is the one the launchers start for this checkout.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netplane import names
from netplane.cni import resident as server
from netplane.cni.runtime import Runtime, plugin_dir
from netplane.kernel import links, netns
from tests.labtools import eventually
from tests.test_cni import GATEWAY, network, node, pod  # noqa: F401 - fixtures

SERVER_SWITCH = "NETPLANE_CNI_SERVER"
LOG = server.LOG


def listening() -> bool:
    probe = socket.socket(socket.AF_UNIX)
    with probe:
        return probe.connect_ex(str(server.SOCKET)) == 0


@pytest.fixture
def running_server() -> int:
    """The checkout's server, started as the plugins start it, listening."""
    if not listening():
        subprocess.run(["setsid", "-f", sys.executable, "-m", "netplane.cni.resident"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    eventually(listening, timeout=20)
    return eventually(server.running)


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
    monkeypatch.setenv(SERVER_SWITCH, "off")
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

    monkeypatch.delenv(SERVER_SWITCH)
    asyncio.run(runtime.delete(conf, in_process))  # what one path made, the other removes
    with links.netlink(in_process.netns_path) as ipr:
        assert links.get(ipr, "eth0") is None


def test_the_server_lives_in_no_lab_namespace(node, running_server):
    own = os.stat(f"/proc/{running_server}/ns/net").st_ino
    assert own not in {os.stat("/proc/self/ns/net").st_ino, netns.inode(node)}
    assert running_server not in netns.pids_in(netns.listed(names.NETNS_PREFIX))
    assert oct(os.stat(server.SOCKET).st_mode & 0o777) == "0o600"


def test_when_the_code_changes_the_server_steps_aside_and_the_command_still_works(
        node, runtime, pod, tmp_path, running_server):
    conf, att = network(tmp_path), pod(1)
    source = Path(server.__file__).with_name("bridge.py")
    os.utime(source)  # newer than what the running server loaded
    asyncio.run(runtime.add(conf, att))
    assert served(att.container_id) == []  # declined: run in-process
    eventually(lambda: not Path(f"/proc/{running_server}").exists(), timeout=20)
    asyncio.run(runtime.delete(conf, att))  # no server: in-process, and it starts a fresh one
    fresh = eventually(server.running, timeout=20)
    assert fresh != running_server


def test_stop_ends_the_server_and_the_next_command_starts_one(node, runtime, pod, tmp_path, running_server):
    assert server.stop() == running_server
    eventually(lambda: not Path(f"/proc/{running_server}").exists(), timeout=20)
    assert not server.SOCKET.exists() and server.running() is None
    conf, att = network(tmp_path), pod(1)
    asyncio.run(runtime.add(conf, att))  # in-process, starting a server
    assert eventually(server.running, timeout=20) != running_server
