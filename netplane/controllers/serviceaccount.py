"""What every namespace holds for its pods, made by kube-controller-manager upstream: the ``default``
ServiceAccount (serviceaccount-controller; made again when deleted) and the ``kube-root-ca.crt``
ConfigMap with the API server's CA (root-ca-cert-publisher; put back when changed), which a pod's
service account volume projects as ca.crt."""
from __future__ import annotations

from netplane.api.errors import ApiError
from netplane.api.loop import Reconciler
from netplane.api.serviceaccounts import DEFAULT_ACCOUNT, ROOT_CA_CONFIG_MAP
ROOT_CA_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                       "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                       "guaranteed across distributions of Kubernetes clusters.")


def _active(namespaces) -> list[str]:
    return sorted(ns["metadata"]["name"] for ns in namespaces.cache.values()
                  if ns.get("status", {}).get("phase") != "Terminating" and "deletionTimestamp" not in ns["metadata"])


async def _create(client, plural: str, obj: dict) -> None:
    """Create; one that exists already (a cache behind the server) or a namespace going away is fine."""
    try:
        await client.create(plural, obj)
    except ApiError as err:
        if err.code not in (403, 404, 409):  # 403: the namespace is terminating
            raise


class ServiceAccountsController:
    def __init__(self, client, namespaces, accounts) -> None:
        self.client, self.namespaces, self.accounts = client, namespaces, accounts
        self.loop = Reconciler("serviceaccount", self.reconcile)
        namespaces.add_handler(self.loop.trigger)
        accounts.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        if not (self.namespaces.synced.is_set() and self.accounts.synced.is_set()):
            return
        for ns in _active(self.namespaces):
            if (ns, DEFAULT_ACCOUNT) not in self.accounts.cache:
                await _create(self.client, "serviceaccounts", {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": DEFAULT_ACCOUNT, "namespace": ns}})


class RootCAPublisher:
    def __init__(self, client, namespaces, config_maps, ca_pem: str) -> None:
        self.client, self.namespaces, self.config_maps, self.ca_pem = client, namespaces, config_maps, ca_pem
        self.loop = Reconciler("root-ca-cert-publisher", self.reconcile)
        namespaces.add_handler(self.loop.trigger)
        config_maps.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        if not (self.namespaces.synced.is_set() and self.config_maps.synced.is_set()):
            return
        for ns in _active(self.namespaces):
            found = self.config_maps.cache.get((ns, ROOT_CA_CONFIG_MAP))
            if found is None:
                await _create(self.client, "configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": ns,
                                 "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                    "data": {"ca.crt": self.ca_pem}})
            elif found.get("data") != {"ca.crt": self.ca_pem}:
                await self.client.patch("configmaps", ROOT_CA_CONFIG_MAP, {"data": {"ca.crt": self.ca_pem}}, ns,
                                        patch_type="merge")
