"""Connections upgraded to SPDY/3.1, as client-go's SPDY round tripper asks for them (what kubectl
falls back to for exec, attach and port-forward when a server does not take its WebSocket, and what
older clients and Go programs speak first): ``Connection: Upgrade``, ``Upgrade: SPDY/3.1``, the
protocols the client speaks in ``X-Stream-Protocol-Version`` headers (its preference first), and a
``101 Switching Protocols`` naming the one chosen. After it the connection carries raw SPDY frames,
which aiohttp does not parse: a taken-over connection hands its bytes to ``Raw`` instead.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

SPDY = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
PAUSE_AT, RESUME_AT = 64, 8  # chunks queued before reading stops, and before it starts again


def asks_for_spdy(request: web.Request) -> bool:
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == SPDY.lower()


def offered(request: web.Request) -> list[str]:
    """The protocols the client offers, in its order (the header may repeat or list several)."""
    return [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, []) for p in value.split(",") if p.strip()]


class NoProtocol(Exception):
    """None of the client's protocols is spoken here (the kubelet answers 403 with these words)."""


def negotiate(request: web.Request, supported: tuple[str, ...]) -> str:
    """The first protocol the client offers that is supported."""
    clients = offered(request)
    chosen = next((p for p in clients if p in supported), None)
    if chosen is None:
        raise NoProtocol(f"unable to upgrade: unable to negotiate protocol: client supports {clients}, "
                         f"server supports {list(supported)}")
    return chosen


class Raw:
    """A connection after the switch: ``read`` what comes (b"" at its end), ``write`` back. It is
    also the protocol's parser from then on: aiohttp feeds it every byte."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.transport, self.response = request.transport, response
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        if self.queue.qsize() >= PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")

    async def read(self) -> bytes:
        chunk = await self.queue.get()
        if self.paused and self.queue.qsize() <= RESUME_AT and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client went away")
        await self.response.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def switch(request: web.Request, protocol: str) -> Raw:
    """Answer 101 with the chosen protocol and take the connection over. The parser is in place
    before the answer leaves: the client sends nothing more until it has read it."""
    response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": SPDY,
                                                       PROTOCOL_HEADER: protocol})
    response.force_close()
    raw = Raw(request, response)
    request.protocol.set_parser(raw)  # type: ignore[arg-type]  # any object with feed_data/feed_eof
    await response.prepare(request)
    return raw
