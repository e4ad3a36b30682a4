"""The kubelet's side of pods: for each pod bound to this node, a network namespace wired by CNI, a
sandbox (a pause process holding the pod's UTS, IPC and PID namespaces, its hostname the pod's),
and the pod's containers forked into it by the node's launcher, each in a mount namespace of its
own over the machine's files (agent/rootfs.py) with the kubelet's /etc/hosts, /etc/hostname and
/etc/resolv.conf, running what its image runs (agent/images.py) with the environment the kubelet
gives it (agent/podenv.py). Startup, liveness and readiness probes, restarts as the pod's
restartPolicy says with upstream's back-off, and a status computed from all that and written whenever the API's copy
differs (so a status that the node lifecycle controller marked NotReady is put right once this
node is back).

A container that cannot run is never reported running: an image the catalog does not know waits
in ErrImagePull then ImagePullBackOff, a missing ConfigMap or Secret in CreateContainerConfigError,
a command that cannot be exec'd ends as StartError (exit code 128), each with upstream's message.

A pod with a deletionTimestamp is terminated as upstream does: SIGTERM to its containers, SIGKILL
after its grace period, its pause process, CNI DEL, the namespace removed, its terminal phase
written, then the API object deleted for good.

Container ports with a hostPort reach CNI as the `portMappings` capability args, as containerd and
CRI-O pass them (the kubelet itself makes no hostPort rules): a `portmap` plugin in the chain DNATs
the node's hostPort to the pod.

Each resync period every running pod's attachment gets a CNI CHECK; one that fails (the bridge, the
pod's veth, or its place on the bridge lost by hand) is attached again with CNI DEL and ADD, keeping
the pod's address. Upstream's kubelet leaves that to the node's owner; a lab heals, as its
proxy and overlay do. A sandbox whose pause process ends is made again, as upstream's kubelet does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netplane import names
from netplane.agent import containers, images, logs, podenv, probes, rootfs, stats, volumes
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.informer import Informers
from netplane.api.loop import Reconciler
from netplane.api.objects import container_id, container_statuses, write_status
from netplane.api.serviceaccounts import DEFAULT_ACCOUNT
from netplane.cni import INCOMPATIBLE_VERSION, CNIError
from netplane.cni.runtime import Attachment, Runtime
from netplane.kernel import cgroups, netns
from netplane.api.times import time_text

log = logging.getLogger(__name__)
RETRY_START, RETRY_MAX = 1.0, 10.0  # a pod that failed to start: doubling, to upstream's pod worker backoff
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # CrashLoopBackOff and ImagePullBackOff, as upstream
VOLUME_RETRY_START, VOLUME_RETRY_MAX = 0.5, 122.0  # a volume that cannot be set up: upstream's 500 ms to 2m2s
VOLUME_SYNC = 5.0  # how often a running pod's ConfigMap, Secret and downward API files are brought up to date
BACKOFF_RESET = 600.0  # a container that ran this long starts its back-off again from the start
START_ERROR_CODE = 128  # what runtimes report for a container whose process could not be started


PROBE_KINDS = ("startup", "liveness", "readiness")


@dataclass
class Container:
    spec: dict
    running: containers.Running | None = None
    probes: dict[str, probes.ProbeState] = field(default_factory=dict)  # of its current run, by kind
    started_ok: bool = False  # its startup probe has succeeded in this run (or it has none)
    restarts: int = 0
    waiting: str = "ContainerCreating"  # the reason while it is not running
    message: str = ""
    terminated: dict | None = None  # it ended and stays ended (restartPolicy)
    last: dict | None = None  # lastState.terminated

    @property
    def initialized(self) -> bool:
        """As an init container: it ran to success, or (a sidecar) it has started."""
        if sidecar(self.spec):
            return self.running is not None and self.waiting == "" and self.started_ok
        return self.terminated is not None and self.terminated.get("exitCode") == 0

    def fresh_probes(self) -> None:
        """A new run starts from scratch: not started until its startup probe passes, not ready
        until its readiness probe does."""
        self.probes = {k: probes.ProbeState(self.spec[f"{k}Probe"]) for k in PROBE_KINDS if self.spec.get(f"{k}Probe")}
        self.started_ok = "startup" not in self.probes

    @property
    def ready(self) -> bool:
        alive = self.running is not None and self.waiting == "" and self.running.alive()
        readiness = self.probes.get("readiness")
        return alive and self.started_ok and (readiness is None or readiness.ready)

    def status(self) -> dict:
        state: dict
        if self.running is not None and self.waiting == "":
            state = {"running": {"startedAt": self.running.started_at}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated}
        else:
            state = {"waiting": {"reason": self.waiting, **({"message": self.message} if self.message else {})}}
        pid = self.running.pid if self.running else 0
        out = {"name": self.spec["name"], "image": self.spec.get("image", ""), "imageID": "",
               "containerID": container_id(pid), "ready": self.ready,
               "started": self.running is not None and self.waiting == "" and self.started_ok,
               "restartCount": self.restarts,
               "state": state}
        if self.last is not None:
            out["lastState"] = {"terminated": self.last}
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
    pause: containers.Running | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    init: dict[str, Container] = field(default_factory=dict)  # in the order they run
    ephemeral: dict[str, Container] = field(default_factory=dict)  # added later (kubectl debug); never restarted
    initialized: bool = False  # its init containers have all done their part (or it has none)
    volumes_ready: asyncio.Task | None = None  # gives its volumes, by name, once they are set up
    tokens: dict = field(default_factory=dict)  # its projected ServiceAccount tokens, by (volume, path)
    ready_since: str = ""
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def ref(self) -> dict:
        """Enough of the pod to name it in an Event."""
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": self.key[0], "name": self.key[1],
                                                                "uid": self.uid}}

    def container(self, name: str) -> Container | None:
        """One of its containers, init or ephemeral containers, by name."""
        return self.every.get(name)

    @property
    def every(self) -> dict[str, Container]:
        """Its containers, init and ephemeral containers, by name."""
        return self.containers | self.init | self.ephemeral

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.containers.values()) and all(
            c.ready for c in self.init.values() if sidecar(c.spec))

    def attached(self, result: dict) -> None:
        """Take the pod's address and MAC from a CNI ADD result."""
        self.ip = result["ips"][0]["address"].split("/")[0]
        self.mac = next((i.get("mac", "") for i in result.get("interfaces", []) if i.get("sandbox")), "")


