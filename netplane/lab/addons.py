"""The add-ons a lab deploys after its control plane is up, as kubeadm's addon phase does: the
objects are applied by `netplane up` through the API before the lab's own manifests. The lab
file's ``addons:`` lists them; without it a lab has cluster DNS."""
from __future__ import annotations

from importlib import resources

from netplane import names
from netplane.api import manifests
from netplane.lab.model import Dns, Lab

CLUSTER_DNS_IP = "CLUSTER_DNS_IP"  # in coredns.yaml: the Service's address, the 10th of the service CIDR
CLUSTER_DOMAIN = "CLUSTER_DOMAIN"  # in coredns.yaml's Corefile: the zone the kubernetes plugin answers
DNS_SERVICE = ("kube-system", "kube-dns")


def objects(lab: Lab) -> list[dict]:
    """The objects of the lab's add-ons, in the order they are applied."""
    out: list[dict] = []
    if "dns" in lab.addons:
        with resources.as_file(resources.files("netplane.lab").joinpath("coredns.yaml")) as path:
            found = manifests.load(str(path))
        for obj in found:
            if obj["kind"] == "Service" and obj["spec"].get("clusterIP") == CLUSTER_DNS_IP:
                obj["spec"]["clusterIP"] = names.cluster_dns_ip(lab.network.serviceCIDR)
            if obj["kind"] == "ConfigMap":
                obj["data"]["Corefile"] = corefile(obj["data"]["Corefile"], lab.dns, lab.network.dnsDomain)
        out += found
    return out


def corefile(text: str, dns: Dns, domain: str) -> str:
    """kubeadm's Corefile for the cluster's domain, with the lab file's own additions: ``log``, and a
    hosts block of its names."""
    text = text.replace(CLUSTER_DOMAIN, domain, 1)
    extra = ["    log\n"] if dns.log else []
    if dns.hosts:
        extra.append("    hosts {\n" + "".join(f"        {address} {name}\n" for name, address in
                                             sorted(dns.hosts.items())) + "    }\n")
    return text.replace("    ready\n", "    ready\n" + "".join(extra), 1)


def dns_ready(slices: list[dict]) -> bool:
    """Whether the kube-dns Service has a ready endpoint: a pod answers the cluster's names."""
    return any(s["metadata"].get("namespace") == DNS_SERVICE[0]
               and (s["metadata"].get("labels") or {}).get(names.SERVICE_NAME_LABEL) == DNS_SERVICE[1]
               and any((e.get("conditions") or {}).get("ready") for e in s.get("endpoints") or [])
               for s in slices)
