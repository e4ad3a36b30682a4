"""The lab file: parsed into frozen dataclasses and refused, naming the field, before anything is made.

```yaml
name: netplane                  # lab name: [a-z0-9-], at most 32 characters
nodes: [node-1, node-2]         # node names (DNS labels), or a number of nodes, or
                                #   [{name: node-1, labels: {topology.kubernetes.io/zone: a},
                                #     capacity: {cpu: "2", memory: 4Gi, pods: "20"}}, ...]
                                #   (capacity: what the node's kubelet reports; the machine's by default)
network:
  underlay: 172.30.0.0/24       # the switch every node's eth0 is on
  clusterCIDR: 10.244.0.0/16    # pod addresses, one /24 per node
  serviceCIDR: 10.96.0.0/16     # ClusterIPs
  proxyMode: nftables           # nftables | iptables (kube-proxy's two Linux modes)
  iptablesBackend: nft          # iptables mode's tools: nft (iptables-nft, as on Debian 12 and
                                #   current distros; nft tracing sees its rules) or legacy
                                #   (x_tables: a first sync of 10,000 Services takes 2.8 s, 140 s with nft)
  cni: netplane                 # netplane (its bridge + host-local, then the reference portmap),
                                #   reference (Debian's bridge + host-local + portmap, /usr/lib/cni), or
                                #   a conflist file (relative to the lab file) with "{{podCIDR}}" where
                                #   each node's pod range goes ({{dataDir}} and {{mtu}} are filled too)
  dnsDomain: cluster.local      # the cluster's domain: Service names, pods' search path, the Corefile's
                                #   zone, the API certificate and the tokens' issuer (kubeadm's dnsDomain)
controlPlane:
  mode: embedded                # embedded: one process runs the API server, controllers and every
                                #   node agent; hosts: `netplane server` runs in its own host cp-1
                                #   (172.30.0.3:6443) and each node runs `netplane agent`, joined with a
                                #   bootstrap token over TLS, as on real machines
manifests: [demo.yaml]          # applied once the lab is up, relative to the lab file
addons: [dns]                   # add-ons deployed before the manifests, as kubeadm deploys them: dns
                                #   (the default: CoreDNS's Deployment and the kube-dns Service in
                                #   kube-system); [] for none
dns:                            # with the dns add-on: the lab's own names, answered to every pod
  hosts: {registry.lab: 172.30.0.2}   #   (the Corefile's hosts block), and a log line per query
  log: false
nodeLeaseSeconds: 40            # a node whose agent has not renewed its Lease for this long is NotReady
nodeResyncSeconds: 30           # how often each node agent checks the kernel against what it wrote
                                #   (proxy rules, flannel.1 and its routes, FDB and ARP) and repairs it
storage: sqlite                 # sqlite (a file in the lab's state directory) or etcd://host:port[,host:port]
audit:                          # the API server's audit log (audit.k8s.io/v1 Events, JSON lines) in the lab's
  level: None                   #   state (audit.log; a server host's own with mode hosts): None, Metadata,
  stdout: false                 #   Request or RequestResponse; stdout: also to the control plane's log
images:                         # images beyond the built-in catalog (netplane/agent/images.py): by name,
  example.com/shop/api:         #   or a prefix ending in *; what the image would run, from this machine's
    entrypoint: [python3, -m, http.server]   # programs (ENTRYPOINT)
    cmd: ["8080"]               # CMD; also env: {KEY: value}, workingDir: /srv and stopSignal: SIGQUIT
```
"""
from __future__ import annotations

import ipaddress
import re
import signal
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from netplane import names
from netplane.api import audit, quantity
from netplane.cni.runtime import CNIError, conf_from_file

