"""The packet flows both proxy modes must give the same fate: first packets of new connections,
each walked through one node's rules (tests/support/iptwalk.py for iptables, nftfake's walk for
nftables) with every branch of the random choice, as upstream's proxier tests trace packets.

Services: web (10.96.0.10, endpoints on node-1 and node-2), empty (10.96.0.11, none), lb
(FEATURES at 10.96.0.12: NodePorts 30080/30081, external IP 172.30.0.100, load-balancer IP
172.30.0.200 open to 172.30.0.0/28, externalTrafficPolicy Local, session affinity), near (web with
internalTrafficPolicy Local, 10.96.0.13) and plain (a NodePort 30082 and external IP 172.30.0.101
with the Cluster policy, 10.96.0.14).
"""
from __future__ import annotations

from support.services import EMPTY, FEATURES, SLICE, WEB, another, with_spec

LB = another(FEATURES, "lb", "10.96.0.12")
LB_SLICE = {**SLICE, "metadata": {"name": "lb-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "lb"}}}
NEAR = another(with_spec(WEB, internalTrafficPolicy="Local"), "near", "10.96.0.13")
NEAR_SLICE = {**SLICE, "metadata": {"name": "near-1", "namespace": "default",
                                    "labels": {"kubernetes.io/service-name": "near"}}}
NODE_IPS = {"node-1": "192.168.1.1", "node-3": "192.168.3.1"}
POD, OUTSIDE, NODE = "10.244.1.5", "192.168.1.50", "node"  # NODE: sent by the node itself, from its address
BOTH, BOTH_UDP = ("10.244.1.2:8080", "10.244.2.2:8080"), ("10.244.1.2:8081", "10.244.2.2:8081")
FLOWS = [  # node, source, destination, protocol, port -> outcomes {(verdict, DNAT to, masqueraded)}
    ("node-1", POD, "10.96.0.10", "tcp", 80, {("accept", ep, False) for ep in BOTH}),
    ("node-1", POD, "10.96.0.10", "udp", 81, {("accept", ep, False) for ep in BOTH_UDP}),
    ("node-1", POD, "10.96.0.10", "tcp", 81, {("accept", None, False)}),  # no such port: untouched
    ("node-1", POD, "10.96.0.11", "tcp", 80, {("reject", None, False)}),  # no endpoints
    ("node-1", OUTSIDE, "10.96.0.10", "tcp", 80, {("accept", ep, True) for ep in BOTH}),  # off-cluster client
    ("node-1", NODE, "10.96.0.10", "tcp", 80, {("accept", ep, True) for ep in BOTH}),
    ("node-1", "10.244.1.2", "10.96.0.10", "tcp", 80,  # hairpin: a pod sent to itself is masqueraded
     {("accept", "10.244.1.2:8080", True), ("accept", "10.244.2.2:8080", False)}),
    ("node-1", "172.30.0.5", "172.30.0.200", "tcp", 80, {("accept", "10.244.1.2:8080", False)}),  # Local: this node's
    ("node-1", "172.30.0.99", "172.30.0.200", "tcp", 80, {("drop", None, False)}),  # not in the source ranges
    ("node-1", OUTSIDE, "172.30.0.100", "tcp", 80, {("accept", "10.244.1.2:8080", False)}),  # external IP
    ("node-1", OUTSIDE, "192.168.1.1", "tcp", 30080, {("accept", "10.244.1.2:8080", False)}),  # NodePort
    ("node-1", OUTSIDE, "192.168.1.1", "udp", 30081, {("accept", "10.244.1.2:8081", False)}),
    ("node-1", OUTSIDE, "192.168.1.1", "tcp", 30099, {("accept", None, False)}),  # no such NodePort
    ("node-1", POD, "172.30.0.100", "tcp", 80, {("accept", ep, False) for ep in BOTH}),  # pods short-circuit
    ("node-1", NODE, "192.168.1.1", "tcp", 30080, {("accept", ep, True) for ep in BOTH}),  # so does the node
    ("node-1", POD, "10.96.0.13", "tcp", 80, {("accept", "10.244.1.2:8080", False)}),  # internal Local
    ("node-3", OUTSIDE, "192.168.3.1", "tcp", 30080, {("drop", None, False)}),  # Local, none on this node
    ("node-3", "10.244.3.5", "192.168.3.1", "tcp", 30080, {("accept", ep, False) for ep in BOTH}),
    ("node-3", "10.244.3.5", "10.96.0.13", "tcp", 80, {("drop", None, False)}),  # internal Local, none here
    ("node-3", "10.244.3.5", "10.96.0.11", "tcp", 80, {("reject", None, False)}),
    ("node-1", OUTSIDE, "192.168.1.1", "tcp", 30082, {("accept", ep, True) for ep in BOTH}),  # flat NodePort: Cluster
    ("node-3", OUTSIDE, "192.168.3.1", "tcp", 30082, {("accept", ep, True) for ep in BOTH}),
    ("node-1", POD, "172.30.0.101", "tcp", 80, {("accept", ep, True) for ep in BOTH}),  # flat external IP
    ("node-1", POD, "10.96.0.14", "tcp", 80, {("accept", ep, False) for ep in BOTH}),
]

PLAIN = another(with_spec(WEB, type="NodePort", externalIPs=["172.30.0.101"],
                          ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30082}]), "plain", "10.96.0.14")
PLAIN_SLICE = {**SLICE, "metadata": {"name": "plain-1", "namespace": "default",
                                     "labels": {"kubernetes.io/service-name": "plain"}}}
FLOW_SERVICES = (WEB, EMPTY, LB, NEAR, PLAIN)
FLOW_SLICES = (SLICE, LB_SLICE, NEAR_SLICE, PLAIN_SLICE)


def flow_id(flow: tuple) -> str:
    return f"{flow[0]}:{flow[1]}->{flow[2]}:{flow[3]}/{flow[4]}"
