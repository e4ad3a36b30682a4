"""The node agent: kubelet (pods through CNI), overlay (flannel-like VXLAN), proxy (kube-proxy) and
NetworkPolicy enforcement, knowing its node only through the API. In an emulated lab it runs for a
node namespace (`netns`); on a real host `netns` is None and it acts on the host's own namespace."""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import platform
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from netplane import names
from netplane.agent import overlay, stats
from netplane.agent.kubelet import Kubelet
from netplane.agent.kubelet_server import KubeletServer, tls_context
from netplane.agent.policy.enforcer import PolicyEnforcer
from netplane.agent.proxy.proxier import Proxier
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL
from netplane.api.informer import Informers
from netplane.api.kubelets import KUBELET_PORT
from netplane.api.loop import Reconciler
from netplane.api import objects
from netplane.api.quantity import parse as quantity
from netplane.api.times import micro_time_text, time_text
from netplane.cni.runtime import Runtime, conf_from_file, load_conf_dir, plugin_dir
from netplane.kernel import links, netns

log = logging.getLogger(__name__)
VERSION = names.KUBERNETES_VERSION[2]
REFERENCE_PLUGIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# the reference portmap plugin: DNATs a pod's hostPorts, from the portMappings capability args
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}
RENEW_RETRY = 0.2  # seconds before the first retry of a Lease renewal that failed
DEFAULT_CLUSTER_DNS = "10.96.0.10"  # the 10th address of the default service CIDR, as kubeadm sets it
CONF_NAME = "10-netplane.conflist"  # the node's CNI config, in its state directory (its /etc/cni/net.d)


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    netns: str | None
    pod_netns_prefix: str
    state_dir: Path
    cluster_cidr: str
    lease_seconds: int = 40
    resync_seconds: float = 30.0  # how often the proxy and the overlay check the kernel against what they wrote
    labels: dict[str, str] = field(default_factory=dict)  # kubelet's --node-labels
    capacity: dict[str, str] = field(default_factory=dict)  # cpu, memory, pods reported instead of the machine's
    iface: str = names.UNDERLAY_IF
    proxy_mode: str = "nftables"  # kube-proxy's --proxy-mode
    iptables_backend: str = "nft"  # with proxy_mode iptables: nft or legacy
    cni: str = "netplane"  # netplane, reference, or the path of a conflist with {{podCIDR}} placeholders
    holder: str = ""  # the holderIdentity of the node's Lease (default: the node's name)
    cluster_dns: tuple[str, ...] = (DEFAULT_CLUSTER_DNS,)  # kubelet's --cluster-dns
    cluster_domain: str = names.CLUSTER_DOMAIN  # kubelet's --cluster-domain: pods' search path and subdomain names
    resolv_conf: str = "/etc/resolv.conf"  # kubelet's --resolv-conf: the node's own, for dnsPolicy Default
    images: dict[str, dict] = field(default_factory=dict)  # the lab's additions to the image catalog
    client_ca: str = ""  # kubelet's --client-ca-file: whose client certificates its port accepts (none: no port)
    kubelet_port: int = KUBELET_PORT


def cni_config(pod_cidr: str, mtu: int, data_dir: Path) -> dict:
    """The conflist the kubelet hands to CNI, shaped like flannel's (bridge cni0 + host-local)."""
    return {
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "plugins": [{
            "type": "netplane-bridge",
            "bridge": names.BRIDGE_IF,
            "isGateway": True,
            "isDefaultGateway": True,
            "hairpinMode": True,
            "mtu": mtu,
            "ipam": {"type": "netplane-host-local", "ranges": [[{"subnet": pod_cidr}]], "dataDir": str(data_dir)},
        }],
    }


def reference_config(pod_cidr: str, mtu: int, data_dir: Path) -> dict:
    """cni_config's network on Debian's reference plugins: bridge + host-local, then portmap."""
    conf = cni_config(pod_cidr, mtu, data_dir)
    bridge = conf["plugins"][0]
    bridge = bridge | {"type": "bridge", "ipam": bridge["ipam"] | {"type": "host-local"}}
    return conf | {"plugins": [bridge, copy.deepcopy(PORTMAP)]}


