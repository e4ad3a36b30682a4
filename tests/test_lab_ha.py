"""A lab with a highly available control plane (controlPlane: {mode: hosts, replicas: 3, storage:
etcd}): three hosts cp-1..cp-3, each with an etcd member of one cluster and a `netplane server` on
it; the servers elect the one that runs the controllers. Killing the leader's host during a stream
of writes: another replica leads within the lease duration, every acknowledged write is kept, and
a Deployment scaled afterwards converges on the nodes. Killing one etcd member: writes go on.
"""
from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timezone

import pytest

from labtools import cli, default_lab_file, eventually, get, running_lab
from netplane import names
from netplane.api.client import Client
from netplane.kernel import links, netns
from netplane.lab.state import LabState

CP_IPS = ["172.30.0.3", "172.30.0.4", "172.30.0.5"]
LEASE_SECONDS = 15  # netplane server's default --leader-elect-lease-duration


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(default_lab_file(tmp_path_factory.mktemp("ha"), "nftables", controlPlane={
            "mode": "hosts", "replicas": 3, "storage": "etcd"})) as name:
        yield name


def commands_in(space: str) -> list[str]:
    return [open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode() for pid in netns.pids_in([space])]


def leader(lab: str) -> str:
    return cli(lab, "get", "lease", names.LEADER_LEASE, "-n", "kube-system", "-o",
               "jsonpath={.spec.holderIdentity}", check=True).stdout


def test_each_control_plane_host_runs_an_etcd_member_and_a_server(lab):
    for i, address in enumerate(CP_IPS, 1):
        commands = commands_in(names.control_plane_netns(lab, i))
        assert any(c.startswith("etcd ") and f"--name cp-{i} " in c for c in commands), commands
        assert any(" server " in c and f"--listen {address}:6443" in c and "etcd://172.30.0.3:2379," in c
                   for c in commands), commands
    assert endpoint_addresses(lab) == CP_IPS  # every server, for the `kubernetes` Service
    status = cli(lab, "status", check=True).stdout
    assert "controllers led by" in status and "netplane-controllers" in status
    members = [line.split() for line in members_shown(status)]
    assert [m[:3] for m in members] == [[f"cp-{i}", address, "ok"] for i, address in enumerate(CP_IPS, 1)], status
    assert sorted(m[3] for m in members) == ["follower", "follower", "leader"], status


def endpoint_addresses(lab: str) -> list[str]:
    """The API servers the `kubernetes` Service leads pods to."""
    return sorted(cli(lab, "get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints[*].addresses[0]}",
                      check=True).stdout.split())


def members_shown(status: str) -> list[str]:
    """The rows of `netplane status`'s control-plane table: host, address, API server, etcd."""
    lines = status.splitlines()
    start = lines.index("control plane:") + 2
    return lines[start:start + len(CP_IPS)]


def deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ha", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "ha"}},
                     "template": {"metadata": {"labels": {"app": "ha"}},
                                  "spec": {"containers": [{"name": "echo", "image": "netplane/echo"}]}}}}


def test_with_one_etcd_member_hung_writes_go_on(lab):
    """A member that stops answering (frozen, so the lab's keeper does not restart it): the other two
    are a quorum, and a write succeeds (after etcd's own election, if the frozen one led raft)."""
    state = LabState(lab)
    victim = next(i for i, address in enumerate(CP_IPS, 1) if f"https://{address}:6443" not in leader(lab))
    members = [pid for pid in netns.pids_in([names.control_plane_netns(lab, victim)])
               if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"etcd")]
    assert len(members) == 1

    async def write(name: str) -> dict:
        async with Client(*state.connection()) as api:
            return await api.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {
                "name": name, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})

    os.kill(members[0], signal.SIGSTOP)
    try:
        names_written = [f"during-{n}" for n in range(3)]
        for name in names_written:
            assert eventually(lambda name=name: asyncio.run(write(name)), timeout=40)["metadata"]["name"] == name
        assert open(f"/proc/{members[0]}/status").read().count("State:\tT") == 1  # still frozen meanwhile
    finally:
        os.kill(members[0], signal.SIGCONT)


def test_killing_the_leaders_host_keeps_every_write_and_another_replica_leads(lab):
    state = LabState(lab)
    old = eventually(lambda: leader(lab))
    dead = next(i for i, address in enumerate(CP_IPS, 1) if f"https://{address}:6443" in old)

    async def scenario() -> tuple[list[str], float]:
        async with Client(*state.connection()) as api:
            await api.create("deployments", deployment(1))
            acknowledged: list[str] = []

            async def writes() -> None:
                for n in range(300):
                    try:
                        await api.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {
                            "name": f"w{n}", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})
                        acknowledged.append(f"w{n}")
                    except Exception:  # noqa: BLE001 - an error of any kind: not acknowledged
                        pass
                    await asyncio.sleep(0.03)

            stream = asyncio.create_task(writes())
            await asyncio.sleep(1)
            space = names.control_plane_netns(lab, dead)
            await asyncio.to_thread(stop_host, space)
            killed = datetime.now(timezone.utc)
            await stream
            return acknowledged, killed

    acknowledged, killed = asyncio.run(scenario())
    new = eventually(lambda: (lambda who: who if who and who != old else None)(leader(lab)), timeout=LEASE_SECONDS + 15)
    assert f"https://{CP_IPS[dead - 1]}:6443" not in new
    acquired = cli(lab, "get", "lease", names.LEADER_LEASE, "-n", "kube-system", "-o",
                   "jsonpath={.spec.acquireTime}", check=True).stdout
    taken = datetime.strptime(acquired.strip(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) - killed
    assert taken.total_seconds() < LEASE_SECONDS + 5  # the lease runs out, then the next retry takes it

    names_stored = set(cli(lab, "get", "services", "-o", "jsonpath={.items[*].metadata.name}", check=True).stdout.split())
    assert set(acknowledged) <= names_stored and len(acknowledged) > 100
    # the dead server's lease runs out, and pods' `kubernetes` Service leads only to the live ones
    assert eventually(lambda: endpoint_addresses(lab) == [a for i, a in enumerate(CP_IPS, 1) if i != dead],
                      timeout=30)

    async def scale() -> None:
        async with Client(*state.connection()) as api:
            current = await api.get("deployments", "ha", "default")
            current["spec"]["replicas"] = 3
            await api.update("deployments", current)
    asyncio.run(scale())

    def running() -> bool:
        pods = [p for p in get(lab, "pods")["items"] if p["metadata"].get("labels", {}).get("app") == "ha"]
        return len(pods) == 3 and all(p.get("status", {}).get("phase") == "Running" for p in pods)
    eventually(running, timeout=90, interval=1)
    members = members_shown(cli(lab, "status", check=True).stdout)
    assert members[dead - 1].count("unreachable") == 2, members  # its API server and its etcd member
    alive = [m.split() for i, m in enumerate(members, 1) if i != dead]
    assert all(m[2] == "ok" for m in alive) and sorted(m[3] for m in alive) == ["follower", "leader"], members


def stop_host(space: str) -> None:
    """The host dies: its processes, then its link (so the lab's keeper restarts them into isolation)."""
    netns.kill_all_in([space])
    with links.netlink(space) as ipr:
        ipr.link("set", index=links.index(ipr, names.UNDERLAY_IF), state="down")