def _field_path(pod: dict, container: str) -> str:
    """An Event's fieldPath for one of the pod's containers, as the kubelet writes it."""
    kind = next((k for k in ("initContainers", "ephemeralContainers")
                 if any(c["name"] == container for c in pod["spec"].get(k) or [])), "containers")
    return f"spec.{kind}{{{container}}}"


def sidecar(spec: dict) -> bool:
    """An init container with restartPolicy Always: started in its turn and kept running."""
    return spec.get("restartPolicy") == "Always"


def _init_outcome(init_statuses: list[dict]) -> tuple[int, int]:
    """(pending, failed) among a pod's init containers that run to their end, as getPhase counts them."""
    pending = failed = 0
    for s in init_statuses:
        state, last = s["state"], s.get("lastState", {}).get("terminated")
        if "terminated" in state:
            failed += state["terminated"].get("exitCode") != 0
        elif "waiting" in state and last is not None:
            failed += last.get("exitCode") != 0
        else:
            pending += 1
    return pending, failed


def pod_phase(restart_policy: str, statuses: list[dict], init_statuses: list[dict] = ()) -> str:
    """The pod's phase from its containers, as the kubelet's getPhase (``statuses``: the app
    containers' and the sidecars', ``init_statuses``: those of the init containers that run once)."""
    pending_init, failed_init = _init_outcome(list(init_statuses))
    if failed_init and restart_policy == "Never":
        return "Failed"
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif "terminated" in s.get("lastState", {}):
            stopped += 1
        else:
            waiting += 1
    if waiting or pending_init:
        return "Pending"
    if running:
        return "Running"
    if stopped and restart_policy != "Always":
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Running" if stopped else "Pending"


KUBELET_CONDITIONS = ("PodReadyToStartContainers", "PodScheduled", "Initialized", "ContainersReady", "Ready")


def pod_status(box: Sandbox, host_ip: str, restart_policy: str) -> dict:
    """The status a kubelet reports for a pod whose sandbox is up."""
    statuses = [c.status() for c in box.containers.values()]
    init_statuses = [c.status() for c in box.init.values()]
    once = [s for s, c in zip(init_statuses, box.init.values()) if not sidecar(c.spec)]
    sidecars = [s for s, c in zip(init_statuses, box.init.values()) if sidecar(c.spec)]
    phase = pod_phase(restart_policy, statuses + sidecars, once)
    ready = "True" if box.ready and phase == "Running" else "False"
    since = box.ready_since or box.started_at
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": box.started_at}
                  for t in ("PodReadyToStartContainers", "PodScheduled")]
    incomplete = [c.spec["name"] for c in box.init.values() if not c.initialized]
    conditions.append({"type": "Initialized", "status": "False" if incomplete else "True", "lastProbeTime": None,
                       "lastTransitionTime": box.started_at} | ({
                           "reason": "ContainersNotInitialized",
                           "message": f"containers with incomplete status: [{' '.join(incomplete)}]"}
                           if incomplete else {}))
    conditions += [{"type": t, "status": ready, "lastProbeTime": None, "lastTransitionTime": since}
                   for t in ("ContainersReady", "Ready")]
    out = {"phase": phase, "podIP": box.ip, "podIPs": [{"ip": box.ip}], "hostIP": host_ip,
           "hostIPs": [{"ip": host_ip}], "startTime": box.started_at, "conditions": conditions,
           "containerStatuses": statuses}
    ephemeral = [{**c.status(), "ready": False} for c in box.ephemeral.values()]  # never ready, as upstream
    return out | ({"initContainerStatuses": init_statuses} if init_statuses else {}) | (
        {"ephemeralContainerStatuses": ephemeral} if ephemeral else {})


def terminal_status(box: Sandbox, host_ip: str) -> dict:
    """The status of a deleted pod whose containers all stopped: Succeeded if each of them ended with
    0, else Failed, and not ready (upstream's kubelet gives a deleted pod a terminal phase before it
    removes the object, which a Job's pod tracking waits for)."""
    status = pod_status(box, host_ip, "Never")
    if status["phase"] != "Succeeded":
        status["phase"] = "Failed"
    for c in status["conditions"]:
        if c["type"] in ("ContainersReady", "Ready"):
            c["status"] = "False"
    return status


def _env_references(spec: dict) -> set[tuple[str, str]]:
    """The (plural, name) of the ConfigMaps and Secrets a container's env and envFrom read."""
    wanted = set()
    for source in [*(spec.get("envFrom") or []), *((v.get("valueFrom") or {}) for v in spec.get("env") or [])]:
        for key, plural in (("configMapRef", "configmaps"), ("configMapKeyRef", "configmaps"),
                            ("secretRef", "secrets"), ("secretKeyRef", "secrets")):
            if key in source:
                wanted.add((plural, source[key].get("name", "")))
    return wanted


def _terminated(code: int | None, started: str, reason: str = "", message: str = "") -> dict:
    code = START_ERROR_CODE if code is None else code
    out = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
           "startedAt": started or None, "finishedAt": time_text()}
    return out | ({"message": message} if message else {})


