"""Two `netplane server` processes on one etcd: one leads the controllers through the Lease
kube-system/netplane-controllers; when its process is killed during a stream of writes, the other
takes over within the lease duration, every acknowledged write is kept, and the controllers work.

The servers listen on 127.0.0.1 (free ports) with short election timings (lease 4 s, renew 3 s,
retry 0.5 s); each test gets its own key prefix on one throw-away etcd.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labtools import eventually, eventually_async
from netplane.api import kubeconfig
from netplane.api.client import Client
from netplane.api.errors import ApiError
from netplane.api.etcd import local_etcd
from netplane.controllers.leader import LeaderElector

LEASE = ("kube-system", "netplane-controllers")
TIMINGS = ["--leader-elect-lease-duration", "4", "--leader-elect-renew-deadline", "3",
           "--leader-elect-retry-period", "0.5"]


@pytest.fixture(scope="module")
def etcd() -> Iterator[str]:
    with local_etcd() as url:
        yield url


def start_server(state_dir: Path, storage: str) -> subprocess.Popen:
    argv = [str(Path(sys.executable).with_name("netplane")), "server", "--listen", "127.0.0.1:0",
            "--state-dir", str(state_dir), "--storage", storage, *TIMINGS]
    with open(state_dir.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


@pytest.fixture
def servers(etcd, tmp_path) -> Iterator[list[tuple[subprocess.Popen, kubeconfig.Connection]]]:
    storage = f"{etcd}/t{secrets.token_hex(4)}/registry"
    procs = []
    try:
        for i in range(2):
            procs.append(start_server(tmp_path / f"server-{i}", storage))
            time.sleep(0.5)  # the first to start leads
        conns = [eventually(lambda i=i: kubeconfig.read(tmp_path / f"server-{i}" / "admin.kubeconfig"), timeout=30)
                 for i in range(2)]
        yield list(zip(procs, conns))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def client(conn: kubeconfig.Connection, tmp_path: Path) -> Client:
    ca = tmp_path / f"ca-{secrets.token_hex(2)}.crt"
    ca.write_bytes(conn.ca_pem)
    return Client(conn.server, conn.token, str(ca))


async def holder(api: Client) -> dict:
    return (await api.get("leases", LEASE[1], LEASE[0]))["spec"]


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "echo", "image": "netplane/echo"}]}}}}


def test_the_survivor_takes_the_lease_and_keeps_every_acknowledged_write(servers, tmp_path):
    (first, first_conn), (second, second_conn) = servers

    async def scenario() -> None:
        async with client(first_conn, tmp_path) as one, client(second_conn, tmp_path) as two:
            async def leader() -> str:
                spec = await holder(two)
                return spec["holderIdentity"]
            lead = await eventually_async(leader)
            assert first_conn.server in lead  # the first server leads
            before = (await holder(two)).get("leaseTransitions", 0)

            acknowledged: list[str] = []

            async def writes() -> None:
                for n in range(200):
                    name = f"w{n}"
                    try:
                        await two.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {
                            "name": name, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})
                        acknowledged.append(name)
                    except ApiError:
                        pass
                    await asyncio.sleep(0.02)

            stream = asyncio.create_task(writes())
            await asyncio.sleep(0.5)
            os.killpg(first.pid, signal.SIGKILL)  # the leader's process dies mid-stream
            killed = time.monotonic()
            async def second_leads() -> str | None:
                who = await leader()
                return who if second_conn.server in who else None
            new = await eventually_async(second_leads)
            took = time.monotonic() - killed
            await stream
            assert second_conn.server in new and took < 4 + 3  # within the lease duration, plus a retry
            assert (await holder(two))["leaseTransitions"] == before + 1

            stored = {s["metadata"]["name"] for s in (await two.list("services", "default"))["items"]}
            assert set(acknowledged) <= stored and len(acknowledged) > 100

            await two.create("deployments", deployment("after"), "default")  # the controllers run here now
            async def replicasets() -> dict | None:
                found = await two.list("replicasets", "default")
                return found if found["items"] else None
            sets = await eventually_async(replicasets)
            assert sets["items"][0]["metadata"]["ownerReferences"][0]["name"] == "after"

    asyncio.run(scenario())



def test_two_candidates_never_lead_at_once(etcd, tmp_path):
    """The optimistic write: of electors racing for a free Lease, exactly one wins."""
    from netplane.api.server import start
    from netplane.api.store import Store

    async def scenario() -> None:
        store = Store(f"{etcd}/t{secrets.token_hex(4)}/registry")
        runner, port = await start(store, "127.0.0.1", 0)
        try:
            async with Client(f"http://127.0.0.1:{port}") as api:
                electors = [LeaderElector(api, "race", "default", f"c{i}", 4, 3, 0.5) for i in range(5)]
                won = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
                assert won.count(True) == 1
                spec = (await api.get("leases", "race", "default"))["spec"]
                assert spec["holderIdentity"] == f"c{won.index(True)}"
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())
