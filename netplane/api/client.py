"""An async client of the API server, on aiohttp, for controllers and node agents."""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from netplane.api import auth, codec
from netplane.api.errors import ApiError
from netplane.api.resources import base_path, by_plural
from netplane.api.tls import client_context

T = TypeVar("T")
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)  # a server that does not connect in 10 s is down
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)  # a watch lasts as long as it lasts
# a watch with BOOKMARKs (the server sends one every 10 s) that is silent this long has lost its server
BOOKMARKED_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
TOKEN_REREAD = 60.0  # seconds between reads of a token file
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where a pod has its token and CA


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    """Raises the ApiError of the Status the server sent back (or of the bare HTTP code)."""
    if resp.status < 400:
        return
    text = await resp.text()
    try:
        status = json.loads(text)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        raise ApiError.from_status(status)
    raise ApiError.for_code(resp.status, text.strip() or resp.reason or "")


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params = {"labelSelector": label_selector, "fieldSelector": field_selector}
    return {k: v for k, v in params.items() if v}


PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


def _dry(dry_run: bool) -> dict[str, str]:
    return {"dryRun": "All"} if dry_run else {}


def server_urls(text: str) -> list[str]:
    """The API servers of a comma-separated list of URLs (several replicas of one control plane)."""
    return [url.strip().rstrip("/") for url in text.split(",") if url.strip()]


