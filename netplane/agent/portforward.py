"""``kubectl port-forward`` as the kubelet serves it: each forwarded connection is a TCP connection
to the port on the pod's own loopback, made in the pod's network namespace (so a server bound to
127.0.0.1 in the pod is reached too, as on a node), carried over a WebSocket in one of two ways:

- ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.32): the WebSocket's binary messages carry a SPDY
  session (spdy.py). For each connection the client opens an error stream and a data stream with
  the headers ``streamtype``, ``port`` and ``requestid``; the data stream is the connection, and a
  failure is written on the error stream.
- ``v4.channel.k8s.io`` (the Python client's ``portforward``): the ports are in the ``ports``
  query, one connection per port; port i's data travels on channel 2i and its errors on 2i+1, and
  each channel's first message is the port as two little-endian bytes."""
from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

from aiohttp import WSMsgType, web

from netplane.agent import spdy
from netplane.api import proxy
from netplane.kernel import netns

SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
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


async def _spdy(ws: web.WebSocketResponse, pod_netns: str, pod: str) -> None:
    session = spdy.Session(ws.send_bytes, SpdyForwarder(pod_netns, pod).opened)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await session.feed(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    except spdy.ProtocolError as err:
        await ws.close(message=str(err).encode()[:120])
    finally:
        await session.close()


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


async def serve(request: web.Request, pod_netns: str, pod: str,
                refuse: Callable[[str], web.Response]) -> web.StreamResponse:
    """The WebSocket of one port-forward session to the pod whose network namespace is pod_netns."""
    try:
        ports = ports_of(request.query)
    except ValueError:
        return refuse("ports must be numbers")
    ws = web.WebSocketResponse(protocols=(SPDY_PROTOCOL, CHANNEL_PROTOCOL), max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol == SPDY_PROTOCOL:
        await _spdy(ws, pod_netns, pod)
    elif ws.ws_protocol == CHANNEL_PROTOCOL and ports:
        await _channels(ws, pod_netns, pod, ports)
    await ws.close()
    return ws
