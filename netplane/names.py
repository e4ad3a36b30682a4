"""Every name netplane gives a kernel object, in one place.

Everything a lab creates lives in network namespaces whose names start with ``np.<lab>.``; the dot
cannot appear in a lab name, so one lab's prefix never matches another's and ``clean`` removes
exactly what labs own. Inside a lab's namespaces the names follow flannel and the CNI plugins
(``eth0``, ``cni0``, ``flannel.1``, ``veth<hash>``), as on a real node.
"""
from __future__ import annotations

import base64
import hashlib
import re

NETNS_PREFIX = "np."
LAB_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")  # whole names only: is_lab_name
DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 labels: fullmatch
LAB_NAME_RULE = "1-32 lower-case letters, digits and '-', beginning and ending with a letter or digit"
IFNAME_MAX = 15

UNDERLAY_IF = "eth0"
BRIDGE_IF = "cni0"
VXLAN_IF = "flannel.1"
POD_IF = "eth0"
UNDERLAY_SWITCH_IF = "br0"
RESERVED_HOSTS = ("underlay", "client", "cp-1", "cp-2", "cp-3", "cp-4", "cp-5")  # a lab's own hosts, not nodes

VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50

MASQ_MARK = 0x4000
LEASE_NAMESPACE = "kube-node-lease"  # the nodes' heartbeat Leases
KUBELET_MAX_PODS = 110  # the kubelet's default --max-pods: a node's pods capacity
EVICTION_MEMORY = 100 * 2**20  # the kubelet's default hard eviction threshold memory.available<100Mi
LEADER_LEASE = "netplane-controllers"  # in kube-system: which `netplane server` runs the controllers
NFT_TABLE = "kube-proxy"
NFT_POLICY_TABLE = "netplane-policy"  # a node's NetworkPolicy rules
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # an EndpointSlice's Service
KUBERNETES_VERSION = ("1", "32", "v1.32.0-netplane")  # major, minor, gitVersion: what the API server and kubelets say


def short_hash(text: str, length: int = 8) -> str:
    """A stable base32 hash, as kube-proxy uses in chain names."""
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest[:(length * 5 + 7) // 8]).decode()[:length]  # 5 bits a letter


def is_lab_name(name: object) -> bool:
    return isinstance(name, str) and LAB_NAME_RE.fullmatch(name) is not None


def check_lab_name(name: object) -> str:
    """The name, if it is a lab's; anything else (`rel1.pod`, `../x`, `a/b`) could reach another
    lab's namespaces or the machine's files through the paths and prefixes made from it."""
    if not is_lab_name(name):
        raise ValueError(f"lab name {name!r}: use {LAB_NAME_RULE}")
    return name  # type: ignore[return-value]


CLUSTER_DOMAIN = "cluster.local"  # kubeadm's networking.dnsDomain, the kubelet's --cluster-domain
DOMAIN_RULE = "a DNS domain: dot-separated labels of lower-case letters, digits and '-', as cluster.local"


def is_dns_domain(value: object) -> bool:
    """A DNS-1123 subdomain (at most 253 characters), as the kubelet's --cluster-domain must be."""
    return (isinstance(value, str) and 0 < len(value) <= 253
            and all(DNS_LABEL_RE.fullmatch(label) for label in value.split(".")))


DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
             "OPT": 41, "AXFR": 252, "ANY": 255}  # the record types cluster DNS and its clients speak of (RFC 1035 ...)
DNS_QUESTION_TYPES = tuple(t for t in DNS_TYPES if t not in ("OPT", "AXFR"))  # what `trace --dns` may ask
DNS_PORT = 53
DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")  # by number, as dig names them


def kubernetes_service_ip(service_cidr: str) -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the range."""
    import ipaddress
    return str(ipaddress.ip_network(service_cidr).network_address + 1)


def cluster_dns_ip(service_cidr: str) -> str:
    """The cluster DNS Service's address: the 10th of the service CIDR, as kubeadm picks it."""
    import ipaddress
    return str(ipaddress.ip_network(service_cidr).network_address + 10)


def lab_prefix(lab: str) -> str:
    """`np.<lab>.`: every namespace of the lab, and of no other lab, starts with it."""
    return f"{NETNS_PREFIX}{check_lab_name(lab)}."


def underlay_netns(lab: str) -> str:
    return f"{lab_prefix(lab)}underlay"


def client_netns(lab: str) -> str:
    """The client on the underlay: a host outside the cluster, as users reach NodePorts and load balancers."""
    return f"{lab_prefix(lab)}client"


def control_plane_host(index: int) -> str:
    """The name of the index-th control-plane host (from 1): cp-1, cp-2, ..."""
    return f"cp-{index}"


def control_plane_netns(lab: str, index: int = 1) -> str:
    """A host that runs `netplane server` (and an etcd member) in a lab with controlPlane.mode hosts."""
    return f"{lab_prefix(lab)}{control_plane_host(index)}"


def node_netns(lab: str, node: str) -> str:
    return f"{lab_prefix(lab)}{node}"


NAME_MAX = 255  # the longest file name (a namespace is one, in /run/netns)
NETNS_PREFIX_RE = re.compile(r"[a-z0-9]([a-z0-9-]|\.(?!\.)){0,62}[.-]")  # np.<lab>. or cni-: no '/' or '..'


def fitted(name: str, limit: int = NAME_MAX) -> str:
    """The name if it fits in `limit` characters, else its start and a hash of the whole: every name
    the API accepts (a pod's may have 253 characters) still makes a file or namespace name."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9]}-{short_hash(name).lower()}"


def pod_netns(prefix: str, namespace: str, pod: str) -> str:
    """The pod's namespace, under the agent's prefix (a lab's, or ``cni-`` on a real host)."""
    return fitted(f"{prefix}pod.{namespace}.{pod}")


def lab_of_netns(netns: str) -> str | None:
    """The lab a netplane namespace belongs to, or None if it is not netplane's."""
    if not netns.startswith(NETNS_PREFIX):
        return None
    lab = netns[len(NETNS_PREFIX):].split(".", 1)[0]
    return lab if is_lab_name(lab) else None


def short_netns(netns: str) -> str:
    """A lab namespace without its `np.<lab>.` prefix: `pod.default.client`, `node-1`, `underlay`."""
    lab = lab_of_netns(netns)
    return netns[len(lab_prefix(lab)):] if lab else netns


def switch_port(node: str) -> str:
    """The underlay switch's port facing a node (in the underlay namespace)."""
    name = f"to-{node}"
    return name if len(name) <= IFNAME_MAX else f"to-{short_hash(node, 10).lower()}"


def host_veth(container_id: str, ifname: str = POD_IF) -> str:
    """The host end of a pod's veth, like the bridge plugin's ``veth`` + 8 hex characters."""
    return "veth" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:8]
