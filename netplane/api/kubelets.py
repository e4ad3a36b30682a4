"""The API server's way to the node agents' kubelet ports, as kube-apiserver's to kubelets: a node's
InternalIP at its ``status.daemonEndpoints.kubeletEndpoint.Port``, over TLS with the
apiserver-kubelet-client certificate (tls.kubelet_client). The kubelet's own certificate signs
itself and is not checked, as kube-apiserver does not check it without
--kubelet-certificate-authority. Sockets come from the server's Outbound, so in a lab the
connection crosses the underlay from a node's namespace."""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from netplane.api.errors import ApiError
from netplane.api.proxy import HOP_BY_HOP, Outbound, connect, here

KUBELET_PORT = 10250
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)


def address(node: dict) -> tuple[str, int]:
    """(InternalIP, kubelet port) of a Node."""
    status = node.get("status") or {}
    ip = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), "")
    if not ip:
        raise ApiError(500, "InternalError", f'node "{node["metadata"]["name"]}" has no InternalIP address')
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or KUBELET_PORT
    return ip, int(port)


def unreachable(url: str, err: Exception) -> ApiError:
    """kube-apiserver's answer when a kubelet cannot be reached."""
    return ApiError(500, "InternalError", f'Get "{url}": {err}')


class Kubelets:
    """Connections to kubelets; ``client_cert`` is the (certificate, key) the server presents."""

    def __init__(self, client_cert: tuple[Path, Path] | None, outbound: Outbound = here) -> None:
        self.client_cert, self.outbound = client_cert, outbound
        self._session: aiohttp.ClientSession | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        if self.client_cert is None:
            raise ApiError(503, "ServiceUnavailable", "this API server has no client certificate for kubelets")
        if self._context is None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._context.check_hostname, self._context.verify_mode = False, ssl.CERT_NONE
            self._context.load_cert_chain(*self.client_cert)
        return self._context

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.context(), socket_factory=self.outbound, force_close=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, auto_decompress=False)
        return self._session

    async def connect(self, node: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection of its own to the node's kubelet port (for a connection to be upgraded)."""
        ip, port = address(node)
        try:
            return await asyncio.wait_for(connect(self.outbound, ip, port, self.context()), TIMEOUT.connect)
        except (OSError, asyncio.TimeoutError) as err:
            raise unreachable(self.url(node, ""), err) from None

    @staticmethod
    def url(node: dict, path: str) -> str:
        ip, port = address(node)
        return f"https://{ip}:{port}/{path.lstrip('/')}"

    async def request(self, method: str, node: dict, path: str, **kwargs) -> aiohttp.ClientResponse:
        """The kubelet's answer (not yet read) to ``method path``; 500 when it cannot be reached."""
        url = self.url(node, path)
        try:
            return await self.session().request(method, url, **kwargs)
        except (aiohttp.ClientConnectionError, OSError) as err:
            raise unreachable(url, err) from None

    async def get_json(self, node: dict, path: str) -> dict:
        async with await self.request("GET", node, path) as resp:
            if resp.status != 200:
                raise ApiError(resp.status if resp.status >= 400 else 500, "InternalError",
                               f"the kubelet on {node['metadata']['name']} answered {resp.status}: "
                               f"{(await resp.text())[:200]}")
            return await resp.json()

    async def forward(self, request: web.Request, node: dict, path: str) -> web.Response:
        """``nodes/NAME/proxy/PATH``: the request passed to the kubelet, its answer passed back."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "authorization"}}
        async with await self.request(request.method, node, path, params=request.query, headers=headers,
                                      data=await request.read()) as resp:
            answer = web.Response(status=resp.status, body=await resp.read())
            for key, value in resp.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    answer.headers.add(key, value)
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
