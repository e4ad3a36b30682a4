"""The ``pods/exec``, ``pods/attach`` and ``pods/portforward`` subresources as kube-apiserver serves
them: the request checked (a command, a container of the pod that is running; a pod that runs), then its
WebSocket joined to one the API server opens to the kubelet of the pod's node
(``/exec/NS/POD/CONTAINER``, ``/attach/...``, ``/portForward/NS/POD``), message for message, in the protocol the
two ends agree on (agent/streams.py, agent/portforward.py). A request that is not a WebSocket
upgrade is refused, as one without an upgrade is upstream."""
from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, web

from netplane.api.errors import ApiError
from netplane.api.kubelets import Kubelets, unreachable
from netplane.api.podlog import container_of

STREAM_FLAGS = {"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}  # as the kubelet names them


def _running(pod: dict, container: str) -> None:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        raise ApiError(400, "BadRequest", f"cannot exec into a container in a completed pod; current phase is "
                                          f"{status['phase']}")
    listed = [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
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


async def relay(request: web.Request, kubelets: Kubelets, node: dict, path: str,
                query: list[tuple[str, str]]) -> web.WebSocketResponse:
    """The client's WebSocket joined to the kubelet's for path."""
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
