"""The kubelet's network side: for each pod bound to this node, a network namespace wired by CNI and
the pod's containers running inside it; the pod's status reports its IP. A deleted pod's processes
are stopped, then CNI DEL, then its namespace is removed."""
from __future__ import annotations

import asyncio
import copy
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from netplane import names
from netplane.agent import containers
from netplane.api.informer import Informer
from netplane.api.loop import Reconciler
from netplane.cni.runtime import Attachment, Runtime
from netplane.kernel import netns

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sandbox:
    uid: str
    key: tuple[str, str]
    netns: str
    ip: str = ""
    running: list[containers.Running] = field(default_factory=list)


def running_status(pod: dict, ip: str, host_ip: str, running: list[containers.Running]) -> dict:
    """The status a kubelet reports for a pod whose containers all started."""
    ts = now()
    by_name = {r.name: r for r in running}
    statuses = []
    for c in pod["spec"].get("containers", []):
        r = by_name[c["name"]]
        pid = r.process.pid if r.process else 0
        statuses.append({
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "containerID": f"netplane://{pid}",
            "ready": True, "started": True, "restartCount": 0, "state": {"running": {"startedAt": r.started_at}},
        })
    conditions = [{"type": t, "status": "True", "lastTransitionTime": ts}
                  for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")]
    return {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": ts, "conditions": conditions, "containerStatuses": statuses,
    }


class Kubelet:
    def __init__(self, client, node_name: str, node_netns: str | None, pod_netns_prefix: str,
                 state_dir: Path, runtime: Runtime) -> None:
        self.client, self.node_name, self.node_netns = client, node_name, node_netns
        self.pod_netns_prefix, self.state_dir, self.runtime = pod_netns_prefix, state_dir, runtime
        self.host_ip = ""  # the node agent sets it once it has read its underlay address
        self.cni_conf: dict | None = None
        self.pods = Informer(client, "pods", field_selector=f"spec.nodeName={node_name}")
        self.loop = Reconciler(f"kubelet/{node_name}", self.reconcile)
        self.pods.add_handler(self.loop.trigger)
        self.sandboxes: dict[str, Sandbox] = {}
        self.busy: set[str] = set()
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.tasks: set[asyncio.Task] = set()

    async def reconcile(self) -> None:
        if self.cni_conf is None or not self.pods.synced.is_set():
            return
        wanted = {p["metadata"]["uid"]: p for p in self.pods.cache.values()
                  if p["metadata"].get("deletionTimestamp") is None
                  and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
        for uid in list(self.sandboxes):
            if uid not in wanted and uid not in self.busy:
                self._spawn(uid, self._stop(self.sandboxes[uid]))
        for uid, pod in wanted.items():
            if uid not in self.sandboxes and uid not in self.busy:
                self._spawn(uid, self._start(pod))

    def _spawn(self, uid: str, work) -> None:
        self.busy.add(uid)
        task = asyncio.create_task(work)
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.busy.discard(uid)
            asyncio.get_running_loop().create_task(self.loop.trigger())

        task.add_done_callback(done)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    async def _start(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        box = Sandbox(meta["uid"], key, names.pod_netns(self.pod_netns_prefix, *key))
        async with self._lock(key):
            try:
                await self._create(pod, box)
            except Exception as err:  # noqa: BLE001 - reported on the pod, retried
                log.warning("pod %s/%s failed to start: %s", *key, err)
                await self._teardown(box)
                await self._report_failure(pod, str(err))
                await asyncio.sleep(RETRY_SECONDS)
                return
            self.sandboxes[box.uid] = box
        status = running_status(pod, box.ip, self.host_ip, box.running)
        await self._write_status(pod, status)

    async def _create(self, pod: dict, box: Sandbox) -> None:
        await asyncio.to_thread(netns.create, box.netns)
        result = await self.runtime.add(self.cni_conf, Attachment(box.uid, netns.path(box.netns)))
        box.ip = result["ips"][0]["address"].split("/")[0]
        logs = self.state_dir / "pods" / f"{box.key[0]}_{box.key[1]}_{box.uid}"
        os.makedirs(logs, exist_ok=True)
        started = await asyncio.gather(*(
            containers.start(c, box.key[1], box.netns, str(logs / f"{c['name']}.log"), now())
            for c in pod["spec"].get("containers", [])
        ), return_exceptions=True)
        box.running = [r for r in started if isinstance(r, containers.Running)]
        errors = [e for e in started if isinstance(e, BaseException)]
        if errors:
            raise errors[0]

    async def _stop(self, box: Sandbox) -> None:
        async with self._lock(box.key):
            await self._teardown(box)
            self.sandboxes.pop(box.uid, None)

    async def _teardown(self, box: Sandbox) -> None:
        await asyncio.gather(*(containers.stop(r) for r in box.running))
        if self.cni_conf is not None:
            await self.runtime.delete(self.cni_conf, Attachment(box.uid, netns.path(box.netns)))
        await asyncio.to_thread(netns.kill_all_in, [box.netns])
        await asyncio.to_thread(netns.delete, box.netns)

    async def _write_status(self, pod: dict, status: dict) -> None:
        fresh = copy.deepcopy(pod)
        fresh["metadata"].pop("resourceVersion", None)
        fresh["status"] = status
        try:
            await self.client.update_status("pods", fresh)
        except Exception as err:  # noqa: BLE001 - the pod may be gone meanwhile
            log.info("status of %s not written: %s", pod["metadata"]["name"], err)

    async def _report_failure(self, pod: dict, message: str) -> None:
        ts = now()
        status = {"phase": "Pending", "conditions": [
            {"type": "ContainersReady", "status": "False", "reason": "ContainerCreating", "message": message,
             "lastTransitionTime": ts},
            {"type": "Ready", "status": "False", "reason": "ContainerCreating", "message": message,
             "lastTransitionTime": ts},
        ]}
        await self._write_status(pod, status)
