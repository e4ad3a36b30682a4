"""What kube-apiserver does for ServiceAccounts beyond storing them: the ServiceAccount admission
plugin (a pod runs as ``default`` unless it names another, which must exist, and gets the
``kube-api-access-*`` projected volume with its token, the cluster's CA and its namespace, mounted
in every container at /var/run/secrets/kubernetes.io/serviceaccount unless automounting is off),
and the ``serviceaccounts/token`` subresource (TokenRequest, what `kubectl create token` and the
kubelet ask)."""
from __future__ import annotations

import asyncio
import secrets

from netplane.api.errors import ApiError, bad_request, invalid
from netplane.api.satokens import KUBELET_SECONDS, MAX_SECONDS, MIN_SECONDS, TokenIssuer
from netplane.api.times import time_text

DEFAULT_ACCOUNT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
DEFAULT_WAIT = (10, 0.15)  # tries and seconds between them for `default`, which a controller makes
TOKEN_REQUEST_VERSION = "authentication.k8s.io/v1"
BOUND_KINDS = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


def lookup(store, plural: str, namespace: str | None, name: str) -> dict | None:
    try:
        return store.get(plural, namespace, name)
    except ApiError as err:
        if err.code != 404:
            raise
        return None


def forbidden(plural: str, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{plural} "{name}" is forbidden: {message}', {"name": name, "kind": plural})


async def wait_for_account(store, namespace: str, pod: dict) -> None:
    """Before a pod is admitted: a ``default`` account the controller has not made yet is waited
    for a little, as upstream's admission looks it up again (a namespace made a moment ago)."""
    name = (pod.get("spec") or {}).get("serviceAccountName") or DEFAULT_ACCOUNT
    tries, pause = DEFAULT_WAIT if name == DEFAULT_ACCOUNT else (1, 0.0)
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(pause)
        if lookup(store, "serviceaccounts", namespace, name) is not None:
            return


def access_volume(name: str) -> dict:
    """The projected volume a pod gets for the API: its token, the cluster's CA, its namespace."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": KUBELET_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def admit_pod(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
    """The ServiceAccount admission plugin, on a pod's creation."""
    if plural != "pods" or verb != "create":
        return obj
    spec, meta = obj["spec"], obj["metadata"]
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_ACCOUNT
    spec["serviceAccountName"] = spec["serviceAccount"] = name
    account = lookup(store, "serviceaccounts", meta["namespace"], name)
    if account is None:
        raise forbidden("pods", meta.get("name", ""), f"error looking up service account {meta['namespace']}/{name}: "
                                                        f'serviceaccount "{name}" not found')
    if spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True)):
        _mount_access(spec)
    return obj


def _mount_access(spec: dict) -> None:
    """Every container without a mount at MOUNT_PATH mounts the pod's kube-api-access volume (one
    already in the pod, else a new one, added only if some container mounts it)."""
    volumes = spec.get("volumes") or []
    taken = {v.get("name") for v in volumes}
    volume = next((v["name"] for v in volumes if str(v.get("name", "")).startswith(VOLUME_PREFIX)), None)
    name = volume or next(n for n in iter(lambda: VOLUME_PREFIX + _random(5), None) if n not in taken)
    needed = False
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not any(m.get("mountPath") == MOUNT_PATH for m in c.get("volumeMounts") or []):
            c["volumeMounts"] = [*(c.get("volumeMounts") or []), {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}]
            needed = True
    if volume is None and needed:
        spec["volumes"] = [*volumes, access_volume(name)]


def _random(n: int) -> str:
    """As upstream's utilrand.String: lowercase consonants and digits that spell no words."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def token_request(store, issuer: TokenIssuer, namespace: str, name: str, body: dict) -> dict:
    """POST serviceaccounts/NAME/token: the TokenRequest, with its status filled in."""
    if body.get("kind") not in (None, "TokenRequest") or body.get("apiVersion") not in (None, TOKEN_REQUEST_VERSION):
        raise bad_request(f"the body must be an {TOKEN_REQUEST_VERSION} TokenRequest, not "
                          f"{body.get('apiVersion')} {body.get('kind')}")
    spec = body.get("spec") or {}
    seconds = spec.get("expirationSeconds", 3600)
    if not isinstance(seconds, int) or seconds < MIN_SECONDS:
        raise invalid("TokenRequest", name, "spec.expirationSeconds",
                      f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")
    if seconds > MAX_SECONDS:
        raise invalid("TokenRequest", name, "spec.expirationSeconds",
                      f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")
    account = lookup(store, "serviceaccounts", namespace, name)
    if account is None:
        raise ApiError(404, "NotFound", f'serviceaccounts "{name}" not found', {"name": name, "kind": "serviceaccounts"})
    bound, node = spec.get("boundObjectRef"), None
    if bound:
        plural = BOUND_KINDS.get(bound.get("kind", ""))
        if plural is None:
            raise bad_request(f"cannot bind token to object of type {bound.get('kind')}: it must be a Pod, "
                              "a Secret or a Node")
        target = lookup(store, plural, None if plural == "nodes" else namespace, bound.get("name", ""))
        if target is None:
            raise ApiError(404, "NotFound", f'{plural} "{bound.get("name")}" not found',
                           {"name": bound.get("name", ""), "kind": plural})
        if bound.get("uid") and bound["uid"] != target["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"the UID in the bound object reference ({bound['uid']}) does not match "
                                            f"the UID in record. The object might have been deleted and then recreated")
        bound = {**bound, "uid": target["metadata"]["uid"]}
        if plural == "pods" and target["spec"].get("nodeName"):
            node = lookup(store, "nodes", None, target["spec"]["nodeName"])
    token, expires = issuer.issue(account, seconds, spec.get("audiences") or None, bound, node)
    stamp = time_text(expires)
    return {"kind": "TokenRequest", "apiVersion": TOKEN_REQUEST_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {**spec, "expirationSeconds": seconds, "audiences": spec.get("audiences") or list(issuer.api_audiences)},
            "status": {"token": token, "expirationTimestamp": stamp}}
