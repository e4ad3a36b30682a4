"""The part of SPDY/3.1 that ``kubectl port-forward`` needs, written from the protocol's published
draft (version 3): framing, streams the peer opens, replies, data, PING, RST_STREAM, GOAWAY, and
the Name/Value header blocks compressed with zlib over the protocol's dictionary (one compression
context per direction for the whole session).

No flow control: Kubernetes' SPDY peer (client-go's spdystream, on both ends upstream) neither
sends WINDOW_UPDATE nor waits for one, so a sender that kept to the 64 KiB windows would stall
after the first 64 KiB. Back-pressure comes from the connection underneath, as it does upstream.

Only the side that accepts streams is here: the client (kubectl, through client-go's spdystream)
opens them, this side replies. The bytes travel over whatever ``send`` and the session's ``feed``
carry: in a WebSocket's binary messages (``SPDY/3.1+portforward.k8s.io``), or a raw connection.

Frames, as the draft lays them out (big-endian):
  control: 1 bit set | version (15) | type (16) | flags (8) | length (24) | payload
  data:    1 bit clear | stream id (31) | flags (8) | length (24) | data
A header block: the number of pairs (32), then for each a name and a value, each a 32-bit length
and its bytes (several values of one name are joined by NUL)."""
from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY = 1, 2, 3, 6, 7
FLAG_FIN = 0x01
RST_CANCEL = 5
MAX_DATA = 16 * 1024  # the most data this side puts in one frame

# The dictionary the header blocks' zlib streams start from (the draft's section 2.6.10.1): header
# names and common values, each after its length as 4 bytes, then a run of status lines, dates and
# media types as they are.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status", "200 OK", "version HTTP/1.1 url public "
    "set-cookie keep-alive origin")
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def _dictionary() -> bytes:
    words = [w for group in _WORDS for w in ([group] if " OK" in group else group.split())]
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + _TAIL.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer broke the protocol: the session ends."""


@dataclass(frozen=True)
class Frame:
    control: bool
    kind: int  # the control frame's type; 0 for data
    flags: int
    stream_id: int  # for control frames, the stream the payload names (0 when none)
    payload: bytes


def control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data(stream_id: int, flags: int, chunk: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(chunk)) + chunk


class Parser:
    """Frames from a byte stream cut anywhere."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        self.buffer += chunk
        frames = []
        while len(self.buffer) >= 8:
            first, second = struct.unpack(">II", self.buffer[:8])
            length = second & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                break
            payload, self.buffer = self.buffer[8:8 + length], self.buffer[8 + length:]
            flags = second >> 24
            if first & 0x80000000:
                version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != VERSION:
                    raise ProtocolError(f"SPDY version {version}; only {VERSION} is spoken here")
                named = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF if len(payload) >= 4 else 0
                frames.append(Frame(True, kind, flags, named, payload))
            else:
                frames.append(Frame(False, 0, flags, first & 0x7FFFFFFF, payload))
        return frames


class HeaderCodec:
    """Header blocks in one direction each: zlib streams kept for the session, flushed per block."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, list[str]]) -> bytes:
        raw = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            for part in (name.lower().encode(), "\0".join(values).encode()):
                raw.append(struct.pack(">I", len(part)) + part)
        return self._deflate.compress(b"".join(raw)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as err:
            raise ProtocolError(f"a header block does not inflate: {err}") from None
        try:
            count, at, headers = struct.unpack(">I", raw[:4])[0], 4, {}
            for _ in range(count):
                pair = []
                for _part in range(2):
                    size = struct.unpack(">I", raw[at:at + 4])[0]
                    pair.append(raw[at + 4:at + 4 + size].decode())
                    at += 4 + size
                headers[pair[0]] = pair[1].split("\0")
        except (struct.error, UnicodeDecodeError) as err:
            raise ProtocolError(f"a header block cannot be read: {err}") from None
        return headers


@dataclass
class Stream:
    """A stream the peer opened: its headers, what it sends, and how to answer on it."""
    session: Session
    id: int
    headers: dict[str, list[str]]
    incoming: asyncio.Queue = field(default_factory=asyncio.Queue)  # data chunks, b"" at its end
    closed_here: bool = False

    def header(self, name: str) -> str:
        return (self.headers.get(name.lower()) or [""])[0]

    async def read(self) -> bytes:
        """The next data the peer sent (b"" once it has half-closed or reset the stream)."""
        return await self.incoming.get()

    async def write(self, chunk: bytes) -> None:
        """Data to the peer, in frames of at most MAX_DATA."""
        for at in range(0, len(chunk), MAX_DATA):
            if self.closed_here:
                return
            await self.session.send(data(self.id, 0, chunk[at:at + MAX_DATA]))

    async def close(self) -> None:
        """Half-close: nothing more goes from here."""
        if not self.closed_here:
            self.closed_here = True
            await self.session.send(data(self.id, FLAG_FIN, b""))

    async def reset(self, status: int = RST_CANCEL) -> None:
        self.closed_here = True
        await self.session.send(control(RST_STREAM, 0, struct.pack(">II", self.id, status)))


class Session:
    """The accepting side of a SPDY session: ``feed`` it the bytes that come, it calls
    ``opened(stream)`` for each stream the peer opens (after replying to it) and sends through
    ``send``."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]],
                 opened: Callable[[Stream], Awaitable[None]]) -> None:
        self._send, self.opened = send, opened
        self.parser, self.codec = Parser(), HeaderCodec()
        self.streams: dict[int, Stream] = {}
        self.tasks: set[asyncio.Task] = set()
        self.sending = asyncio.Lock()
        self.last_stream = 0
        self.ended = False

    async def send(self, frame: bytes) -> None:
        async with self.sending:
            await self._send(frame)

    async def feed(self, chunk: bytes) -> None:
        for frame in self.parser.feed(chunk):
            await (self._control(frame) if frame.control else self._data(frame))

    async def _data(self, frame: Frame) -> None:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            return
        if frame.payload:
            stream.incoming.put_nowait(frame.payload)
        if frame.flags & FLAG_FIN:
            stream.incoming.put_nowait(b"")

    async def _control(self, frame: Frame) -> None:
        if frame.kind == SYN_STREAM:
            stream = Stream(self, frame.stream_id, self.codec.decode(frame.payload[10:]))
            self.streams[stream.id] = stream
            self.last_stream = max(self.last_stream, stream.id)
            await self.send(control(SYN_REPLY, 0, struct.pack(">I", stream.id) + self.codec.encode({})))
            if frame.flags & FLAG_FIN:
                stream.incoming.put_nowait(b"")
            task = asyncio.create_task(self.opened(stream))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif frame.kind == RST_STREAM:
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                stream.closed_here = True
                stream.incoming.put_nowait(b"")
        elif frame.kind == PING:
            await self.send(control(PING, 0, frame.payload))
        elif frame.kind == GOAWAY:
            self.ended = True
        # SETTINGS, HEADERS and WINDOW_UPDATE change nothing here

    async def run(self, read: Callable[[], Awaitable[bytes]]) -> None:
        """Feed it what ``read`` gives until that ends (b"") or the peer says GOAWAY."""
        while not self.ended and (chunk := await read()):
            await self.feed(chunk)

    async def close(self) -> None:
        """GOAWAY, then every stream's work stops."""
        if not self.ended:
            self.ended = True
            try:
                await self.send(control(GOAWAY, 0, struct.pack(">II", self.last_stream, 0)))
            except (ConnectionError, RuntimeError):
                pass
        for stream in self.streams.values():
            stream.incoming.put_nowait(b"")
            stream.closed_here = True
        for task in list(self.tasks):
            task.cancel()
