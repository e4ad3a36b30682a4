"""``kubectl exec`` and ``kubectl attach`` as the kubelet serves them: a new process in a running
container's namespaces (at its root, with its environment), or the container's own streams as its
log copier hands them on (launcher.py), carried over a WebSocket in the channel protocol the API
server and kubectl speak.

``v5.channel.k8s.io`` (kubectl 1.32) and ``v4.channel.k8s.io`` (the Python client): each binary
message starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 error (at the end, a Status: Success,
or Failure with reason NonZeroExitCode and the exit code as an ExitCode cause, as upstream), 4 resize
(``{"Width": w, "Height": h}`` for a tty), and in v5 only 255 close (``[255, 0]``: stdin is done).
An empty message on the first output channel tells the client the streams are open. With a tty the
process gets a pseudo-terminal as its controlling terminal, and stderr is part of stdout.

On a connection upgraded to SPDY/3.1 (api/upgrade.py; what kubectl falls back to and client-go
programs speak) the same channels are SPDY streams the client opens, one per ``streamType``
(error, stdin, stdout, stderr, resize); the session starts once every stream the request asks for
is there, stdin's end is its half-close, and resize carries one JSON object after another."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from netplane.agent import launcher, spdy
from netplane.api import upgrade
from netplane.kernel import commands

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
READ_SIZE = 32 << 10
STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's --streaming-connection... wait for a client's streams


@dataclass(frozen=True)
class StreamOptions:
    """Which streams a request wants: the kubelet's ``input``, ``output``, ``error`` and ``tty``."""
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> StreamOptions:
        def on(*names: str) -> bool:
            return any(query.get(n, "").lower() in ("1", "true") for n in names)

        tty = on("tty")
        return cls(stdin=on("input", "stdin"), stdout=on("output", "stdout"),
                   stderr=on("error", "stderr") and not tty, tty=tty)


