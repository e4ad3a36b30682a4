"""The ``pods/exec``, ``pods/attach`` and ``pods/portforward`` subresources as kube-apiserver serves
them: the request checked (a command, a container of the pod that is running; a pod that runs), then its
WebSocket joined to one the API server opens to the kubelet of the pod's node
(``/exec/NS/POD/CONTAINER``, ``/attach/...``, ``/portForward/NS/POD``), message for message, in the protocol the
two ends agree on (agent/streams.py, agent/portforward.py). A request upgraded to SPDY/3.1 instead
(api/upgrade.py) is joined byte for byte to a connection the API server upgrades at the kubelet, as
kube-apiserver's upgrade-aware proxy joins them. A request that is neither is refused, as one
without an upgrade is upstream."""
from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSMsgType, web

from netplane.api import upgrade
from netplane.api.errors import ApiError
from netplane.api.kubelets import Kubelets, address, unreachable
from netplane.api.objects import container_statuses
from netplane.api.podlog import container_of
from netplane.api.proxy import parse_head

STREAM_FLAGS = {"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}  # as the kubelet names them
READ_SIZE = 64 << 10
MAX_HEAD = 16 << 10  # the most of a kubelet's answer read before the switch


def _running(pod: dict, container: str) -> None:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        raise ApiError(400, "BadRequest", f"cannot exec into a container in a completed pod; current phase is "
                                          f"{status['phase']}")
    listed = container_statuses(pod)
    state = next((s.get("state") or {} for s in listed if s["name"] == container), {})
    if "running" not in state:  # the kubelet's words, which users know from containers in CrashLoopBackOff
        raise ApiError(400, "BadRequest", f'unable to upgrade connection: container not found ("{container}")')


def kubelet_query(request: web.Request, command: list[str]) -> list[tuple[str, str]]:
    query = [("command", c) for c in command]
    for flag, name in STREAM_FLAGS.items():
        if request.query.get(flag, "").lower() in ("1", "true"):
            query.append((name, "1"))
    return query


async def _carry(source, sink) -> None:
    """Messages from one WebSocket to the other until the source closes."""
    async for msg in source:
        if msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break


async def _kubelet_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str]:
    """(status, headers by lower-case name, the start of the body) of the kubelet's answer."""
    status, found = parse_head(await reader.readuntil(b"\r\n\r\n"))
    headers = {name.lower(): value for name, value in found}
    body = b""
    if status != 101:
        with contextlib.suppress(asyncio.IncompleteReadError, ValueError):
            body = await reader.readexactly(min(int(headers.get("content-length", "0")), MAX_HEAD))
    return status, headers, body.decode(errors="replace").strip()


async def _splice(request: web.Request, kubelets: Kubelets, node: dict, path: str,
                  query: list[tuple[str, str]]) -> web.StreamResponse:
    """The client's connection, upgraded to SPDY/3.1, joined to one upgraded at the kubelet."""
    reader, writer = await kubelets.connect(node)
    try:
        ip, port = address(node)
        head = [f"POST /{path}?{urlencode(query)} HTTP/1.1", f"Host: {ip}:{port}", "Connection: Upgrade",
                f"Upgrade: {upgrade.SPDY}", *(f"{upgrade.PROTOCOL_HEADER}: {p}" for p in upgrade.offered(request)),
                "Content-Length: 0"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            status, headers, body = await asyncio.wait_for(_kubelet_answer(reader), 30)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError) as err:
            raise unreachable(kubelets.url(node, path), err) from None
        if status != 101:
            raise ApiError.for_code(status if status >= 400 else 500, f"unable to upgrade connection: {body}")
        raw = await upgrade.switch(request, headers.get(upgrade.PROTOCOL_HEADER.lower(), ""))

        async def up() -> None:
            while chunk := await raw.read():
                writer.write(chunk)
                await writer.drain()

        async def down() -> None:
            while chunk := await reader.read(READ_SIZE):
                await raw.write(chunk)

        ways = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for way in ways:
                way.cancel()
            await asyncio.gather(*ways, return_exceptions=True)
            raw.close()
        return raw.response
    finally:
        writer.close()


async def relay(request: web.Request, kubelets: Kubelets, node: dict, path: str,
                query: list[tuple[str, str]]) -> web.StreamResponse:
    """The client's WebSocket joined to the kubelet's for path, or its SPDY connection to the kubelet's."""
    if upgrade.asks_for_spdy(request):
        return await _splice(request, kubelets, node, path, query)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "BadRequest", "Upgrade request required")
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    url = kubelets.url(node, path)
    try:
        upstream = await kubelets.session().ws_connect(url, params=query, protocols=offered, max_msg_size=0,
                                                       autoping=True)
    except aiohttp.WSServerHandshakeError as err:
        raise ApiError.for_code(err.status if err.status >= 400 else 500, f"unable to upgrade connection: {err.message}")
    except (aiohttp.ClientConnectionError, OSError) as err:
        raise unreachable(url, err) from None
    try:
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0)
        await client.prepare(request)
        down = asyncio.create_task(_carry(upstream, client))
        up = asyncio.create_task(_carry(client, upstream))
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if not down.done():  # the client went: the kubelet's end is closed below; let it finish
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(down), 1.0)
        up.cancel()
        down.cancel()
        await client.close()
        return client
    finally:
        await upstream.close()


async def _to_container(request: web.Request, pod: dict, kubelets: Kubelets, node: dict | None, action: str,
                        command: list[str]) -> web.StreamResponse:
    """exec or attach: the container checked, the WebSocket joined to the kubelet's /<action>/."""
    container = container_of(pod, request.query.get("container", ""))
    if node is None:
        raise ApiError(400, "BadRequest", f'pod {pod["metadata"]["name"]} does not have a host assigned')
    _running(pod, container)
    meta = pod["metadata"]
    return await relay(request, kubelets, node, f"{action}/{meta['namespace']}/{meta['name']}/{container}",
                       kubelet_query(request, command))


async def serve_exec(request: web.Request, pod: dict, kubelets: Kubelets, node: dict | None) -> web.StreamResponse:
    command = request.query.getall("command", [])
    if not command:
        raise ApiError(400, "BadRequest", "you must specify at least 1 command")
    return await _to_container(request, pod, kubelets, node, "exec", command)


async def serve_attach(request: web.Request, pod: dict, kubelets: Kubelets, node: dict | None) -> web.StreamResponse:
    return await _to_container(request, pod, kubelets, node, "attach", [])


async def serve_port_forward(request: web.Request, pod: dict, kubelets: Kubelets,
                             node: dict | None) -> web.StreamResponse:
    meta, phase = pod["metadata"], (pod.get("status") or {}).get("phase")
    if node is None or phase != "Running":
        raise ApiError(400, "BadRequest", f"pod {meta['name']} is not running (phase {phase})")
    query = [("ports", p) for p in request.query.getall("ports", [])]
    return await relay(request, kubelets, node, f"portForward/{meta['namespace']}/{meta['name']}", query)
