"""The ``default/kubernetes`` Service and its endpoints, as each kube-apiserver keeps them: the
Service on the first address of the service CIDR (HTTPS 443), and an EndpointSlice and Endpoints
``kubernetes`` listing every API server that has renewed its lease lately, at the address pods
reach it on. Each server renews its own Lease (``kube-system/apiserver-<hash>``, holding its
address) every RENEW seconds; one that stops (a replica that died) drops out of the endpoints
after LEASE_SECONDS, as upstream's lease endpoint reconciler does."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from netplane import names
from netplane.api.errors import ApiError
from netplane.api.times import micro_time_text, parse_micro_time

log = logging.getLogger(__name__)
RENEW, LEASE_SECONDS = 10.0, 15
NAME, NAMESPACE = "kubernetes", "default"
LEASE_LABEL = {"apiserver.kubernetes.io/identity": "kube-apiserver"}


def service(service_cidr: str, port: int) -> dict:
    ip = names.kubernetes_service_ip(service_cidr)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"component": "apiserver",
                                                                        "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}


def endpoint_objects(addresses: list[str], port: int) -> tuple[dict, dict]:
    """The EndpointSlice and Endpoints of the API servers at ``addresses`` (sorted) and ``port``."""
    meta = {"name": NAME, "namespace": NAMESPACE}
    endpoint_slice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {**meta, "labels": {names.SERVICE_NAME_LABEL: NAME}}, "addressType": "IPv4",
                      "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
                      "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {**meta, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                 "subsets": [{"addresses": [{"ip": a} for a in addresses],
                              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}] if addresses else []}
    return endpoint_slice, endpoints


def live(leases: list[dict], now: datetime) -> list[str]:
    """The addresses of the leases renewed within their duration."""
    out = set()
    for lease in leases:
        spec = lease.get("spec") or {}
        try:
            renewed = parse_micro_time(spec.get("renewTime", ""))
        except ValueError:
            continue
        if now - renewed <= timedelta(seconds=spec.get("leaseDurationSeconds", LEASE_SECONDS)):
            out.add(spec.get("holderIdentity", ""))
    return sorted(a for a in out if a)


class KubernetesService:
    """One API server's part: its lease, and the Service and endpoints kept to all live leases."""

    def __init__(self, client, service_cidr: str, advertise: str, port: int) -> None:
        self.client, self.service_cidr, self.advertise, self.port = client, service_cidr, advertise, port
        self.lease = f"apiserver-{names.short_hash(f'{advertise}:{port}').lower()}"

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except (ApiError, OSError, asyncio.TimeoutError) as err:
                log.warning("kubernetes service: %s", err)
            await asyncio.sleep(RENEW)

    async def sync(self) -> None:
        now = datetime.now(timezone.utc)
        await self._put("leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.lease, "namespace": "kube-system", "labels": LEASE_LABEL},
            "spec": {"holderIdentity": self.advertise, "leaseDurationSeconds": LEASE_SECONDS,
                     "renewTime": micro_time_text(now)}}, "kube-system")
        try:
            await self.client.get("services", NAME, NAMESPACE)
        except ApiError as err:
            if err.code != 404:
                raise
            await self.client.create("services", service(self.service_cidr, self.port))
        leases = (await self.client.list("leases", "kube-system",
                                         label_selector=",".join(f"{k}={v}" for k, v in LEASE_LABEL.items())))["items"]
        endpoint_slice, endpoints = endpoint_objects(live(leases, now), self.port)
        await self._put("endpointslices", endpoint_slice, NAMESPACE, unless_same=("endpoints", "ports"))
        await self._put("endpoints", endpoints, NAMESPACE, unless_same=("subsets",))

    async def _put(self, plural: str, obj: dict, namespace: str, unless_same: tuple[str, ...] = ()) -> None:
        """Create the object, or replace the one there (left alone when its ``unless_same`` fields
        already match)."""
        try:
            current = await self.client.get(plural, obj["metadata"]["name"], namespace)
        except ApiError as err:
            if err.code != 404:
                raise
            await self.client.create(plural, obj, namespace)
            return
        if unless_same and all(current.get(k) == obj.get(k) for k in unless_same):
            return
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.client.update(plural, obj)