def in_cluster() -> Client:
    """A client of the API server from inside a pod, as client-go's InClusterConfig makes one: the
    ``kubernetes`` Service from KUBERNETES_SERVICE_HOST and _PORT, the pod's ServiceAccount token
    (read again as it is rotated) and the cluster's CA."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise RuntimeError("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    host = f"[{host}]" if ":" in host else host
    return Client(f"https://{host}:{port}", ca_file=f"{SERVICE_ACCOUNT_DIR}/ca.crt",
                  token_file=f"{SERVICE_ACCOUNT_DIR}/token")


class Client:
    """``async with Client(url, token) as api: await api.get("pods", "web", "default")``.

    ``url`` may list several servers of one control plane, comma-separated: the client uses one
    until it cannot connect to it, then fails over to the next (client-side failover, as kubelets
    behind no load balancer do with a list of servers)."""

    def __init__(self, base_url: str, token: str | None = None, ca_file: str | None = None,
                 token_file: str | None = None):
        self.base_urls = server_urls(base_url)
        self._current = 0
        self._token, self._token_file, self._token_read = token, token_file, -TOKEN_REREAD
        self._ssl = client_context(ca_file)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # made on first use, so that it belongs to the loop that uses it
        if self._session is None:
            # no connection limit: every watch holds a connection for as long as it lasts, and a
            # client shared by many informers must not queue requests behind them
            connector = aiohttp.TCPConnector(ssl=self._ssl or True, limit=0)
            self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT, connector=connector)
        return self._session

    def _auth(self, **more: str) -> dict[str, str]:
        """The request's headers: its bearer token (a token file read again each minute, as client-go
        does, since the kubelet rotates a projected ServiceAccount token) and ``more``."""
        if self._token_file is not None and time.monotonic() - self._token_read >= TOKEN_REREAD:
            with open(self._token_file) as f:
                self._token = f.read().strip()
            self._token_read = time.monotonic()
        return {**({"Authorization": f"Bearer {self._token}"} if self._token else {}), **more}

    @property
    def base_url(self) -> str:
        return self.base_urls[self._current]

    def _fail_over(self, failed: str) -> None:
        """Move on to the next server, unless another request already did."""
        if self.base_url == failed:
            self._current = (self._current + 1) % len(self.base_urls)

    @staticmethod
    def _path(plural: str, namespace: str | None, name: str, subresource: str = "") -> str:
        res = by_plural(plural)
        path = f"{base_path(res, (namespace or 'default') if res.namespaced else None)}/{name}"
        return f"{path}/{subresource}" if subresource else path

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict | None = None,
        content_type: str | None = None,
    ) -> dict:
        for attempt in range(len(self.base_urls)):
            server = self.base_url
            if content_type is None:
                request = self._http().request(method, server + path, json=body, params=params, headers=self._auth())
            else:
                request = self._http().request(method, server + path, data=codec.dumps(body), params=params,
                                               headers=self._auth(**{"Content-Type": content_type}))
            try:
                async with request as resp:
                    await _raise_for_status(resp)
                    return await resp.json(content_type=None, loads=codec.loads)
            except (aiohttp.ClientConnectorError, asyncio.TimeoutError):
                # not connected, or no answer in time: the next server (a create that did land
                # in the store answers 409 AlreadyExists there)
                if attempt == len(self.base_urls) - 1:
                    raise
                self._fail_over(server)
        raise AssertionError("unreachable")

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict:
        return await self._call("GET", self._path(plural, namespace, name))

    async def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | int | None = None,
        resource_version_match: str | None = None,
    ) -> dict:
        """The ``<Kind>List``; without a namespace, across all namespaces. With ``limit``, one page:
        pass its ``metadata.continue`` as ``continue_`` for the next (410 when it expired)."""
        path = base_path(by_plural(plural), namespace)
        params = _selectors(label_selector, field_selector)
        for key, value in (("limit", limit), ("continue", continue_), ("resourceVersion", resource_version),
                           ("resourceVersionMatch", resource_version_match)):
            if value not in (None, ""):
                params[key] = str(value)
        return await self._call("GET", path, params=params)

    async def create(self, plural: str, obj: dict, namespace: str | None = None, dry_run: bool = False) -> dict:
        res = by_plural(plural)
        namespace = namespace or obj.get("metadata", {}).get("namespace") or "default"
        return await self._call("POST", base_path(res, namespace if res.namespaced else None), obj,
                                params=_dry(dry_run))

    async def request_token(self, namespace: str, service_account: str, spec: dict) -> dict:
        """A TokenRequest (serviceaccounts/NAME/token) with this spec; the answer has status.token."""
        return await self._call("POST", self._path("serviceaccounts", namespace, service_account, "token"),
                                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})

    async def update(self, plural: str, obj: dict, dry_run: bool = False) -> dict:
        meta = obj["metadata"]
        return await self._call("PUT", self._path(plural, meta.get("namespace"), meta["name"]), obj,
                                params=_dry(dry_run))

    async def patch(
        self,
        plural: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """PATCH an object (or its ``status``/``scale``): ``patch_type`` is merge (RFC 7386), json
        (RFC 6902, a list of operations) or strategic; returns the patched object (or Scale)."""
        if patch_type not in PATCH_TYPES:
            raise ValueError(f"patch_type must be one of {', '.join(PATCH_TYPES)}, not {patch_type!r}")
        path = self._path(plural, namespace, name, subresource or "")
        return await self._call("PATCH", path, patch, params=_dry(dry_run), content_type=PATCH_TYPES[patch_type])

    async def get_scale(self, plural: str, name: str, namespace: str | None = None) -> dict:
        """The ``autoscaling/v1 Scale`` of a Deployment or ReplicaSet."""
        return await self._call("GET", self._path(plural, namespace, name, "scale"))

    async def update_scale(self, plural: str, scale: dict) -> dict:
        """Writes a Scale (as get_scale returned it, ``spec.replicas`` changed); 409 if it is stale."""
        meta = scale["metadata"]
        return await self._call("PUT", self._path(plural, meta.get("namespace"), meta["name"], "scale"), scale)

    async def update_status(self, plural: str, obj: dict) -> dict:
        meta = obj["metadata"]
        path = self._path(plural, meta.get("namespace"), meta["name"], "status")
        return await self._call("PUT", path, obj)

    async def delete(self, plural: str, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict | None = None, dry_run: bool = False) -> dict:
        """Returns the deleted object, or one now deleting: a pod given a grace period, an object
        with finalizers. ``propagation_policy``: Orphan, Background or Foreground."""
        params = {} if grace_period_seconds is None else {"gracePeriodSeconds": str(grace_period_seconds)}
        options = {k: v for k, v in (("propagationPolicy", propagation_policy), ("preconditions", preconditions)) if v}
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **options} if options else None
        return await self._call("DELETE", self._path(plural, namespace, name), body, params={**params, **_dry(dry_run)})

    async def watch(
        self,
        plural: str,
        resource_version: str | int | None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields ``{"type", "object"}`` events (BOOKMARKs too when allowed: an object with only its
        resourceVersion); an ERROR event is raised as its ApiError (410: Gone)."""
        params = {"watch": "true", **_selectors(label_selector, field_selector)}
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if resource_version not in (None, ""):
            params["resourceVersion"] = str(resource_version)
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        server = self.base_url
        try:
            response = await self._http().get(server + base_path(by_plural(plural), namespace), params=params,
                                               headers=self._auth(),
                                               timeout=BOOKMARKED_WATCH_TIMEOUT if allow_bookmarks else WATCH_TIMEOUT)
        except (aiohttp.ClientConnectorError, asyncio.TimeoutError):
            self._fail_over(server)  # the informer watches again, then through the next server
            raise
        async with response as resp:
            await _raise_for_status(resp)
            buffer = bytearray()
            # by hand rather than readline(): one event may be larger than aiohttp's line limit
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    event = codec.loads(line)
                    if event.get("type") == "ERROR":
                        raise ApiError.from_status(event.get("object") or {})
                    yield event


async def retry_on_conflict(fn: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Runs ``fn`` again on 409 Conflict; ``fn`` must get the object afresh, change it and update it."""
    for attempt in range(1, attempts):
        try:
            return await fn()
        except ApiError as e:
            if e.reason != "Conflict":
                raise
        await asyncio.sleep(0.01 * attempt)
    return await fn()


async def discover_ca(base_url: str, token: str) -> bytes:
    """The server's CA, learnt through a bootstrap token (see netplane.api.auth): fetched without
    verifying the server, trusted only once the token's signature over it checks out."""
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        async with session.get(base_url.rstrip("/") + auth.CLUSTER_INFO_PATH, ssl=False) as resp:
            await _raise_for_status(resp)
            return auth.verified_ca(await resp.json(), token)
