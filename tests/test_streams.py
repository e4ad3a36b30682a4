"""The exec stream's channel protocol, end to end over a real WebSocket on loopback with real
processes (the lab tests drive it with kubectl and the Python client through the API server)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from netplane.agent import spdy, streams


@contextlib.asynccontextmanager
async def serving_exec(argv: list[str]) -> AsyncIterator[int]:
    """The port of a server on loopback that serves each exec request (GET or POST /exec) with argv."""
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await streams.serve(request, argv, argv)

    app.router.add_route("*", "/exec", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exec_over_websocket(argv: list[str], query: str, protocol: str, talk) -> list[tuple[int, bytes]]:
    """Serve one exec of argv, connect as a client offering protocol, let talk(ws) write, and
    return every (channel, data) the server sent."""
    got: list[tuple[int, bytes]] = []
    async with serving_exec(argv) as port:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/exec?{query}", protocols=[protocol]) as ws:
                assert ws.protocol == protocol
                await talk(ws)
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        got.append((msg.data[0], msg.data[1:]))
    return got


def joined(got: list[tuple[int, bytes]], channel: int) -> bytes:
    return b"".join(data for ch, data in got if ch == channel)


def test_v5_carries_stdin_to_its_close_stdout_and_stderr_apart_and_the_exit_code_as_a_status():
    async def talk(ws) -> None:
        await ws.send_bytes(b"\x00hello ")
        await ws.send_bytes(b"\x00world")
        await ws.send_bytes(bytes([255, 0]))  # v5: stdin is done

    argv = ["sh", "-c", "cat; echo oops >&2; exit 3"]
    got = asyncio.run(exec_over_websocket(argv, "input=1&output=1&error=1", "v5.channel.k8s.io", talk))
    assert got[0] == (1, b"")  # the streams are open
    assert joined(got, 1) == b"hello world" and joined(got, 2) == b"oops\n"
    status = json.loads(joined(got, 3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert status["message"] == ("command terminated with non-zero exit code: error executing command "
                                 "[sh -c cat; echo oops >&2; exit 3], exit code 3")


def test_v4_a_terminal_takes_its_size_and_success_is_said():
    async def talk(ws) -> None:
        await ws.send_str("\x04" + json.dumps({"Width": 120, "Height": 40}))  # text, as the Python client sends

    argv = ["sh", "-c", "sleep 0.3; stty size; tty"]
    got = asyncio.run(exec_over_websocket(argv, "output=1&tty=1", "v4.channel.k8s.io", talk))
    said = joined(got, 1).decode().split()
    assert said[:2] == ["40", "120"] and said[2].startswith("/dev/pts/")
    assert joined(got, 2) == b"" and json.loads(joined(got, 3)) == {"metadata": {}, "status": "Success"}


async def exec_over_spdy(argv: list[str], query: str, offered: list[str], streams_: dict[int, str],
                         stdin: bytes = b"") -> tuple[bytes, dict[int, bytes]]:
    """Serve one exec of argv, upgrade a raw connection to SPDY/3.1 offering ``offered``, open
    ``streams_`` (stream id -> streamType), write stdin and half-close it; the head of the answer,
    and what came on each stream until the server went away."""
    got: dict[int, bytes] = {}
    async with serving_exec(argv) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        versions = "".join(f"X-Stream-Protocol-Version: {p}\r\n" for p in offered)
        writer.write(f"POST /exec?{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                     f"{versions}Content-Length: 0\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            writer.close()
            return head + await asyncio.wait_for(reader.read(4096), 5), got
        codec, parser = spdy.HeaderCodec(), spdy.Parser()
        for stream_id, kind in streams_.items():
            writer.write(spdy.control(spdy.SYN_STREAM, 0, struct.pack(">IIH", stream_id, 0, 0)
                                      + codec.encode({"streamtype": [kind]})))
        stdin_id = next((i for i, kind in streams_.items() if kind == "stdin"), None)
        if stdin_id is not None:
            writer.write(spdy.data(stdin_id, 0, stdin) + spdy.data(stdin_id, spdy.FLAG_FIN, b""))
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            for frame in parser.feed(chunk):
                if not frame.control:
                    got[frame.stream_id] = got.get(frame.stream_id, b"") + frame.payload
        writer.close()
    return head, got


def test_spdy_upgraded_exec_carries_each_stream_type_and_refuses_unknown_protocols():
    argv = ["sh", "-c", "cat; echo oops >&2; exit 7"]
    kinds = {1: "error", 3: "stdin", 5: "stdout", 7: "stderr"}
    head, got = asyncio.run(exec_over_spdy(argv, "input=1&output=1&error=1",
                                           ["v5.channel.k8s.io", "v4.channel.k8s.io"], kinds, b"typed in"))
    assert b"X-Stream-Protocol-Version: v5.channel.k8s.io" in head  # the client's first choice
    assert got[5] == b"typed in" and got[7] == b"oops\n"
    status = json.loads(got[1])
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "7"

    refused, _ = asyncio.run(exec_over_spdy(argv, "output=1", ["v2.channel.k8s.io"], {}))
    assert refused.startswith(b"HTTP/1.1 403 ") and b"unable to negotiate protocol" in refused


def test_a_resize_stream_is_split_into_its_json_objects():
    found, rest = streams.json_objects(b'{"Width": 80, "Height": 24}\n{"Width": 100, "Height": 30}\n{"Wid')
    assert [json.loads(f) for f in found] == [{"Width": 80, "Height": 24}, {"Width": 100, "Height": 30}]
    assert rest == b'{"Wid'