def fill(value: object, values: dict[str, object]) -> object:
    """value with every "{{key}}" in its strings replaced by values[key]; a string that is nothing
    but one placeholder becomes the value itself (so "mtu": "{{mtu}}" becomes a number)."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, str):
        for key, replacement in values.items():
            if value == f"{{{{{key}}}}}":
                return replacement
            value = value.replace(f"{{{{{key}}}}}", str(replacement))
    return value


def network_config(cni: str, pod_cidr: str, mtu: int, data_dir: Path) -> dict:
    """The node's conflist for the lab's `cni`: netplane's plugins (with the reference portmap after
    them when installed, for hostPorts), the reference plugins, or a conflist file whose {{podCIDR}},
    {{dataDir}} and {{mtu}} are filled in for this node."""
    if cni == "netplane":
        conf = cni_config(pod_cidr, mtu, data_dir)
        if Path(REFERENCE_PLUGIN_DIR, PORTMAP["type"]).exists():
            conf["plugins"].append(copy.deepcopy(PORTMAP))
        return conf
    if cni == "reference":
        return reference_config(pod_cidr, mtu, data_dir)
    return fill(conf_from_file(Path(cni)), {"podCIDR": pod_cidr, "dataDir": str(data_dir), "mtu": mtu})


def node_object(name: str, ip: str, labels: dict[str, str], kubelet_port: int = KUBELET_PORT,
                given: dict[str, str] | None = None) -> dict:
    """The Node the kubelet registers: ``given`` capacity (cpu, memory, pods) in place of the machine's."""
    machine = capacity() | (given or {})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", **labels}},
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [ready_condition(False, "KubeletNotReady", "network not ready: waiting for a podCIDR")],
            "capacity": machine, "allocatable": allocatable(machine),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": node_info(name),
        },
    }


def _first_line(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return default


def node_info(name: str) -> dict:
    """The kubelet's NodeSystemInfo. Every emulated node is a machine of its own, so its machineID
    and systemUUID are derived from the host's and the node's name; they share the host's kernel,
    so its bootID is the host's."""
    boot = _first_line("/proc/sys/kernel/random/boot_id")
    machine = uuid.uuid5(uuid.NAMESPACE_OID, f"{_first_line('/etc/machine-id') or boot}/{name}")
    return {"machineID": machine.hex, "systemUUID": str(machine), "bootID": boot, "kernelVersion": platform.release(),
            "osImage": os_image(), "containerRuntimeVersion": "netplane://0.1.0", "kubeletVersion": VERSION,
            "kubeProxyVersion": VERSION, "operatingSystem": "linux", "architecture": "amd64"}


def capacity() -> dict[str, str]:
    """What the kubelet reports for the machine: its CPUs, memory and root filesystem, 110 pods."""
    memory_kib = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    disk = os.statvfs("/")
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki",
            "ephemeral-storage": f"{disk.f_blocks * disk.f_frsize // 1024}Ki",
            "hugepages-1Gi": "0", "hugepages-2Mi": "0", "pods": str(names.KUBELET_MAX_PODS)}


def allocatable(found: dict[str, str]) -> dict[str, str]:
    """capacity less the kubelet's default hard eviction thresholds: memory.available<100Mi,
    nodefs.available<10%."""
    memory = (int(quantity(found["memory"])) - names.EVICTION_MEMORY) // 1024
    storage = int(found["ephemeral-storage"].removesuffix("Ki")) * 9 // 10
    return found | {"memory": f"{memory}Ki", "ephemeral-storage": f"{storage}Ki"}


def os_image() -> str:
    """The host's PRETTY_NAME from /etc/os-release, as the kubelet reports it."""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def ready_condition(ready: bool, reason: str, message: str) -> dict:
    ts = time_text()
    return {"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message,
            "lastHeartbeatTime": ts, "lastTransitionTime": ts}