class Kubelet:
    def __init__(self, informers: Informers, node_name: str, node_netns: str | None, pod_netns_prefix: str,
                 state_dir: Path, runtime: Runtime, resync_seconds: float = 30.0,
                 cluster_dns: tuple[str, ...] = (), resolv_conf: str = "/etc/resolv.conf",
                 images_extra: Mapping[str, Mapping] | None = None, cluster_domain: str = names.CLUSTER_DOMAIN) -> None:
        self.client, self.node_name, self.node_netns = informers.client, node_name, node_netns
        self.pod_netns_prefix, self.state_dir, self.runtime = pod_netns_prefix, state_dir, runtime
        self.cluster_dns, self.resolv_conf, self.cluster_domain = list(cluster_dns), resolv_conf, cluster_domain
        self.catalog = images.Catalog(images_extra)
        self.host_ip = ""  # the node agent sets it once it has read its underlay address
        self.cni_conf: dict | None = None
        self.pods = informers.get("pods", field_selector=f"spec.nodeName={node_name}")
        self.services = informers.get("services")
        self.nodes = informers.get("nodes")
        self.config_objects = {plural: informers.get(plural) for plural in ("configmaps", "secrets")}
        self.loop = Reconciler(f"kubelet/{node_name}", self.reconcile)
        self.pods.add_handler(self.loop.trigger)
        self.network_loop = Reconciler(f"pod-networks/{node_name}", self.check_networks, resync=resync_seconds)
        self.chained_check_failed: set[str] = set()  # pods whose chained plugins' CHECK failed, said once
        self.sandboxes: dict[str, Sandbox] = {}
        self.finished: set[str] = set()  # pods whose containers are done for good: never started again
        self.busy: set[str] = set()
        self.retry: dict[str, tuple[float, float]] = {}  # uid -> (backoff, monotonic time of the next try)
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.tasks: set[asyncio.Task] = set()
        self.launcher = containers.Launcher(node_netns, state_dir / "launcher.log")
        self.events = Recorder(informers.client, "kubelet", node_name)
        self.cgroup_scope = names.fitted(f"{pod_netns_prefix}{node_name}")  # the node's cgroup, below netplane's
        self.has_cgroups = cgroups.available()
        self.machine_root = rootfs.machine_root()

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
                continue
            self._start_ephemeral(pod, box)
            status = pod_status(box, self.host_ip, pod["spec"].get("restartPolicy", "Always"))
            await self._write_status(pod, status)
            if status["phase"] in ("Succeeded", "Failed"):  # done: its sandbox goes, its logs stay
                self.finished.add(uid)
                self._spawn(uid, self._retire(box))
        self.finished &= set(pods)
        for uid, pod in pods.items():
            if uid in self.sandboxes or uid in self.busy:
                continue
            if "deletionTimestamp" in pod["metadata"]:
                self._spawn(uid, self._finalize(pod))  # never started here: nothing to stop
            elif uid not in self.finished and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") \
                    and self._due(uid):
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

    def _pod_dir(self, key: tuple[str, str], uid: str) -> Path:
        """The pod's own files: its sandbox record, /etc files, container logs and roots, volumes."""
        return self.state_dir / "pods" / names.fitted(f"{key[0]}_{key[1]}_{uid}")

    def _save(self, box: Sandbox) -> None:
        def record(c: Container) -> dict:
            return {"pid": c.running.pid if c.running else None, "startedAt": c.running.started_at if c.running else "",
                    "restarts": c.restarts, "terminated": c.terminated}

        saved = {"ip": box.ip, "mac": box.mac, "startedAt": box.started_at,
                 "pause": box.pause.pid if box.pause else None, "initialized": box.initialized,
                 "containers": {name: record(c) for name, c in box.every.items()}}
        (self._pod_dir(box.key, box.uid) / "sandbox.json").write_text(json.dumps(saved))

    async def _adopt(self, pod: dict, box: Sandbox) -> bool:
        """Take over a sandbox an earlier run of this agent made: same namespaces, address and
        processes; a container whose process has gone is started again (its init containers,
        unless they had all done their part)."""
        try:
            record = json.loads((self._pod_dir(box.key, box.uid) / "sandbox.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        pause = containers.Running(record["pause"], record["startedAt"]) if record.get("pause") else None
        if not netns.exists(box.netns) or pause is None or not pause.alive():
            await self._teardown(box, grace=0)  # what is left of it is made again
            (self._pod_dir(box.key, box.uid) / "sandbox.json").unlink(missing_ok=True)
            return False
        box.ip, box.mac, box.started_at, box.pause = record["ip"], record.get("mac", ""), record["startedAt"], pause
        box.containers, box.init = self._containers(pod)
        box.ephemeral = {c["name"]: Container(c) for c in pod["spec"].get("ephemeralContainers") or []
                         if c["name"] in record["containers"]}  # the others start as if just added
        box.initialized = record.get("initialized", False) or not box.init
        for name, c in box.every.items():
            seen = record["containers"].get(name, {})
            c.restarts = seen.get("restarts", 0)
            if (box.initialized or name in box.ephemeral) and seen.get("terminated"):
                c.terminated, c.waiting = seen["terminated"], "Completed"
            elif seen.get("pid") and containers.Running(seen["pid"]).alive():
                c.running, c.waiting = containers.Running(seen["pid"], seen["startedAt"]), ""
        return True

    @staticmethod
    def _containers(pod: dict) -> tuple[dict[str, Container], dict[str, Container]]:
        """The pod's app containers and its init containers, by name, each not yet started (waiting
        in PodInitializing while init containers are to run)."""
        spec = pod["spec"]
        first = "PodInitializing" if spec.get("initContainers") else "ContainerCreating"
        apps = {c["name"]: Container(c, waiting=first) for c in spec.get("containers", [])}
        init = {c["name"]: Container(c, waiting="PodInitializing") for c in spec.get("initContainers") or []}
        for c in (apps | init).values():
            c.fresh_probes()
        return apps, init

    async def _start(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        box = Sandbox(meta["uid"], key, names.pod_netns(self.pod_netns_prefix, *key), time_text(), capability_args(pod))
        async with self._lock(key):
            volumes_ready = asyncio.create_task(self._volumes(pod, box))  # they need no network: beside the sandbox
            try:
                if not await self._adopt(pod, box):
                    await self._create(pod, box)
            except Exception as err:  # reported on the pod, then retried after a backoff (_spawn)
                volumes_ready.cancel()
                await self._teardown(box, grace=0)
                await self._report_failure(pod, str(err))
                raise RuntimeError(f"pod {key[0]}/{key[1]} failed to start: {err}") from err
            self.sandboxes[box.uid] = box
            self._save(box)
        box.volumes_ready = volumes_ready
        box.tasks += [volumes_ready, asyncio.create_task(self._watch_sandbox(box)),
                      asyncio.create_task(self._run_pod(pod, box, volumes_ready))]
        for c in box.ephemeral.values():  # adopted: supervised again (one that ended stays ended)
            if c.terminated is None:
                box.tasks.append(asyncio.create_task(self._run_ephemeral(pod, box, c)))

    def _start_ephemeral(self, pod: dict, box: Sandbox) -> None:
        """Start the ephemeral containers added to the pod since (kubectl debug): each runs once, in
        the pod's namespaces, and is not restarted."""
        for spec in pod["spec"].get("ephemeralContainers") or []:
            if spec["name"] not in box.ephemeral and box.volumes_ready is not None:
                c = box.ephemeral[spec["name"]] = Container(spec)
                box.tasks.append(asyncio.create_task(self._run_ephemeral(pod, box, c)))

    async def _run_ephemeral(self, pod: dict, box: Sandbox, c: Container) -> None:
        assert box.volumes_ready is not None
        await self._supervise(pod, box, c, await asyncio.shield(box.volumes_ready), "Never")
        self._save(box)

    async def _run_pod(self, pod: dict, box: Sandbox, volumes_ready: asyncio.Task) -> None:
        """Once its volumes are set up, the pod's init containers in order (each to its successful
        end, a sidecar until it has started), then its containers, each supervised on its own."""
        prepared = await volumes_ready
        if volumes.follows_objects(pod):
            box.tasks.append(asyncio.create_task(self._refresh_volumes(pod, box)))
        once = "Never" if pod["spec"].get("restartPolicy") == "Never" else "OnFailure"
        for c in box.init.values():
            if sidecar(c.spec):
                self._start_supervised(pod, box, c, prepared, "Always")
                if not box.initialized:
                    while not c.initialized:
                        await asyncio.sleep(0.1)
            elif not box.initialized:
                await self._supervise(pod, box, c, prepared, once)
                if not c.initialized:
                    return  # it failed under restartPolicy Never: the pod has Failed
        if not box.initialized:
            box.initialized = True
            self._save(box)
        for c in box.containers.values():
            if c.waiting == "PodInitializing":
                c.waiting = "ContainerCreating"
            self._start_supervised(pod, box, c, prepared, pod["spec"].get("restartPolicy", "Always"))
        await self.loop.trigger()

    def _start_supervised(self, pod: dict, box: Sandbox, c: Container, prepared: dict[str, str], policy: str) -> None:
        box.tasks.append(asyncio.create_task(self._supervise(pod, box, c, prepared, policy)))
        box.tasks += [asyncio.create_task(self._probe_loop(pod, box, c, kind)) for kind in c.probes]

    async def _volumes(self, pod: dict, box: Sandbox) -> dict[str, str]:
        """Set up the pod's volumes, again after a doubling pause (from 0.5 s, as upstream's volume
        manager retries) while one cannot be: its containers wait in ContainerCreating, a
        FailedMount event says why."""
        if not pod["spec"].get("volumes"):
            return {}
        pause = VOLUME_RETRY_START
        while True:
            try:
                lookup, box.tokens = await asyncio.gather(self._objects(pod, volumes.referenced(pod)), self._tokens(pod))
                return await self._prepare(pod, box, lookup)
            except volumes.VolumeError as err:
                self.events.record(pod, WARNING, "FailedMount", str(err))
            await asyncio.sleep(pause)
            pause = min(pause * 2, VOLUME_RETRY_MAX)

    async def _refresh_volumes(self, pod: dict, box: Sandbox) -> None:
        """Every VOLUME_SYNC seconds, the pod's ConfigMap, Secret and downward API files as they are
        now (the pod's labels and annotations too), as the kubelet's sync loop updates them; the
        tokens stay those of the pod's start. Nothing is read or written while the pod and the
        objects it names keep their resourceVersions."""
        written = None
        while True:
            await asyncio.sleep(VOLUME_SYNC)
            current = self.pods.cache.get(box.key)
            if current is None or current["metadata"]["uid"] != box.uid:
                current = pod
            wanted = volumes.referenced(current)
            lookup = await self._objects(current, wanted)
            versions = (current["metadata"].get("resourceVersion"), sorted(
                (plural, name, ((lookup(plural, name) or {}).get("metadata") or {}).get("resourceVersion", ""))
                for plural, name in wanted))
            if versions == written:
                continue
            try:
                await self._prepare(current, box, lookup)
                written = versions
            except volumes.VolumeError as err:  # an object gone: the files stay as they were
                log.info("kubelet/%s: pod %s/%s: %s", self.node_name, *box.key, err)

    async def _prepare(self, pod: dict, box: Sandbox, lookup: podenv.Lookup) -> dict[str, str]:
        """The pod's volumes set up below its directory (files rewritten only where they changed)."""
        return await asyncio.to_thread(volumes.prepare, pod, self._pod_dir(box.key, box.uid), lookup,
                                       self._allocatable(), box.tokens)

    async def _tokens(self, pod: dict) -> dict[tuple[str, str], str]:
        """A token bound to the pod for each of its serviceAccountToken sources, asked of the API
        server as the kubelet asks (TokenRequest)."""
        meta, out = pod["metadata"], {}
        account = pod["spec"].get("serviceAccountName") or DEFAULT_ACCOUNT
        for volume, source in volumes.token_sources(pod):
            spec = {"expirationSeconds": source.get("expirationSeconds", 3600),
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}}
            if source.get("audience"):
                spec["audiences"] = [source["audience"]]
            try:
                answer = await self.client.request_token(meta["namespace"], account, spec)
            except ApiError as err:
                raise volumes.VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: '
                                          f"{err.message}") from None
            out[(volume, source["path"])] = answer["status"]["token"]
        return out

    def _allocatable(self) -> dict:
        return (self.nodes.cache.get(("", self.node_name)) or {}).get("status", {}).get("allocatable") or {}

    async def _create(self, pod: dict, box: Sandbox) -> None:
        """The pod's network and sandbox; its containers start afterwards, each on its own."""
        pod_dir = self._pod_dir(box.key, box.uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(netns.create, box.netns)
        hostname, _ = podenv.hostname_and_domain(pod)
        # the sandbox needs only the namespace: it starts while CNI wires it
        added, box.pause = await asyncio.gather(
            self.runtime.add(self.cni_conf, Attachment(box.uid, netns.path(box.netns)), box.capabilities),
            self.launcher.sandbox(box.netns, hostname, box.started_at))
        box.attached(added)
        (pod_dir / "etc-hosts").write_text(podenv.hosts_file(pod, [box.ip], self.cluster_domain))
        (pod_dir / "etc-hostname").write_text(hostname + "\n")
        (pod_dir / "resolv.conf").write_text(podenv.resolv_conf(pod, self.cluster_dns, self._node_resolv(),
                                                                          self.cluster_domain))
        box.containers, box.init = self._containers(pod)
        box.initialized = not box.init

    def _node_resolv(self) -> podenv.Resolv:
        try:
            return podenv.parse_resolv(Path(self.resolv_conf).read_text())
        except OSError:
            return podenv.Resolv()

    async def _watch_sandbox(self, box: Sandbox) -> None:
        """A pause process that ends takes the pod's namespaces with it: the pod is made again."""
        assert box.pause is not None
        await box.pause.wait()
        if box.uid not in self.sandboxes or box.uid in self.busy:
            return  # it is being stopped
        log.warning("kubelet/%s: pod %s/%s: its sandbox ended; making it again", self.node_name, *box.key)
        self._spawn(box.uid, self._retire(box))

    async def _container_request(self, pod: dict, box: Sandbox, c: Container, prepared: dict[str, str]) -> dict:
        """What the launcher needs to start a container (images.ImageError, podenv.ConfigError when
        it cannot be); ``prepared``: the pod's volumes, by name."""
        image, argv = self.catalog.resolve(c.spec)
        lookup = await self._objects(pod, _env_references(c.spec))
        services = [s for s in self.services.cache.values() if (
            s["metadata"].get("namespace") == box.key[0] and pod["spec"].get("enableServiceLinks", True)) or (
            s["metadata"].get("namespace") == "default" and s["metadata"]["name"] == "kubernetes")]
        known = {"podIP": box.ip, "podIPs": [{"ip": box.ip}], "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}]}
        seen = {**pod, "status": {**pod.get("status", {}), **known}}  # its addresses, before the API has them
        hostname, _ = podenv.hostname_and_domain(pod)
        env = {**image.env, "HOSTNAME": hostname, "HOME": "/root",
               **podenv.container_env(seen, c.spec, services, lookup, self._allocatable())}
        argv = [podenv.expand(a, env) for a in argv]
        pod_dir = self._pod_dir(box.key, box.uid)
        stage = pod_dir / f"{c.spec['name']}.root"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        kubelet_files = {"/etc/hosts": str(pod_dir / "etc-hosts"), "/etc/hostname": str(pod_dir / "etc-hostname"),
                         "/etc/resolv.conf": str(pod_dir / "resolv.conf")}
        mounts = rootfs.plan(str(stage), self.machine_root, rootfs.machine_mounts(), image.layer, kubelet_files,
                             volumes.mounts(c.spec, prepared))
        security = {**(pod["spec"].get("securityContext") or {}), **(c.spec.get("securityContext") or {})}
        log_file = self._run_log(box, c)
        request = {"sandbox": box.pause.pid, "mounts": mounts, "env": env, "log": str(log_file),
                   "attach": containers.attach_name(log_file), "stdin": bool(c.spec.get("stdin")),
                   "stdinOnce": bool(c.spec.get("stdinOnce")), "tty": bool(c.spec.get("tty")),
                   "cwd": c.spec.get("workingDir") or image.working_dir,
                   "uid": security.get("runAsUser"), "gid": security.get("runAsGroup"),
                   "cgroups": await self._cgroup_for(box, c)}
        if argv[0] == images.ECHO:
            ports = c.spec.get("ports") or []
            tcp = [p["containerPort"] for p in ports if p.get("protocol", "TCP") == "TCP"]
            udp = [p["containerPort"] for p in ports if p.get("protocol") == "UDP"]
            request["builtin"] = {"name": hostname, "tcp": tcp if ports else [8080],
                                  "udp": udp if ports else [8081]}
        elif argv[0] == images.PAUSE:
            request["builtin"] = {"name": "pause", "title": "pause"}
        else:
            request["argv"] = argv
        return request

    def _logs(self, key: tuple[str, str], uid: str, container: str) -> Path:
        """Where a container's runs log, as the kubelet's /var/log/pods/<pod>/<container>/."""
        return self._pod_dir(key, uid) / "logs" / container

    def _run_log(self, box: Sandbox, c: Container) -> Path:
        """The log file of the container's run to come; of the runs before it only the last is kept."""
        folder = self._logs(box.key, box.uid, c.spec["name"])
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            run = old.name.split(".")[0]
            if run.isdigit() and int(run) < c.restarts - 1:
                old.unlink(missing_ok=True)
        return folder / f"{c.restarts}.log"

    def sandbox_of(self, namespace: str, name: str) -> Sandbox:
        """The sandbox of a pod running here; Unavailable (404) when there is none."""
        pod = self.pods.cache.get((namespace, name))
        box = self.sandboxes.get(pod["metadata"]["uid"]) if pod is not None else None
        if box is None:
            raise containers.Unavailable(f'pod "{name}" is not running on node "{self.node_name}"', 404)
        return box

    def _running(self, namespace: str, name: str, container: str) -> tuple[Sandbox, Container]:
        """A running container and its pod's sandbox; Unavailable in the kubelet's words when it
        does not run."""
        box = self.sandbox_of(namespace, name)
        c = box.container(container)
        if c is None or c.running is None or c.waiting or not c.running.alive():
            raise containers.Unavailable(f'container not found ("{container}")')
        return box, c

    def running(self, namespace: str, name: str, container: str) -> containers.Running:
        """A running container's process, for an exec."""
        return self._running(namespace, name, container)[1].running

    def attach_socket(self, namespace: str, name: str, container: str) -> str:
        """The attach socket of a running container's copier (containers.attach_name)."""
        box, c = self._running(namespace, name, container)
        return containers.attach_name(self._logs(box.key, box.uid, container) / f"{c.restarts}.log")

    def container_log(self, namespace: str, name: str, container: str, previous: bool
                      ) -> tuple[Path, Callable[[], bool]]:
        """The log file of a container's current run (or previous one), and whether that run still
        runs; an Unavailable worded as the kubelet's when there is none."""
        pod = self.pods.cache.get((namespace, name))
        if pod is None:
            raise containers.Unavailable(f'pod "{name}" is not on node "{self.node_name}"', 404)
        uid = pod["metadata"]["uid"]
        box = self.sandboxes.get(uid)
        c = box.container(container) if box is not None else None
        listed = container_statuses(pod)
        status = c.status() if c is not None else next((s for s in listed if s["name"] == container), None)
        folder = self._logs((namespace, name), uid, container)
        runs = sorted(int(p.name[:-4]) for p in folder.glob("*.log") if p.name[:-4].isdigit()) if folder.is_dir() else []
        run = logs.chosen_run(status or {}, runs, previous, container, name)
        current = c.running if c is not None and not previous and run == runs[-1] else None
        return folder / f"{run}.log", lambda: current is not None and current.alive()

    def pod_cgroups(self) -> list[stats.PodCgroup]:
        """The cgroups of the pods here and of their running containers, for the stats."""
        return [stats.PodCgroup(box.key[0], box.key[1], box.uid, self._cgroup(box), box.started_at, tuple(
                    stats.ContainerCgroup(c.spec["name"], self._cgroup(box, c), c.running.started_at)
                    for c in box.every.values() if c.running is not None))
                for box in list(self.sandboxes.values())]

    def _cgroup(self, box: Sandbox, c: Container | None = None) -> str:
        """The pod's cgroup (below the node's, as the kubelet's pod<uid>), or one of its containers'."""
        pod = f"{self.cgroup_scope}/pod{box.uid}"
        return f"{pod}/{c.spec['name']}" if c is not None else pod

    async def _cgroup_for(self, box: Sandbox, c: Container) -> list[str]:
        """A fresh cgroup for the container's next run, with its limits; the files its process
        joins it by (none on a machine without the cgroup hierarchies, where a container with
        limits cannot be started)."""
        resources = c.spec.get("resources") or {}
        if not self.has_cgroups:
            if resources.get("limits"):
                raise images.ImageError("resources.limits need the cgroup v1 memory, cpu, cpuacct and pids "
                                        "hierarchies in /sys/fs/cgroup, which this machine lacks",
                                        reason="CreateContainerError")
            return []
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        wanted = cgroups.Limits(
            memory=int(podenv.quantity(limits["memory"])) if "memory" in limits else None,
            cpu_millis=round(podenv.quantity(limits["cpu"]) * 1000) if "cpu" in limits else None,
            cpu_request_millis=round(podenv.quantity(requests.get("cpu", limits.get("cpu", "0"))) * 1000))
        relative = self._cgroup(box, c)
        if c.restarts or c.last is not None:  # what its last run left counts no more
            await asyncio.to_thread(cgroups.remove, relative)
        return cgroups.create(relative, wanted)  # a dozen small writes: no thread hop

    def _ended(self, box: Sandbox, c: Container, code: int | None, started: str) -> dict:
        """lastState.terminated of a run that ended with ``code``: OOMKilled when the kernel's OOM
        killer ended it in its cgroup."""
        oom = code == 128 + 9 and self.has_cgroups and cgroups.oom_kills(self._cgroup(box, c)) > 0
        return _terminated(code, started, "OOMKilled" if oom else "")

    async def _objects(self, pod: dict, wanted: set[tuple[str, str]]) -> podenv.Lookup:
        """The ConfigMaps and Secrets (plural, name) of the pod's namespace that it names, as the
        kubelet's watch-based manager has them: from the watched cache, or asked of the API server
        when the cache has not seen one (made a moment ago)."""
        namespace, found = pod["metadata"]["namespace"], {}
        for plural, name in wanted:
            watched = self.config_objects[plural]
            cached = watched.cache.get((namespace, name)) if watched.synced.is_set() else None
            if cached is None:
                try:
                    cached = await self.client.get(plural, name, namespace)
                except ApiError as err:
                    if err.code != 404:
                        raise
                    continue
            found[(plural, name)] = cached
        return lambda plural, name: found.get((plural, name))

    async def _run(self, pod: dict, box: Sandbox, c: Container, prepared: dict[str, str]) -> None:
        """Start the container's process; raises when it cannot be."""
        request = await self._container_request(pod, box, c, prepared)
        name, where = c.spec["name"], _field_path(pod, c.spec["name"])
        if self.catalog.find(c.spec.get("image", "")) is not None:  # nothing is pulled: the catalog has it
            self.events.record(pod, NORMAL, "Pulled", f'Container image "{c.spec.get("image")}" already present '
                                                      "on machine", where)
        c.fresh_probes()
        try:
            c.running = await self.launcher.start(request, time_text())
        except containers.StartFailed as err:
            self.events.record(pod, WARNING, "Failed", f"Error: {err}", where)
            raise
        self.events.record(pod, NORMAL, "Created", f"Created container: {name}", where)
        self.events.record(pod, NORMAL, "Started", f"Started container {name}", where)
        hook = (c.spec.get("lifecycle") or {}).get("postStart")  # the container is not running until it returns
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if hook and not await probes.run_hook(hook, c.spec, box.ip, self.node_netns, c.running.pid, grace):
            self.events.record(pod, WARNING, "FailedPostStartHook", f"PostStartHook failed in container {name}",
                               where)
            await containers.stop(c.running, grace, self.catalog.stop_signal(c.spec))  # restarted as its policy says
        c.waiting, c.message = "", ""
        self._save(box)

    async def _supervise(self, pod: dict, box: Sandbox, c: Container, prepared: dict[str, str], policy: str) -> None:
        """Run a container, and again after it ends as ``policy`` says (the pod's restartPolicy; an
        init container's own), with upstream's back-offs: CrashLoopBackOff (the first restart at
        once, then 10 s doubling to 5 min, from the start again after 10 min of running),
        ImagePullBackOff, CreateContainerConfigError; returns once it has ended for good."""
        backoff, crashed_before = BACKOFF_START, False
        clock = asyncio.get_running_loop().time
        while True:
            if c.running is None:
                try:
                    await self._run(pod, box, c, prepared)
                except images.ImageError as err:
                    c.waiting, c.message = err.reason, str(err)
                    where = _field_path(pod, c.spec["name"])
                    self.events.record(pod, WARNING, "Failed", str(err), where)
                    await self.loop.trigger()
                    await asyncio.sleep(1.0)
                    if err.reason == "ErrImagePull":
                        c.waiting, c.message = "ImagePullBackOff", f'Back-off pulling image "{c.spec.get("image")}"'
                        self.events.record(pod, NORMAL, "BackOff", c.message, where)
                        await self.loop.trigger()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                except podenv.ConfigError as err:
                    c.waiting, c.message = "CreateContainerConfigError", str(err)
                    await self.loop.trigger()
                    await asyncio.sleep(BACKOFF_START)
                    continue
                except containers.StartFailed as err:
                    code, record = START_ERROR_CODE, _terminated(START_ERROR_CODE, time_text(), err.reason, str(err))
                else:
                    await self.loop.trigger()
                    ran_from = clock()
                    code = await c.running.wait()
                    record = self._ended(box, c, code, c.running.started_at)
                    if clock() - ran_from >= BACKOFF_RESET:
                        backoff, crashed_before = BACKOFF_START, False
            else:  # adopted from an earlier run of the agent
                code = await c.running.wait()
                record = self._ended(box, c, code, c.running.started_at)
            c.running = None
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                c.terminated, c.waiting = record, "Completed"
                await self.loop.trigger()
                return
            c.last = record
            if crashed_before:
                c.waiting = "CrashLoopBackOff"
                c.message = (f"back-off {int(backoff)}s restarting failed container={c.spec['name']} "
                             f"pod={box.key[1]}_{box.key[0]}({box.uid})")
                self.events.record(pod, WARNING, "BackOff", f"Back-off restarting failed container {c.spec['name']} "
                                   f"in pod {box.key[1]}_{box.key[0]}({box.uid})", _field_path(pod, c.spec["name"]))
                await self.loop.trigger()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            crashed_before = True
            c.restarts += 1

    async def _probe_loop(self, pod: dict, box: Sandbox, c: Container, kind: str) -> None:
        """One kind of probe of a container, every periodSeconds of each run, after its initial
        delay: startup until it passes (the others wait for it), then liveness and readiness.
        Readiness decides whether the container is ready; startup and liveness end it after
        failureThreshold failures in a row (SIGTERM, SIGKILL after its grace period), and it is
        restarted as its restartPolicy says."""
        spec = c.spec[f"{kind}Probe"]
        period, run = float(spec.get("periodSeconds", 10)), None
        while True:
            if c.running is not run:
                run = c.running
                if run is not None:
                    await asyncio.sleep(float(spec.get("initialDelaySeconds", 0)))
            waiting = (kind == "startup") == c.started_ok  # startup before the others, never after
            if run is None or run is not c.running or c.waiting or waiting:
                await asyncio.sleep(min(period, 1.0))
                continue
            ok = await probes.run_probe(spec, c.spec, box.ip, self.node_netns, run.pid)
            state = c.probes[kind]
            changed = state.record(ok)
            if kind == "readiness" and changed:
                box.ready_since = time_text()
                await self.loop.trigger()
            elif kind == "startup" and state.ready:
                c.started_ok = True
                await self.loop.trigger()
                continue
            elif kind != "readiness" and not ok and state.streak >= int(spec.get("failureThreshold", 3)):
                where = _field_path(pod, c.spec["name"])
                self.events.record(pod, WARNING, "Unhealthy", f"{kind.capitalize()} probe failed", where)
                self.events.record(pod, NORMAL, "Killing", f"Container {c.spec['name']} failed {kind} probe, "
                                                           "will be restarted", where)
                grace = spec.get("terminationGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
                log.info("kubelet/%s: pod %s/%s: container %s failed its %s probe; restarting it", self.node_name,
                         *box.key, c.spec["name"], kind)
                await self._stop(box, c, float(grace))
                continue
            await asyncio.sleep(period)

    async def _stop(self, box: Sandbox, c: Container, grace: float) -> None:
        """Stop a container as the kubelet does: its preStop hook first (unless the grace period is
        0), then its image's stop signal (SIGTERM but for a few), and SIGKILL once the grace period
        is over (at least 2 s after a hook that took it all, as upstream's minimum)."""
        run = c.running
        if run is None:
            return
        hook = (c.spec.get("lifecycle") or {}).get("preStop")
        if hook and grace > 0 and run.alive():
            clock = asyncio.get_running_loop().time
            began = clock()
            if not await probes.run_hook(hook, c.spec, box.ip, self.node_netns, run.pid, grace):
                self.events.record(box.ref, WARNING, "FailedPreStopHook",
                                   f"PreStopHook failed in container {c.spec['name']}")
            grace = max(grace - (clock() - began), 2.0)
        await containers.stop(run, grace, self.catalog.stop_signal(c.spec))

    async def _retire(self, box: Sandbox) -> None:
        async with self._lock(box.key):
            await self._teardown(box, grace=0)
            self.sandboxes.pop(box.uid, None)

    async def _terminate(self, box: Sandbox, pod: dict | None) -> None:
        grace = pod["metadata"].get("deletionGracePeriodSeconds", 30) if pod else 0
        for c in box.every.values():
            if c.running is not None and pod is not None:
                self.events.record(pod, NORMAL, "Killing", f"Stopping container {c.spec['name']}",
                                   _field_path(pod, c.spec["name"]))
        async with self._lock(box.key):
            await self._teardown(box, grace)
            self.sandboxes.pop(box.uid, None)
        if pod is not None:
            try:  # as it is now: conditions others wrote meanwhile (DisruptionTarget) are kept
                current = await self.client.get("pods", pod["metadata"]["name"], pod["metadata"]["namespace"])
            except ApiError as err:
                if err.code != 404:
                    raise
                current = None
            if current is not None and current["metadata"]["uid"] == pod["metadata"]["uid"] and \
                    (current.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                await self._write_status(current, terminal_status(box, self.host_ip))
            await self._finalize(pod)

    async def _finalize(self, pod: dict) -> None:
        """Delete the pod's files, and its object for good (grace 0), once nothing of it runs here."""
        meta = pod["metadata"]
        await asyncio.to_thread(shutil.rmtree, self._pod_dir((meta["namespace"], meta["name"]), meta["uid"]), True)
        try:
            await self.client.delete("pods", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                     grace_period_seconds=0, preconditions={"uid": pod["metadata"]["uid"]})
        except ApiError as err:
            if err.code not in (404, 409):  # gone, or a new pod of the name (a StatefulSet's) is not ours to delete
                raise

    async def _teardown(self, box: Sandbox, grace: float) -> None:
        for task in box.tasks:
            task.cancel()
        # app and ephemeral containers first, then the sidecars, as upstream stops a pod
        await asyncio.gather(*(self._stop(box, c, grace) for c in [*box.containers.values(), *box.ephemeral.values()]
                               if c.running))
        await asyncio.gather(*(self._stop(box, c, grace) for c in box.init.values() if c.running))
        if box.pause is not None:  # the sandbox goes at once, as runtimes stop it
            await containers.stop(box.pause, 0)
        if self.has_cgroups:
            await asyncio.to_thread(cgroups.remove, self._cgroup(box))
        if self.cni_conf is not None:
            await self.runtime.delete(self.cni_conf, Attachment(box.uid, netns.path(box.netns)), box.capabilities)
        await asyncio.to_thread(netns.kill_all_in, [box.netns])
        await asyncio.to_thread(netns.delete, box.netns)

    async def _report_failure(self, pod: dict, message: str) -> None:
        ts = time_text()
        conditions = [{"type": t, "status": "False", "reason": "ContainerCreating", "message": message,
                       "lastTransitionTime": ts} for t in ("ContainersReady", "Ready")]
        await self._write_status(pod, {"phase": "Pending", "conditions": conditions})

    async def _write_status(self, pod: dict, status: dict) -> None:
        """Write the status the kubelet computed, keeping the conditions others own (DisruptionTarget)."""
        mine = {c["type"] for c in status.get("conditions") or []}
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") not in mine
                  and c.get("type") not in KUBELET_CONDITIONS]
        if others:
            status = {**status, "conditions": [*(status.get("conditions") or []), *others]}
        try:
            await write_status(self.client, "pods", pod, status, merge=False)
        except ApiError as err:  # deleted meanwhile: the next pass sees it
            if err.code != 404:
                raise
