"""The kubelet's side of pods: for each pod bound to this node, a network namespace wired by CNI and
the pod's containers as processes inside it, readiness probes, restarts after a container exits,
and a status computed from all that and written whenever the API's copy differs (so a status that
the node lifecycle controller marked NotReady is put right once this node is back).

A pod with a deletionTimestamp is terminated as upstream does: SIGTERM to its containers, SIGKILL
after its grace period, CNI DEL, the namespace removed, then the API object deleted for good.

Container ports with a hostPort reach CNI as the `portMappings` capability args, as containerd and
CRI-O pass them (the kubelet itself makes no hostPort rules): a `portmap` plugin in the chain DNATs
the node's hostPort to the pod.

Each resync period every running pod's attachment gets a CNI CHECK; one that fails (the bridge, the
pod's veth, or its place on the bridge lost by hand) is attached again with CNI DEL and ADD, keeping
the pod's address. Upstream's kubelet leaves that to the node's owner; a lab heals, as its
proxy and overlay do.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from netplane import names
from netplane.agent import containers, probes
from netplane.api.errors import ApiError
from netplane.api.informer import Informers
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.cni import INCOMPATIBLE_VERSION, CNIError
from netplane.cni.runtime import Attachment, Runtime
from netplane.kernel import netns

log = logging.getLogger(__name__)
RETRY_START, RETRY_MAX = 1.0, 10.0  # a pod that failed to start: doubling, to upstream's pod worker backoff
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # CrashLoopBackOff, as upstream


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    spec: dict
    running: containers.Running | None = None
    probe: probes.ProbeState | None = None
    restarts: int = 0
    last_exit: int | None = None
    last_finished: str = ""
    waiting: str = ""  # a reason while it is not running (CrashLoopBackOff)

    @property
    def ready(self) -> bool:
        alive = self.running is not None and self.waiting == "" and self.running.alive()
        return alive and (self.probe is None or self.probe.ready)

    def status(self) -> dict:
        state: dict
        if self.running is not None and self.waiting == "":
            state = {"running": {"startedAt": self.running.started_at}}
        else:
            state = {"waiting": {"reason": self.waiting or "ContainerCreating"}}
        out = {"name": self.spec["name"], "image": self.spec.get("image", ""), "imageID": "",
               "containerID": f"netplane://{self.running.pid or 0 if self.running else 0}",
               "ready": self.ready, "started": self.running is not None, "restartCount": self.restarts, "state": state}
        if self.last_exit is not None:
            out["lastState"] = {"terminated": {"exitCode": self.last_exit, "finishedAt": self.last_finished}}
        return out


def capability_args(pod: dict) -> dict:
    """The CNI capability args of a pod: portMappings for every container port with a hostPort."""
    mappings = [{"hostPort": port["hostPort"], "containerPort": port["containerPort"],
                 "protocol": port.get("protocol", "TCP").lower(), "hostIP": port.get("hostIP", "")}
                for c in pod["spec"].get("containers", []) for port in c.get("ports", []) if port.get("hostPort")]
    return {"portMappings": mappings} if mappings else {}


@dataclass
class Sandbox:
    uid: str
    key: tuple[str, str]
    netns: str
    started_at: str
    capabilities: dict = field(default_factory=dict)  # the CNI capability args of ADD, again for DEL
    ip: str = ""
    mac: str = ""  # the pod interface's, asked for again when it is re-attached
    containers: dict[str, Container] = field(default_factory=dict)
    ready_since: str = ""
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.containers.values())

    def attached(self, result: dict) -> None:
        """Take the pod's address and MAC from a CNI ADD result."""
        self.ip = result["ips"][0]["address"].split("/")[0]
        self.mac = next((i.get("mac", "") for i in result.get("interfaces", []) if i.get("sandbox")), "")


def pod_status(box: Sandbox, host_ip: str) -> dict:
    """The status a kubelet reports for a pod whose sandbox is up."""
    ready = "True" if box.ready else "False"
    since = box.ready_since or box.started_at
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": box.started_at}
                  for t in ("PodReadyToStartContainers", "Initialized", "PodScheduled")]
    conditions += [{"type": t, "status": ready, "lastProbeTime": None, "lastTransitionTime": since}
                   for t in ("ContainersReady", "Ready")]
    return {
        "phase": "Running", "podIP": box.ip, "podIPs": [{"ip": box.ip}], "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}], "startTime": box.started_at, "conditions": conditions,
        "containerStatuses": [c.status() for c in box.containers.values()],
    }