MAX_NODES = 200
MAX_PODS = names.KUBELET_MAX_PODS
MIN_NODE_MEMORY = 128 * 2**20
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
ETCD_URL = re.compile(r"^etcd://[A-Za-z0-9.\-]+:\d+(,[A-Za-z0-9.\-]+:\d+)*(/[\w/\-]*)?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
PROXY_MODES = ("nftables", "iptables")
IMPLEMENTED_PROXY_MODES = ("nftables", "iptables")  # the modes the agents run (tests parametrize on it)
IPTABLES_BACKENDS = ("nft", "legacy")
CONTROL_PLANE_MODES = ("embedded", "hosts")
CONTROL_PLANE_STORAGE = ("sqlite", "etcd")
MAX_REPLICAS = 5
CNI_KINDS = ("netplane", "reference")  # network.cni's names; any other value is a conflist file
POD_CIDR_PLACEHOLDER = "{{podCIDR}}"  # in a conflist file: where a node's podCIDR goes
NODE_SUBNET_PREFIX = 24
FIRST_NODE_HOST = 11  # node-1 is 172.30.0.11: .1-.10 stay free for clients and control planes


class LabError(ValueError):
    """A lab file that cannot be used; the message names the field and the fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"lab file: {field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Network:
    underlay: str = "172.30.0.0/24"
    clusterCIDR: str = "10.244.0.0/16"
    serviceCIDR: str = "10.96.0.0/16"
    proxyMode: str = "nftables"
    loadBalancerPool: str = "172.30.1.0/24"
    iptablesBackend: str = "nft"
    cni: str = "netplane"  # a name of CNI_KINDS, or the absolute path of a conflist file
    dnsDomain: str = names.CLUSTER_DOMAIN  # the cluster's domain (kubeadm's networking.dnsDomain)


@dataclass(frozen=True)
class Dns:
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    log: bool = False


@dataclass(frozen=True)
class Audit:
    level: str = "None"
    stdout: bool = False


@dataclass(frozen=True)
class ControlPlane:
    mode: str = "embedded"
    replicas: int = 1
    storage: str = "sqlite"  # with mode hosts: sqlite (in the server's host) or etcd (a member in each host)


@dataclass(frozen=True)
class Lab:
    name: str = "netplane"
    nodes: tuple[str, ...] = ("node-1", "node-2")
    network: Network = field(default_factory=Network)
    manifests: tuple[str, ...] = ()
    nodeLeaseSeconds: int = 40
    nodeResyncSeconds: int = 30
    storage: str = "sqlite"
    nodeLabels: dict[str, dict[str, str]] = field(default_factory=dict)  # from nodes[].labels
    nodeCapacity: dict[str, dict[str, str]] = field(default_factory=dict)  # from nodes[].capacity
    controlPlane: ControlPlane = field(default_factory=ControlPlane)
    images: dict[str, dict] = field(default_factory=dict)  # additions to the image catalog
    addons: tuple[str, ...] = ("dns",)
    dns: Dns = field(default_factory=Dns)
    audit: Audit = field(default_factory=Audit)

    def node_ip(self, node: str) -> str:
        """The node's underlay address: .11 for the first node, .12 for the second, ..."""
        net = ipaddress.ip_network(self.network.underlay)
        return str(net.network_address + FIRST_NODE_HOST + self.nodes.index(node))

    @property
    def underlay_gateway(self) -> str:
        """The nodes' default gateway: .1 of the underlay, an address no lab host holds."""
        return str(ipaddress.ip_network(self.network.underlay).network_address + 1)

    @property
    def control_plane_ips(self) -> list[str]:
        """The control-plane hosts' addresses (controlPlane.mode hosts): .3, .4, ... of the underlay."""
        base = ipaddress.ip_network(self.network.underlay).network_address + 3
        return [str(base + i) for i in range(self.controlPlane.replicas)]

    @property
    def client_ip(self) -> str:
        """The underlay client's address: .2 of the underlay."""
        return str(ipaddress.ip_network(self.network.underlay).network_address + 2)

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.ip_network(self.network.underlay).prefixlen

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_keys(data: dict, allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise LabError(f"{where}{key}", f"unknown field; the known fields are {known}")


def _cidr(value: Any, field_name: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise LabError(field_name, f"{value!r} is not an IPv4 network; write it like 10.244.0.0/16") from None
    if net.version != 4:
        raise LabError(field_name, f"{value!r} is IPv6; this version of netplane builds IPv4 labs")
    kind = next((k for k, is_kind in (("loopback", net.is_loopback), ("link-local", net.is_link_local),
                                      ("multicast", net.is_multicast), ("reserved", net.is_reserved),
                                      ("unspecified", net.network_address.is_unspecified)) if is_kind), None)
    if kind:  # the kernel will not route such addresses between namespaces: traffic would die quietly
        raise LabError(field_name, f"{value} is a {kind} range, which the kernel does not route between "
                                   "hosts; choose a private range such as 172.30.0.0/24 or 10.244.0.0/16")
    return net


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise LabError(where, "give a mapping of label keys to values")
    for key, text in value.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise LabError(f"{where}.{key}", "is not a label key (an optional DNS prefix and '/', then a name)")
        if not isinstance(text, str) or not LABEL_VALUE.match(text):
            raise LabError(f"{where}.{key}", f"{text!r} is not a label value (63 letters, digits, '-', '_', '.')")
    return dict(value)


CAPACITY_KEYS = ("cpu", "memory", "pods")


def _capacity(value: Any, where: str) -> dict[str, str]:
    """A node's cpu, memory and pods, as quantities the kubelet would report."""
    if not isinstance(value, dict):
        raise LabError(where, 'give a mapping such as {cpu: "2", memory: 4Gi, pods: "20"}')
    out = {}
    for key, text in value.items():
        if key not in CAPACITY_KEYS:
            raise LabError(f"{where}.{key}", f"unknown resource; give {', '.join(CAPACITY_KEYS)}")
        try:
            number = quantity.parse(text)
        except ValueError:
            raise LabError(f"{where}.{key}", f"{text!r} is not a quantity (e.g. 2, 500m, 4Gi)") from None
        if number <= 0 or (key == "pods" and (number != int(number) or number > MAX_PODS)):
            raise LabError(f"{where}.{key}", f"{text!r}: give a positive amount" +
                           (f", a whole number up to {MAX_PODS}" if key == "pods" else ""))
        if key == "memory" and number < MIN_NODE_MEMORY:
            raise LabError(f"{where}.{key}", f"{text!r}: a node needs more than the kubelet's 100Mi eviction "
                                             "threshold; give at least 128Mi")
        out[key] = str(text)
    return out


def _nodes(value: Any) -> tuple[tuple[str, ...], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Node names, the labels each node registers with (kubelet's --node-labels), and the capacity
    each reports."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_NODES:
            raise LabError("nodes", f"{value} nodes: give between 1 and {MAX_NODES}")
        return tuple(f"node-{i}" for i in range(1, value + 1)), {}, {}
    if not isinstance(value, list) or not value:
        raise LabError("nodes", "give a list of node names, e.g. [node-1, node-2], or a number")
    if len(value) > MAX_NODES:
        raise LabError("nodes", f"{len(value)} nodes: give between 1 and {MAX_NODES}")
    found: list[str] = []
    labels: dict[str, dict[str, str]] = {}
    capacity: dict[str, dict[str, str]] = {}
    for i, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(item, dict):
            _require_keys(item, {"name", "labels", "capacity"}, f"nodes[{i}].")
        if not isinstance(name, str) or not DNS_LABEL.match(name):
            raise LabError(f"nodes[{i}]", f"{name!r} is not a DNS label (lower-case letters, digits, '-')")
        if name in found:
            raise LabError(f"nodes[{i}]", f"node {name!r} is listed twice; node names must be unique")
        if name in names.RESERVED_HOSTS:
            raise LabError(f"nodes[{i}]", f"{name!r} names one of the lab's own hosts "
                                          f"({', '.join(names.RESERVED_HOSTS)}); choose another name")
        found.append(name)
        if isinstance(item, dict) and "labels" in item:
            labels[name] = _labels(item["labels"], f"nodes[{i}].labels")
        if isinstance(item, dict) and "capacity" in item:
            capacity[name] = _capacity(item["capacity"], f"nodes[{i}].capacity")
    return tuple(found), labels, capacity


def _cni(value: str, base: Path | None) -> str:
    """network.cni: one of CNI_KINDS, or a conflist file (made absolute) with the podCIDR placeholder."""
    if value in CNI_KINDS:
        return value
    path = Path(value) if base is None or Path(value).is_absolute() else base / value
    if not path.is_file():
        raise LabError("network.cni", f"{value!r}: choose {' or '.join(CNI_KINDS)}, or give a conflist file "
                                      f"({path} does not exist)")
    try:
        conf_from_file(path)
    except CNIError as err:
        detail = f" ({err.details})" if err.details else ""
        raise LabError("network.cni", f"{path} is not a CNI network configuration: {err.msg}{detail}") from None
    if POD_CIDR_PLACEHOLDER not in path.read_text():
        raise LabError("network.cni", f"{path} has no {POD_CIDR_PLACEHOLDER}; write it where each node's pod range "
                                      f"goes, e.g. \"ranges\": [[{{\"subnet\": \"{POD_CIDR_PLACEHOLDER}\"}}]]")
    return str(path.resolve())


def _network(data: Any, node_count: int, base: Path | None = None) -> Network:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LabError("network", "must be a mapping with underlay, clusterCIDR, serviceCIDR, proxyMode")
    _require_keys(data, set(Network.__dataclass_fields__), "network.")
    network = Network(**{k: str(v) for k, v in data.items()})
    nets = {
        "network.underlay": _cidr(network.underlay, "network.underlay"),
        "network.clusterCIDR": _cidr(network.clusterCIDR, "network.clusterCIDR"),
        "network.serviceCIDR": _cidr(network.serviceCIDR, "network.serviceCIDR"),
        "network.loadBalancerPool": _cidr(network.loadBalancerPool, "network.loadBalancerPool"),
    }
    items = list(nets.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1:]:
            if a.overlaps(b):
                raise LabError(name_b, f"{b} overlaps {name_a} {a}; choose ranges that do not overlap")
    underlay = nets["network.underlay"]
    if underlay.num_addresses - 2 < FIRST_NODE_HOST - 1 + node_count:
        raise LabError("network.underlay", f"{underlay} is too small for {node_count} nodes from .{FIRST_NODE_HOST}")
    cluster = nets["network.clusterCIDR"]
    if cluster.prefixlen > NODE_SUBNET_PREFIX or 2 ** (NODE_SUBNET_PREFIX - cluster.prefixlen) < node_count:
        raise LabError("network.clusterCIDR", f"{cluster} has fewer /24 subnets than the {node_count} nodes")
    if nets["network.serviceCIDR"].prefixlen > 28:
        raise LabError("network.serviceCIDR", "is too small; give at least a /28, e.g. 10.96.0.0/16")
    if network.proxyMode not in PROXY_MODES:
        raise LabError("network.proxyMode", f"{network.proxyMode!r}: choose one of {', '.join(PROXY_MODES)}")
    if network.iptablesBackend not in IPTABLES_BACKENDS:
        raise LabError("network.iptablesBackend",
                       f"{network.iptablesBackend!r}: choose one of {', '.join(IPTABLES_BACKENDS)}")
    if not names.is_dns_domain(network.dnsDomain):
        raise LabError("network.dnsDomain", f"{network.dnsDomain!r}: give {names.DOMAIN_RULE}")
    return replace(network, cni=_cni(network.cni, base))


def _control_plane(value: Any) -> ControlPlane:
    if value is None:
        return ControlPlane()
    if not isinstance(value, dict):
        raise LabError("controlPlane", "give a mapping, e.g. {mode: hosts}")
    _require_keys(value, set(ControlPlane.__dataclass_fields__), "controlPlane.")
    mode = value.get("mode", ControlPlane.mode)
    if mode not in CONTROL_PLANE_MODES:
        raise LabError("controlPlane.mode", f"{mode!r}: choose embedded (one process runs the API server, the "
                                            "controllers and every node agent) or hosts (netplane server in its "
                                            "own host, netplane agent in each node)")
    replicas = value.get("replicas", ControlPlane.replicas)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise LabError("controlPlane.replicas", f"{replicas!r}: give 1 (or 3)")
    if replicas % 2 == 0:
        raise LabError("controlPlane.replicas", f"{replicas}: an etcd cluster of {replicas} needs {replicas // 2 + 1} "
                                                f"members for a quorum, so it survives no more failures than a cluster "
                                                f"of {replicas - 1}; use an odd number: 1 or 3")
    storage = value.get("storage", ControlPlane.storage)
    if storage not in CONTROL_PLANE_STORAGE:
        raise LabError("controlPlane.storage", f"{storage!r}: choose sqlite or etcd (an etcd member in each "
                                               "control-plane host)")
    if replicas > MAX_REPLICAS:
        raise LabError("controlPlane.replicas", f"{replicas}: give 1, 3 or 5")
    if replicas > 1 and (mode != "hosts" or storage != "etcd"):
        raise LabError("controlPlane", f"{replicas} replicas need mode: hosts and storage: etcd (each replica "
                                       "in its own host with an etcd member; SQLite cannot be shared)")
    return ControlPlane(mode, replicas, storage)


def _manifests(value: Any, base: Path | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LabError("manifests", "give a list of file names")
    found = []
    for i, entry in enumerate(value):
        path = Path(entry) if base is None or Path(entry).is_absolute() else base / entry
        if not path.is_file():
            raise LabError(f"manifests[{i}]", f"{path} does not exist")
        found.append(str(path.resolve()))
    return tuple(found)


IMAGE_FIELDS = {"entrypoint", "cmd", "env", "workingDir", "stopSignal"}


ADDONS = ("dns",)


def _addons(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise LabError("addons", f"{value!r}: give a list of add-ons ({', '.join(ADDONS)}), or [] for none")
    for i, name in enumerate(value):
        if name not in ADDONS:
            raise LabError(f"addons[{i}]", f"{name!r} is not an add-on netplane has; it has {', '.join(ADDONS)}")
    return tuple(dict.fromkeys(value))


def _dns(value: Any, addons: Any) -> Dns:
    if value is None:
        return Dns()
    if not isinstance(value, dict):
        raise LabError("dns", "give a mapping: {hosts: {name: address}, log: true|false}")
    if isinstance(addons, list) and "dns" not in addons:
        raise LabError("dns", "the dns add-on is off (addons); add dns to addons or leave dns out")
    _require_keys(value, set(Dns.__dataclass_fields__), "dns.")
    hosts = value.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise LabError("dns.hosts", "give a mapping of names to addresses, e.g. {registry.lab: 172.30.0.2}")
    for name, address in hosts.items():
        if not isinstance(name, str) or not all(DNS_LABEL.match(label) for label in name.rstrip(".").split(".")):
            raise LabError(f"dns.hosts.{name}", "is not a DNS name (labels of lower-case letters, digits, '-')")
        try:
            ipaddress.ip_address(str(address))
        except ValueError:
            raise LabError(f"dns.hosts.{name}", f"{address!r} is not an IP address") from None
    log = value.get("log", Dns.log)
    if not isinstance(log, bool):
        raise LabError("dns.log", f"{log!r}: give true or false")
    return Dns({name.rstrip("."): str(address) for name, address in hosts.items()}, log)


def _audit(value: Any) -> Audit:
    if value is None:
        return Audit()
    if not isinstance(value, dict):
        raise LabError("audit", "give a mapping: {level: None|Metadata|Request|RequestResponse, stdout: false}")
    _require_keys(value, set(Audit.__dataclass_fields__), "audit.")
    level, stdout = value.get("level", Audit.level), value.get("stdout", Audit.stdout)
    if level not in audit.LEVELS:
        raise LabError("audit.level", f"{level!r}: choose one of {', '.join(audit.LEVELS)}")
    if not isinstance(stdout, bool):
        raise LabError("audit.stdout", f"{stdout!r}: give true or false")
    return Audit(level, stdout)


def _images(value: Any) -> dict[str, dict]:
    """images: an image name (or prefix*) to its entrypoint, cmd, env and workingDir."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LabError("images", "give a mapping of image names to {entrypoint, cmd, env, workingDir}")
    for name, entry in value.items():
        where = f"images.{name}"
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            raise LabError("images", f"{name!r} is not an image name")
        if not isinstance(entry, dict):
            raise LabError(where, "give a mapping with entrypoint and/or cmd (lists of strings)")
        _require_keys(entry, IMAGE_FIELDS, f"{where}.")
        for key in ("entrypoint", "cmd"):
            if key in entry and (not isinstance(entry[key], list) or not all(isinstance(a, str) for a in entry[key])):
                raise LabError(f"{where}.{key}", "give a list of strings, e.g. [nginx, -g, 'daemon off;']")
        if not entry.get("entrypoint") and not entry.get("cmd"):
            raise LabError(where, "give an entrypoint or a cmd: what the image runs")
        env = entry.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise LabError(f"{where}.env", "give a mapping of names to string values")
        if "workingDir" in entry and not (isinstance(entry["workingDir"], str) and entry["workingDir"].startswith("/")):
            raise LabError(f"{where}.workingDir", "give an absolute path, e.g. /srv")
        if "stopSignal" in entry and entry["stopSignal"] not in signal.Signals.__members__:
            raise LabError(f"{where}.stopSignal", "give a signal's name, e.g. SIGQUIT")
    return {name: dict(entry) for name, entry in value.items()}


def parse(data: Any, base: Path | None = None, name: str | None = None, storage: str | None = None) -> Lab:
    """A validated Lab from a lab file's parsed YAML; `name` and `storage` override the file's."""
    if data is None:
        data = {}
    if storage is not None and isinstance(data, dict):
        data = {**data, "storage": storage}
    if not isinstance(data, dict):
        raise LabError("(top)", "a lab file is a YAML mapping with name, nodes, network, manifests")
    _require_keys(data, set(Lab.__dataclass_fields__) - {"nodeLabels", "nodeCapacity"}, "")
    lab_name = name or data.get("name", Lab.name)
    if not names.is_lab_name(lab_name):
        raise LabError("name", f"{lab_name!r}: use {names.LAB_NAME_RULE}")
    nodes, labels, capacity = _nodes(data.get("nodes", list(Lab.nodes)))
    lease = _seconds(data, "nodeLeaseSeconds", 2)
    resync = _seconds(data, "nodeResyncSeconds", 1)
    storage = data.get("storage", Lab.storage)
    if not isinstance(storage, str) or not (storage == "sqlite" or ETCD_URL.match(storage)):
        raise LabError("storage", f"{storage!r}: use sqlite, or etcd://127.0.0.1:2379 (several endpoints: "
                                  "etcd://h1:2379,h2:2379)")
    return Lab(
        name=lab_name,
        nodes=nodes,
        network=_network(data.get("network"), len(nodes), base),
        manifests=_manifests(data.get("manifests"), base),
        nodeLeaseSeconds=lease,
        nodeResyncSeconds=resync,
        storage=storage,
        nodeLabels=labels,
        nodeCapacity=capacity,
        controlPlane=_control_plane(data.get("controlPlane")),
        images=_images(data.get("images")),
        addons=_addons(data.get("addons", list(Lab.addons))),
        dns=_dns(data.get("dns"), data.get("addons", list(Lab.addons))),
        audit=_audit(data.get("audit")),
    )


def _seconds(data: dict[str, Any], key: str, least: int, most: int = 3600) -> int:
    value = data.get(key, getattr(Lab, key))
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise LabError(key, f"{value!r}: give a whole number of seconds from {least} to {most}")
    return value


def load(path: str | None, name: str | None = None, storage: str | None = None) -> Lab:
    """Load a lab file, or the built-in default lab (two nodes and the demo app) when path is None."""
    if path is None:
        default = resources.files("netplane.lab").joinpath("default.yaml")
        with resources.as_file(default) as file:
            return _load_file(Path(file), name, storage)
    return _load_file(Path(path), name, storage)


def _load_file(path: Path, name: str | None, storage: str | None) -> Lab:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LabError("(file)", f"{path} does not exist") from None
    except yaml.YAMLError as err:
        raise LabError("(file)", f"{path} is not valid YAML: {err}") from None
    except UnicodeDecodeError:
        raise LabError("(file)", f"{path} is not a text file; a lab file is YAML (see `netplane up --help`)") from None
    except IsADirectoryError:
        raise LabError("(file)", f"{path} is a directory; give the lab file inside it") from None
    return parse(data, path.parent, name, storage)


def from_dict(data: dict[str, Any]) -> Lab:
    """The inverse of Lab.to_dict, for a lab that was already validated."""
    return Lab(
        name=data["name"],
        nodes=tuple(data["nodes"]),
        network=Network(**data["network"]),
        manifests=tuple(data["manifests"]),
        nodeLeaseSeconds=data.get("nodeLeaseSeconds", Lab.nodeLeaseSeconds),
        nodeResyncSeconds=data.get("nodeResyncSeconds", Lab.nodeResyncSeconds),
        nodeLabels=data.get("nodeLabels", {}),
        nodeCapacity=data.get("nodeCapacity", {}),
        storage=data.get("storage", Lab.storage),
        controlPlane=ControlPlane(**data.get("controlPlane", {})),
        images=data.get("images", {}),
        addons=tuple(data.get("addons", Lab.addons)),
        dns=Dns(**data.get("dns", {})),
        audit=Audit(**data.get("audit", {})),
    )
