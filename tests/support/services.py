"""The Services and EndpointSlices both proxy modes' tests use, and helpers to vary them.

Conventions: clusterCIDR 10.244.0.0/16; the node is node-1. Service web 10.96.0.10 (http 80 ->
8080, udp 81 -> 8081) with endpoints 10.244.1.2 (node-1) and 10.244.2.2 (node-2) ready, 10.244.2.9
not ready; Service empty 10.96.0.11:80 with none; headless is skipped; FEATURES is web with every
option a Service port has.
"""
from __future__ import annotations

import copy

from netplane.agent.proxy import model

CIDR = "10.244.0.0/16"
WEB = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                     {"name": "udp", "port": 81, "protocol": "UDP"}]}}
EMPTY = {"metadata": {"name": "empty", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP"}]}}
HEADLESS = {"metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}


def endpoint(ip, node, ready=True, serving=None, terminating=False):
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}


SLICE = {"metadata": {"name": "web-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "udp", "protocol": "UDP", "port": 8081}],
         "endpoints": [endpoint("10.244.2.2", "node-2"), endpoint("10.244.1.2", "node-1"),
                       endpoint("10.244.2.9", "node-2", ready=False)]}


def ports(*services, slices=(SLICE,)):
    return model.service_ports(list(services), list(slices))


def with_spec(service: dict, **spec) -> dict:
    changed = copy.deepcopy(service)
    changed["spec"].update(spec)
    return changed


def another(service: dict, name: str, cluster_ip: str) -> dict:
    """The same Service under another name and address."""
    copied = with_spec(service, clusterIP=cluster_ip)
    copied["metadata"]["name"] = name
    return copied


FEATURES = with_spec(WEB, type="LoadBalancer", externalIPs=["172.30.0.100"], sessionAffinity="ClientIP",
                     externalTrafficPolicy="Local", loadBalancerSourceRanges=["172.30.0.0/28"],
                     ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                            {"name": "udp", "port": 81, "protocol": "UDP", "nodePort": 30081}])
FEATURES["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
