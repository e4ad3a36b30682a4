"""``kubectl port-forward`` as the kubelet serves it: each forwarded connection is a TCP connection
to the port on the pod's own loopback, made in the pod's network namespace (so a server bound to
127.0.0.1 in the pod is reached too, as on a node), carried over a WebSocket in one of two ways:

- ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.32): the WebSocket's binary messages carry a SPDY
  session (spdy.py). For each connection the client opens an error stream and a data stream with
  the headers ``streamtype``, ``port`` and ``requestid``; the data stream is the connection, and a
  failure is written on the error stream. The same session on the connection itself, upgraded to
  SPDY/3.1 with the protocol ``portforward.k8s.io`` (api/upgrade.py), is what kubectl falls back to
  and what client-go programs speak.
- ``v4.channel.k8s.io`` (the Python client's ``portforward``): the ports are in the ``ports``
  query, one connection per port; port i's data travels on channel 2i and its errors on 2i+1, and
  each channel's first message is the port as two little-endian bytes."""
from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from netplane.agent import spdy
from netplane.api import proxy, upgrade
from netplane.kernel import netns

SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
UPGRADED_PROTOCOL = "portforward.k8s.io"  # X-Stream-Protocol-Version of a connection upgraded to SPDY/3.1
CHANNEL_PROTOCOL = "v4.channel.k8s.io"
READ_SIZE = 32 << 10


async def connect(pod_netns: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to localhost:port in the pod's network namespace."""
    return await proxy.connect(netns.sockets_in(pod_netns), "127.0.0.1", port)


def _failed(port: int, pod: str, err: OSError) -> bytes:
    """The kubelet's words for a connection that could not be made."""
    return (f"failed to connect to localhost:{port} inside namespace of pod {pod}: "
            f"{err.strerror or err}").encode()


class SpdyForwarder:
    """Connections of a SPDY session, paired by their requestid."""

    def __init__(self, pod_netns: str, pod: str) -> None:
        self.pod_netns, self.pod = pod_netns, pod
        self.pairs: dict[str, dict[str, spdy.Stream]] = {}

    async def opened(self, stream: spdy.Stream) -> None:
        pair = self.pairs.setdefault(stream.header("requestid"), {})
        pair[stream.header("streamtype")] = stream
        if "data" in pair and "error" in pair:
            del self.pairs[stream.header("requestid")]
            await self.forward(pair["data"], pair["error"])

    async def forward(self, data: spdy.Stream, error: spdy.Stream) -> None:
        try:
            port = int(data.header("port"))
            reader, writer = await connect(self.pod_netns, port)
        except ValueError:
            await error.write(f"invalid port {data.header('port')!r}".encode())
            await error.close()
            await data.reset()
            return
        except OSError as err:
            await error.write(_failed(port, self.pod, err))
            await error.close()
            await data.close()
            return

        async def inward() -> None:
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        async def outward() -> None:
            while chunk := await reader.read(READ_SIZE):
                await data.write(chunk)
            await data.close()

        try:
            await asyncio.gather(inward(), outward())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            await error.close()
            await data.close()


async def _spdy(read: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]],
                pod_netns: str, pod: str) -> None:
    """One SPDY session of forwarded connections, over whatever read and send carry."""
    session = spdy.Session(send, SpdyForwarder(pod_netns, pod).opened)
    try:
        await session.run(read)
    finally:
        await session.close()


def binary_messages(ws: web.WebSocketResponse) -> Callable[[], Awaitable[bytes]]:
    """The WebSocket's binary messages one by one (skipping empty ones, which client-go's tunnel
    sends for a write of nothing), b"" once it closes."""
    async def read() -> bytes:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                return msg.data
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        return b""

    return read


async def _channels(ws: web.WebSocketResponse, pod_netns: str, pod: str, ports: list[int]) -> None:
    sending = asyncio.Lock()

    async def send(channel: int, chunk: bytes) -> None:
        async with sending:
            await ws.send_bytes(bytes([channel]) + chunk)

    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task] = []
    for i, port in enumerate(ports):
        for channel in (2 * i, 2 * i + 1):
            await send(channel, struct.pack("<H", port))
        try:
            reader, writers[i] = await connect(pod_netns, port)
        except OSError as err:
            await send(2 * i + 1, _failed(port, pod, err))
            continue

        async def pump(i: int = i, reader: asyncio.StreamReader = reader) -> None:
            while chunk := await reader.read(READ_SIZE):
                await send(2 * i, chunk)

        pumps.append(asyncio.create_task(pump()))
    async def until_all_ended() -> None:
        """Once every port's connection has ended, the session ends: the client's sockets see EOF."""
        await asyncio.gather(*pumps, return_exceptions=True)
        await ws.close()

    closer = asyncio.create_task(until_all_ended())
    try:
        async for msg in ws:
            raw = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data if msg.type == WSMsgType.BINARY else b""
            if len(raw) < 2:
                continue
            index, rest = divmod(raw[0], 2)
            if rest == 0 and index in writers:
                writers[index].write(raw[1:])
                await writers[index].drain()
    finally:
        for task in [*pumps, closer]:
            task.cancel()
        for writer in writers.values():
            writer.close()


def ports_of(query) -> list[int]:
    """The ``ports`` query (repeated, or separated by commas) as numbers."""
    found = [p for value in query.getall("ports", []) for p in value.split(",") if p]
    return [int(p) for p in found]


async def _upgraded(request: web.Request, pod_netns: str, pod: str,
                    refuse: Callable[..., web.Response]) -> web.StreamResponse:
    """A port-forward session on the connection itself, upgraded to SPDY/3.1."""
    try:
        raw = await upgrade.switch(request, upgrade.negotiate(request, (UPGRADED_PROTOCOL,)))
    except upgrade.NoProtocol as err:
        return refuse(str(err), 403)
    try:
        await _spdy(raw.read, raw.write, pod_netns, pod)
    except (spdy.ProtocolError, ConnectionError):
        pass
    finally:
        raw.close()
    return raw.response


async def serve(request: web.Request, pod_netns: str, pod: str,
                refuse: Callable[..., web.Response]) -> web.StreamResponse:
    """One port-forward session to the pod whose network namespace is pod_netns: a WebSocket, or
    the connection upgraded to SPDY/3.1."""
    try:
        ports = ports_of(request.query)
    except ValueError:
        return refuse("ports must be numbers")
    if upgrade.asks_for_spdy(request):
        return await _upgraded(request, pod_netns, pod, refuse)
    ws = web.WebSocketResponse(protocols=(SPDY_PROTOCOL, CHANNEL_PROTOCOL), max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol == SPDY_PROTOCOL:
        try:
            await _spdy(binary_messages(ws), ws.send_bytes, pod_netns, pod)
        except spdy.ProtocolError as err:
            await ws.close(message=str(err).encode()[:120])
    elif ws.ws_protocol == CHANNEL_PROTOCOL and ports:
        await _channels(ws, pod_netns, pod, ports)
    await ws.close()
    return ws