class Kubelet:
    def __init__(self, informers: Informers, node_name: str, node_netns: str | None, pod_netns_prefix: str,
                 state_dir: Path, runtime: Runtime, resync_seconds: float = 30.0) -> None:
        self.client, self.node_name, self.node_netns = informers.client, node_name, node_netns
        self.pod_netns_prefix, self.state_dir, self.runtime = pod_netns_prefix, state_dir, runtime
        self.host_ip = ""  # the node agent sets it once it has read its underlay address
        self.cni_conf: dict | None = None
        self.pods = informers.get("pods", field_selector=f"spec.nodeName={node_name}")
        self.loop = Reconciler(f"kubelet/{node_name}", self.reconcile)
        self.pods.add_handler(self.loop.trigger)
        self.network_loop = Reconciler(f"pod-networks/{node_name}", self.check_networks, resync=resync_seconds)
        self.chained_check_failed: set[str] = set()  # pods whose chained plugins' CHECK failed, said once
        self.sandboxes: dict[str, Sandbox] = {}
        self.busy: set[str] = set()
        self.retry: dict[str, tuple[float, float]] = {}  # uid -> (backoff, monotonic time of the next try)
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.tasks: set[asyncio.Task] = set()
        # NETPLANE_ECHO_LAUNCHER=off: a fresh interpreter per echo container (to compare, or to debug)
        self.launcher = (None if os.environ.get("NETPLANE_ECHO_LAUNCHER") == "off"
                         else containers.Launcher(node_netns, state_dir / "echo-launcher.log"))

    async def reconcile(self) -> None:
        if self.cni_conf is None or not self.pods.synced.is_set():
            return
        pods = {p["metadata"]["uid"]: p for p in self.pods.cache.values()}
        for uid, box in list(self.sandboxes.items()):
            if uid in self.busy:
                continue
            pod = pods.get(uid)
            if pod is None or "deletionTimestamp" in pod["metadata"]:
                self._spawn(uid, self._terminate(box, pod))
            else:
                await self._write_status(pod, pod_status(box, self.host_ip))
        for uid, pod in pods.items():
            if uid in self.sandboxes or uid in self.busy:
                continue
            if "deletionTimestamp" in pod["metadata"]:
                self._spawn(uid, self._finalize(pod))  # never started here: nothing to stop
            elif pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") and self._due(uid):
                self._spawn(uid, self._start(pod))
        self.retry = {uid: r for uid, r in self.retry.items() if uid in pods}

    async def check_networks(self) -> None:
        """CNI CHECK of every running pod, each resync period: one whose network was changed behind
        the kubelet's back (its veth or the bridge deleted, the veth off the bridge) is attached again."""
        if self.cni_conf is None:
            return
        self.chained_check_failed &= set(self.sandboxes)
        for uid, box in list(self.sandboxes.items()):
            if uid in self.busy:
                continue
            try:
                await self.runtime.check(self.cni_conf, Attachment(box.uid, netns.path(box.netns)))
            except CNIError as err:
                if err.code == INCOMPATIBLE_VERSION:  # the network's cniVersion has no CHECK: nothing to go by
                    return
                if err.plugin not in ("", self.cni_conf["plugins"][0]["type"]):
                    # a chained plugin's CHECK is not the pod's interface (and Debian's portmap 1.1.1
                    # fails CHECK for every IPv4-only pod, looking for IPv6 chains): said once
                    if uid not in self.chained_check_failed:
                        log.info("kubelet/%s: pod %s/%s: %s", self.node_name, *box.key, err)
                        self.chained_check_failed.add(uid)
                    continue
                log.warning("kubelet/%s: pod %s/%s: CNI CHECK failed (%s); attaching it again", self.node_name,
                            *box.key, err)
                self._spawn(uid, self._reattach(box))

    async def _reattach(self, box: Sandbox) -> None:
        """CNI DEL, then ADD asking for the pod's address and MAC (CNI_ARGS IP and MAC, which
        host-local and bridge honour): its endpoints stay as they are and its peers' ARP entries hold."""
        async with self._lock(box.key):
            path = netns.path(box.netns)
            await self.runtime.delete(self.cni_conf, Attachment(box.uid, path))
            mac = f";MAC={box.mac}" if box.mac else ""
            wanted = Attachment(box.uid, path, args=f"IgnoreUnknown=1;IP={box.ip}{mac}")
            box.attached(await self.runtime.add(self.cni_conf, wanted, box.capabilities))
            self._save(box)

    def _due(self, uid: str) -> bool:
        """Whether a pod may be tried now; one that failed is tried again after its backoff."""
        return self.retry.get(uid, (0.0, 0.0))[1] <= asyncio.get_running_loop().time()

    def _back_off(self, uid: str) -> None:
        backoff = min(self.retry[uid][0] * 2, RETRY_MAX) if uid in self.retry else RETRY_START
        loop = asyncio.get_running_loop()
        self.retry[uid] = (backoff, loop.time() + backoff)
        loop.call_later(backoff, lambda: loop.create_task(self.loop.trigger()))

    def _spawn(self, uid: str, work) -> None:
        self.busy.add(uid)
        task = asyncio.create_task(work)
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.busy.discard(uid)
            if not t.cancelled() and t.exception():
                log.error("kubelet/%s: %s", self.node_name, t.exception())
                self._back_off(uid)
            else:
                self.retry.pop(uid, None)
            asyncio.get_running_loop().create_task(self.loop.trigger())

        task.add_done_callback(done)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def _record(self, key: tuple[str, str], uid: str) -> Path:
        """Where a sandbox is written down, so that a restarted agent adopts it instead of remaking it."""
        return self.state_dir / "pods" / names.fitted(f"{key[0]}_{key[1]}_{uid}") / "sandbox.json"

    def _save(self, box: Sandbox) -> None:
        record = {"ip": box.ip, "mac": box.mac, "startedAt": box.started_at, "containers": {
            name: {"pid": c.running.pid if c.running else None, "startedAt": c.running.started_at if c.running else "",
                   "restarts": c.restarts} for name, c in box.containers.items()}}
        self._record(box.key, box.uid).write_text(json.dumps(record))

    async def _adopt(self, pod: dict, box: Sandbox) -> bool:
        """Take over a sandbox an earlier run of this agent made: same namespace, address and processes;
        a container whose process has gone is started again."""
        try:
            record = json.loads(self._record(box.key, box.uid).read_text())
        except (FileNotFoundError, ValueError):
            return False
        if not netns.exists(box.netns):
            return False
        box.ip, box.mac, box.started_at = record["ip"], record.get("mac", ""), record["startedAt"]
        inside = set(netns.pids_in([box.netns]))
        logs = self._record(box.key, box.uid).parent
        for spec in pod["spec"].get("containers", []):
            seen = record["containers"].get(spec["name"], {})
            c = Container(spec, probe=probes.ProbeState(spec["readinessProbe"]) if spec.get("readinessProbe") else None,
                          restarts=seen.get("restarts", 0))
            box.containers[spec["name"]] = c
            pid = seen.get("pid")
            if (pid is None and containers.argv_for(spec, box.key[1]) is None) or pid in inside:
                c.running = containers.Running(spec["name"], pid, str(logs / f"{spec['name']}.log"), seen["startedAt"])
            else:
                c.restarts += 1
                await self._run(box, c)
        return True

    async def _start(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        box = Sandbox(meta["uid"], key, names.pod_netns(self.pod_netns_prefix, *key), now(), capability_args(pod))
        async with self._lock(key):
            try:
                if not await self._adopt(pod, box):
                    await self._create(pod, box)
            except Exception as err:  # reported on the pod, then retried after a backoff (_spawn)
                await self._teardown(box, grace=0)
                await self._report_failure(pod, str(err))
                raise RuntimeError(f"pod {key[0]}/{key[1]} failed to start: {err}") from err
            self.sandboxes[box.uid] = box
            self._save(box)
        box.ready_since = box.started_at if box.ready else ""
        for c in box.containers.values():
            box.tasks.append(asyncio.create_task(self._watch_container(pod, box, c)))
            if c.probe is not None:
                box.tasks.append(asyncio.create_task(self._probe_loop(box, c)))

    async def _create(self, pod: dict, box: Sandbox) -> None:
        await asyncio.to_thread(netns.create, box.netns)
        result = await self.runtime.add(self.cni_conf, Attachment(box.uid, netns.path(box.netns)), box.capabilities)
        box.attached(result)
        specs = pod["spec"].get("containers", [])
        box.containers = {c["name"]: Container(c, probe=probes.ProbeState(c["readinessProbe"])
                                               if c.get("readinessProbe") else None) for c in specs}
        started = await asyncio.gather(*(self._run(box, c) for c in box.containers.values()), return_exceptions=True)
        errors = [e for e in started if isinstance(e, BaseException)]
        if errors:
            raise errors[0]

    async def _run(self, box: Sandbox, c: Container) -> None:
        logs = self._record(box.key, box.uid).parent
        os.makedirs(logs, exist_ok=True)
        c.running = await containers.start(c.spec, box.key[1], box.netns, str(logs / f"{c.spec['name']}.log"), now(),
                                           self.launcher)
        c.waiting = ""

    async def _watch_container(self, pod: dict, box: Sandbox, c: Container) -> None:
        """Restart a container that exits, with upstream's back-off, as its pod's restartPolicy says."""
        policy = pod["spec"].get("restartPolicy", "Always")
        backoff = BACKOFF_START
        while c.running is not None and c.running.pid is not None:
            code = await c.running.wait()
            c.last_exit, c.last_finished = code, now()
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                c.waiting = "Completed" if code == 0 else "Error"
                await self.loop.trigger()
                return
            c.waiting = "CrashLoopBackOff"
            await self.loop.trigger()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            c.restarts += 1
            await self._run(box, c)
            self._save(box)
            await self.loop.trigger()

    async def _probe_loop(self, box: Sandbox, c: Container) -> None:
        spec = c.probe.spec
        await asyncio.sleep(float(spec.get("initialDelaySeconds", 0)))
        while True:
            ok = await probes.run_probe(spec, c.spec, box.ip, self.node_netns, box.netns)
            if c.probe.record(ok):
                box.ready_since = now()
                await self.loop.trigger()
            await asyncio.sleep(float(spec.get("periodSeconds", 10)))

    async def _terminate(self, box: Sandbox, pod: dict | None) -> None:
        grace = pod["metadata"].get("deletionGracePeriodSeconds", 30) if pod else 0
        async with self._lock(box.key):
            await self._teardown(box, grace)
            self.sandboxes.pop(box.uid, None)
        if pod is not None:
            await self._finalize(pod)

    async def _finalize(self, pod: dict) -> None:
        """Delete the pod object for good (grace 0) once nothing of it runs here."""
        try:
            await self.client.delete("pods", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                     grace_period_seconds=0)
        except ApiError as err:
            if err.code != 404:
                raise

    async def _teardown(self, box: Sandbox, grace: float) -> None:
        for task in box.tasks:
            task.cancel()
        await asyncio.gather(*(containers.stop(c.running, grace) for c in box.containers.values() if c.running))
        if self.cni_conf is not None:
            await self.runtime.delete(self.cni_conf, Attachment(box.uid, netns.path(box.netns)), box.capabilities)
        await asyncio.to_thread(netns.kill_all_in, [box.netns])
        await asyncio.to_thread(netns.delete, box.netns)

    async def _report_failure(self, pod: dict, message: str) -> None:
        ts = now()
        conditions = [{"type": t, "status": "False", "reason": "ContainerCreating", "message": message,
                       "lastTransitionTime": ts} for t in ("ContainersReady", "Ready")]
        await self._write_status(pod, {"phase": "Pending", "conditions": conditions})

    async def _write_status(self, pod: dict, status: dict) -> None:
        try:
            await write_status(self.client, "pods", pod, status, merge=False)
        except ApiError as err:  # deleted meanwhile: the next pass sees it
            if err.code != 404:
                raise