class NodeAgent:
    """informers: shared with the other agents of one process (and run by its owner); without them
    the agent has its own, and runs them."""

    def __init__(self, client, config: AgentConfig, informers: Informers | None = None) -> None:
        self.client, self.config = client, config
        self.own_informers = informers is None
        self.informers = Informers(client) if informers is None else informers
        self.nodes = self.informers.get("nodes")
        self.ip, self.underlay_mtu = "", 0
        self.runtime = Runtime([plugin_dir(), REFERENCE_PLUGIN_DIR], str(config.state_dir / "cni-cache"),
                               exec_netns=config.netns, negotiate=True)
        self.kubelet = Kubelet(self.informers, config.node_name, config.netns, config.pod_netns_prefix,
                               config.state_dir, self.runtime, config.resync_seconds, config.cluster_dns,
                               config.resolv_conf, config.images, config.cluster_domain)
        self.proxy = Proxier(self.informers, config.node_name, config.netns, config.cluster_cidr, mode=config.proxy_mode,
                             iptables_backend=config.iptables_backend, resync_seconds=config.resync_seconds)
        self.policy = PolicyEnforcer(self.informers, config.node_name, config.netns, config.resync_seconds)
        # a pass at least every resync period, changes or not: the device or an entry lost behind
        # the agent's back comes back even when no Node changes
        self.overlay_loop = Reconciler(f"overlay/{config.node_name}", self.sync_overlay, resync=config.resync_seconds)
        self.nodes.add_handler(self.overlay_loop.trigger)
        self.vtep_mac: str | None = None
        self.overlay_applied: overlay.OverlayState | None = None
        self.overlay_checked = 0.0

    @property
    def mtu(self) -> int:
        return self.underlay_mtu - names.VXLAN_OVERHEAD

    def me(self) -> dict | None:
        return self.nodes.cache.get(("", self.config.node_name))

    async def register(self) -> None:
        try:
            await self.client.create("nodes", node_object(self.config.node_name, self.ip, self.config.labels,
                                                          self.config.kubelet_port, self.config.capacity))
        except ApiError as err:  # an existing Node is adopted
            if err.code != 409:
                raise

    async def sync_overlay(self) -> None:
        node = self.me()
        if node is None or not node.get("spec", {}).get("podCIDR"):
            return
        cidr = node["spec"]["podCIDR"]
        # with N nodes every Node event reaches N agents, so reading the kernel on each one costs
        # O(N^2) netlink dumps: between reads (at least every resync period) an event that changes
        # no peer changes nothing, and one that does writes only its difference
        clock = asyncio.get_running_loop().time
        recent = self.overlay_applied if clock() < self.overlay_checked + self.config.resync_seconds else None
        if self.vtep_mac is None or recent is None:  # a read of the kernel: flannel.1 itself first
            self.vtep_mac = await asyncio.to_thread(overlay.ensure_device, self.config.netns, self.ip, cidr, self.mtu)
        await self._publish(node, cidr)
        want = overlay.desired(overlay.peers(list(self.nodes.cache.values()), self.config.node_name))
        if want == recent:
            return
        self.overlay_applied = None  # a failed write below: the next pass reads the kernel
        self.overlay_applied = await asyncio.to_thread(overlay.apply, self.config.netns, want, recent)
        if recent is None:
            self.overlay_checked = clock()

    async def _publish(self, node: dict, cidr: str) -> None:
        """Flannel's annotations, the CNI config, then Ready (in that order, as on a real node)."""
        notes = overlay.annotations(self.vtep_mac, self.ip)
        if any(node["metadata"].get("annotations", {}).get(k) != v for k, v in notes.items()):
            node = copy.deepcopy(node)
            node["metadata"].setdefault("annotations", {}).update(notes)
            node = await self.client.update("nodes", node)
        if self.kubelet.cni_conf is None:
            conf = network_config(self.config.cni, cidr, self.mtu, self.config.state_dir / "ipam")
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            (self.config.state_dir / CONF_NAME).write_text(json.dumps(conf, indent=2))
            conf = load_conf_dir(self.config.state_dir)  # read back as a CRI runtime reads /etc/cni/net.d
            await self.runtime.validate(conf)  # a plugin missing or of the wrong version: not Ready, say why
            self.kubelet.cni_conf = conf
            await self.kubelet.loop.trigger()
        if not objects.ready(node):
            node = copy.deepcopy(node)
            node["metadata"].pop("resourceVersion", None)
            node["status"]["conditions"] = [ready_condition(True, "KubeletReady", "kubelet is posting ready status")]
            await self.client.update_status("nodes", node)
            self.kubelet.events.record(node, NORMAL, "NodeReady", f"Node {self.config.node_name} status is now: "
                                                                  "NodeReady")

    async def renew(self) -> None:
        name = self.config.node_name
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": names.LEASE_NAMESPACE},
                 "spec": {"holderIdentity": self.config.holder or name,
                          "leaseDurationSeconds": self.config.lease_seconds,
                          "renewTime": micro_time_text()}}
        try:
            await self.client.update("leases", lease)
        except ApiError as err:
            if err.code != 404:
                raise
            await self.client.create("leases", lease)

    async def heartbeat(self) -> None:
        """Renew the node's Lease every quarter of its duration, as the kubelet does. While the API
        server cannot be reached the renewal is retried sooner (from RENEW_RETRY s, doubling) and
        nothing else changes: pods, overlay and rules stay as they are until the server is back."""
        interval = self.config.lease_seconds / 4
        retry = RENEW_RETRY
        while True:
            try:
                await self.renew()
            except (ApiError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
                log.warning("node %s: cannot renew its Lease (%r); retrying in %.1fs", self.config.node_name,
                            err, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, interval)
                continue
            retry = RENEW_RETRY
            await asyncio.sleep(interval)

    async def run(self) -> None:
        self.ip, self.underlay_mtu = await asyncio.to_thread(links.ipv4_and_mtu, self.config.netns,
                                                             self.config.iface)
        self.kubelet.host_ip = self.ip
        port = None
        if self.config.client_ca:  # before the Node says where it is
            port = netns.listener_in(self.config.netns, "0.0.0.0", self.config.kubelet_port)  # every address
            context = await asyncio.to_thread(tls_context, self.config.state_dir / "pki", self.ip,
                                              self.config.node_name, self.config.client_ca)
        await self.register()
        # a task group, not gather: when one part fails the others are cancelled with it, so a
        # restart of run() never leaves a second copy of a loop behind
        async with asyncio.TaskGroup() as group:
            if self.own_informers:
                group.create_task(self.informers.run())
            for loop in (self.overlay_loop, self.kubelet.loop, self.kubelet.network_loop, self.proxy.loop,
                         self.policy.loop):
                group.create_task(loop.run())
            group.create_task(self.heartbeat())
            if port is not None:
                memory = int(quantity((capacity() | self.config.capacity)["memory"]))
                summaries = stats.Stats(self.config.node_name, self.kubelet.cgroup_scope, memory, time_text())
                group.create_task(KubeletServer(self.kubelet, summaries).serve(port, context))
