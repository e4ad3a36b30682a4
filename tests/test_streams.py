"""The exec stream's channel protocol, end to end over a real WebSocket on loopback with real
processes (the lab tests drive it with kubectl and the Python client through the API server)."""
from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from netplane.agent import streams


async def exec_over_websocket(argv: list[str], query: str, protocol: str, talk) -> list[tuple[int, bytes]]:
    """Serve one exec of argv, connect as a client offering protocol, let talk(ws) write, and
    return every (channel, data) the server sent."""
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await streams.serve(request, argv, argv)

    app.router.add_get("/exec", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got: list[tuple[int, bytes]] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/exec?{query}", protocols=[protocol]) as ws:
                assert ws.protocol == protocol
                await talk(ws)
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        got.append((msg.data[0], msg.data[1:]))
    finally:
        await runner.cleanup()
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