def exit_status(code: int, argv: list[str]) -> dict:
    """The error channel's last word: the command's end, as the kubelet says it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(argv)}], exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def failure(message: str) -> dict:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}


class Channels:
    """The channel protocol on one WebSocket: numbered messages both ways."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.v5 = ws.ws_protocol == PROTOCOLS[0]
        self.sending = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        async with self.sending:
            if not self.ws.closed:
                await self.ws.send_bytes(bytes([channel]) + data)

    async def opened(self, options: StreamOptions) -> None:
        """The empty message that tells the client its streams are open."""
        await self.send(STDOUT if options.stdout else STDERR if options.stderr else ERROR, b"")

    async def messages(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, data) of each message from the client; a text message is taken as its bytes,
        as the kubelet takes it (the Python client writes str data as text). A v5 close of stdin
        comes as (CLOSE, b"")."""
        async for msg in self.ws:
            raw = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data if msg.type == WSMsgType.BINARY else b""
            if not raw:
                continue
            channel, data = raw[0], raw[1:]
            if channel == CLOSE:
                if self.v5 and data[:1] == bytes([STDIN]):
                    yield CLOSE, b""
            elif channel in (STDIN, RESIZE):
                yield channel, data


class SpdyChannels:
    """The channels as the SPDY streams the client opened on an upgraded connection."""

    def __init__(self, options: StreamOptions) -> None:
        self.expected = {ERROR} | {c for c, on in ((STDIN, options.stdin), (STDOUT, options.stdout),
                                                   (STDERR, options.stderr), (RESIZE, options.tty)) if on}
        self.streams: dict[int, spdy.Stream] = {}
        self.ready = asyncio.Event()  # every expected stream is open
        self.ended = asyncio.Event()  # the connection is gone

    async def stream_opened(self, stream: spdy.Stream) -> None:
        channel = STREAM_TYPES.get(stream.header("streamType"))
        if channel is None:
            await stream.reset()
            return
        self.streams[channel] = stream
        if self.expected <= set(self.streams):
            self.ready.set()

    async def send(self, channel: int, data: bytes) -> None:
        stream = self.streams.get(channel)
        if stream is not None:
            await stream.write(data)

    async def opened(self, options: StreamOptions) -> None:
        """Nothing to say: a SPDY stream is open once the client has made it."""

    async def messages(self) -> AsyncIterator[tuple[int, bytes]]:
        """stdin's data then (CLOSE, b"") at its half-close, and each resize; until the connection ends."""
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        async def pump(channel: int, stream: spdy.Stream) -> None:
            pending = b""
            while chunk := await stream.read():
                if channel == STDIN:
                    queue.put_nowait((STDIN, chunk))
                    continue
                sizes, pending = json_objects(pending + chunk)
                for size in sizes:
                    queue.put_nowait((RESIZE, size))
            if channel == STDIN:
                queue.put_nowait((CLOSE, b""))

        pumps = [asyncio.create_task(pump(c, self.streams[c])) for c in (STDIN, RESIZE) if c in self.streams]
        ended = asyncio.create_task(self.ended.wait())
        try:
            while True:
                getting = asyncio.create_task(queue.get())
                await asyncio.wait({getting, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    return
                yield getting.result()
        finally:
            for task in [*pumps, ended]:
                task.cancel()

    async def close(self) -> None:
        for stream in self.streams.values():
            await stream.close()


def json_objects(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The whole JSON objects at the start of buffer (a JSON encoder's stream), and the rest."""
    decoder, text, at, found = json.JSONDecoder(), buffer.decode(errors="replace"), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            _, end = decoder.raw_decode(text, at)
        except ValueError:
            return found, text[at:].encode()
        found.append(text[at:end].encode())
        at = end


class Session:
    """One exec: the process, its streams, and the WebSocket they travel on."""

    def __init__(self, channels: Channels | SpdyChannels, options: StreamOptions) -> None:
        self.channels, self.options = channels, options
        self.send = channels.send

    async def _pump(self, channel: int, read) -> None:
        """Each chunk read, sent on channel, until the end."""
        while True:
            data = await read()
            if not data:
                return
            await self.send(channel, data)

    async def run(self, argv: list[str], shown: list[str]) -> None:
        """Run argv (``shown``: the command the user gave), carry its streams, say how it ended."""
        try:
            code = await (self._run_tty(argv) if self.options.tty else self._run_pipes(argv))
        except OSError as err:
            await self.send(ERROR, json.dumps(failure(f"cannot run {shown}: {err}")).encode())
            return
        await self.send(ERROR, json.dumps(exit_status(code, shown)).encode())

    async def _run_pipes(self, argv: list[str]) -> int:
        pipe, none = commands.PIPE, commands.DEVNULL
        proc = await commands.start(None, argv, stdin=pipe if self.options.stdin else none,
                                    stdout=pipe if self.options.stdout else none,
                                    stderr=pipe if self.options.stderr else none, session=True)
        await self.channels.opened(self.options)
        pumps = [asyncio.create_task(self._pump(ch, lambda s=s: s.read(READ_SIZE)))
                 for ch, s in ((STDOUT, proc.stdout), (STDERR, proc.stderr)) if s is not None]

        async def feed(data: bytes | None) -> None:
            if proc.stdin is None:
                return
            if data is None:
                proc.stdin.close()
                return
            proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()

        return await self._until_done(proc, pumps, feed, None)

    async def _run_tty(self, argv: list[str]) -> int:
        master, slave = os.openpty()
        try:
            proc = await commands.start(None, ["setsid", "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO: every holder of the terminal has gone
                data = b""
            if not data:
                loop.remove_reader(master)
            chunks.put_nowait(data)

        loop.add_reader(master, readable)
        await self.channels.opened(self.options)
        pump = asyncio.create_task(self._pump(STDOUT, chunks.get))

        async def feed(data: bytes | None) -> None:
            with contextlib.suppress(OSError):
                os.write(master, b"\x04" if data is None else data)  # stdin closed: end of file, as a terminal says it

        try:
            return await self._until_done(proc, [pump], feed, master)
        finally:
            loop.remove_reader(master)
            os.close(master)

    async def _until_done(self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task], feed,
                          terminal: int | None) -> int:
        """Carry the client's messages to the process until it ends and its output is sent; when
        the client goes first, the process is killed."""
        reader = asyncio.create_task(self._from_client(feed, terminal))
        waiting = asyncio.create_task(proc.wait())
        try:
            done, _ = await asyncio.wait({waiting, reader}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:  # the client hung up
                _kill(proc)
                return await waiting
            await asyncio.gather(*pumps)
            return waiting.result()
        finally:
            reader.cancel()
            for pump in pumps:
                pump.cancel()
            if proc.returncode is None:
                _kill(proc)

    async def _from_client(self, feed, terminal: int | None) -> None:
        async for channel, data in self.channels.messages():
            if channel == STDIN and data:
                await feed(data)
            elif channel == RESIZE and terminal is not None:
                launcher.resize(terminal, data)
            elif channel == CLOSE:
                await feed(None)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _on_channels(request: web.Request, options: StreamOptions,
                       session: Callable[[Channels | SpdyChannels], Awaitable[None]]) -> web.StreamResponse:
    """Open the request's channels (a WebSocket, or the connection upgraded to SPDY/3.1), run the
    session on them, and close them."""
    if upgrade.asks_for_spdy(request):
        return await _on_spdy(request, options, session)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol is None:
        await ws.close(message=f"none of the protocols {', '.join(PROTOCOLS)} was offered".encode())
        return ws
    try:
        await session(Channels(ws))
    finally:
        await ws.close()
    return ws


async def _on_spdy(request: web.Request, options: StreamOptions,
                   session: Callable[[Channels | SpdyChannels], Awaitable[None]]) -> web.StreamResponse:
    try:
        raw = await upgrade.switch(request, upgrade.negotiate(request, PROTOCOLS))
    except upgrade.NoProtocol as err:
        return web.Response(status=403, text=f"{err}\n")
    channels = SpdyChannels(options)
    connection = spdy.Session(raw.write, channels.stream_opened)

    async def carry() -> None:
        try:
            await connection.run(raw.read)
        except (spdy.ProtocolError, ConnectionError):
            pass
        finally:
            channels.ended.set()

    carrying = asyncio.create_task(carry())
    try:
        waiting = asyncio.create_task(channels.ready.wait())
        await asyncio.wait({waiting, carrying}, timeout=STREAM_CREATION_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            await session(channels)
        waiting.cancel()
        with contextlib.suppress(ConnectionError):
            await channels.close()
            await connection.close()
    finally:
        carrying.cancel()
        raw.close()
    return raw.response


async def serve(request: web.Request, argv: list[str], shown: list[str]) -> web.StreamResponse:
    """One exec of argv."""
    options = StreamOptions.from_query(request.query)
    return await _on_channels(request, options, lambda channels: Session(channels, options).run(argv, shown))


async def serve_attach(request: web.Request, copier: socket.socket) -> web.StreamResponse:
    """One attach: the container's output as its log copier hands it on (``copier``: a socket
    connected to the copier's attach socket), and what the client types into its stdin."""
    options = StreamOptions.from_query(request.query)
    try:
        return await _on_channels(request, options, lambda channels: _attached(channels, options, copier))
    finally:
        copier.close()


async def _attached(channels: Channels | SpdyChannels, options: StreamOptions, copier: socket.socket) -> None:
    copier.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=copier)
    await channels.opened(options)
    frame = launcher.ATTACH_FRAME

    async def output() -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                channel, size = frame.unpack(await reader.readexactly(frame.size))
                data = await reader.readexactly(size)
                if (channel == STDOUT and options.stdout) or (channel == STDERR and options.stderr):
                    await channels.send(channel, data)

    async def typed() -> None:
        async for channel, data in channels.messages():
            if (channel == STDIN and options.stdin) or channel in (RESIZE, CLOSE):
                writer.write(frame.pack(channel, len(data)) + data)
                await writer.drain()

    tasks = [asyncio.create_task(output()), asyncio.create_task(typed())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0].done():  # the container's output ended: it has exited
            await channels.send(ERROR, json.dumps(exit_status(0, [])).encode())
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
