"""The SPDY/3 part of port forwarding, without a network: frames cut anywhere, header blocks through
one zlib context per direction, streams opened, replied to, written, half-closed and reset. (The
lab test forwards through kubectl itself, whose header blocks inflate only with the right
dictionary: zlib checks the dictionary's Adler-32.)"""
from __future__ import annotations

import asyncio
import struct
import zlib

from netplane.agent import spdy


def syn_stream(codec: spdy.HeaderCodec, stream_id: int, headers: dict[str, list[str]], flags: int = 0) -> bytes:
    return spdy.control(spdy.SYN_STREAM, flags, struct.pack(">IIH", stream_id, 0, 0) + codec.encode(headers))


def test_the_dictionary_has_the_drafts_size_and_header_blocks_round_trip_over_one_context():
    assert len(spdy.DICTIONARY) == 1423 and spdy.DICTIONARY.startswith(b"\0\0\0\x07options")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    blocks = [{"streamtype": ["data"], "port": ["80"], "requestid": ["0"]},
              {"streamtype": ["error"], "port": ["80"], "requestid": ["1"]}, {}, {"x": ["a", "b"]}]
    encoded = [sender.encode(h) for h in blocks]
    assert [receiver.decode(e) for e in encoded] == blocks  # the contexts carry over from block to block
    assert len(encoded[1]) < len(encoded[0])  # the second block leans on the first
    try:
        zlib.decompressobj().decompress(encoded[0])
    except zlib.error:
        pass
    else:
        raise AssertionError("a header block inflated without the dictionary")


def test_a_session_replies_to_each_stream_carries_data_both_ways_and_answers_pings():
    sent: list[bytes] = []
    opened: list[spdy.Stream] = []

    async def send(chunk: bytes) -> None:
        sent.append(chunk)

    async def on_open(stream: spdy.Stream) -> None:
        opened.append(stream)
        got = await stream.read()
        await stream.write(got.upper() * 20_000)  # over several frames
        await stream.close()

    async def main() -> None:
        session = spdy.Session(send, on_open)
        client = spdy.HeaderCodec()
        wire = syn_stream(client, 1, {"streamtype": ["data"], "port": ["80"]}) + spdy.data(1, 0, b"ping") \
            + spdy.control(spdy.PING, 0, struct.pack(">I", 7))
        for i in range(0, len(wire), 5):  # cut anywhere
            await session.feed(wire[i:i + 5])
        await asyncio.sleep(0.05)
        await session.close()

    asyncio.run(main())
    assert opened[0].header("port") == "80" and opened[0].header("streamtype") == "data"
    frames = spdy.Parser().feed(b"".join(sent))
    reply = frames[0]
    assert (reply.control, reply.kind, reply.stream_id) == (True, spdy.SYN_REPLY, 1)
    pong = next(f for f in frames if f.control and f.kind == spdy.PING)
    assert pong.payload == struct.pack(">I", 7)
    body = b"".join(f.payload for f in frames if not f.control and f.stream_id == 1)
    assert body == b"PING" * 20_000
    assert all(len(f.payload) <= spdy.MAX_DATA for f in frames if not f.control)
    last_data = [f for f in frames if not f.control][-1]
    assert last_data.flags & spdy.FLAG_FIN and last_data.payload == b""
    assert frames[-1].kind == spdy.GOAWAY


def test_a_reset_stream_ends_its_reader_and_another_version_is_refused():
    async def main() -> bytes:
        got = asyncio.get_running_loop().create_future()

        async def on_open(stream: spdy.Stream) -> None:
            got.set_result(await stream.read())

        async def send(chunk: bytes) -> None:
            pass

        session = spdy.Session(send, on_open)
        await session.feed(syn_stream(spdy.HeaderCodec(), 3, {}))
        await session.feed(spdy.control(spdy.RST_STREAM, 0, struct.pack(">II", 3, spdy.RST_CANCEL)))
        return await asyncio.wait_for(got, 2)

    assert asyncio.run(main()) == b""
    version2 = struct.pack(">HHI", 0x8000 | 2, spdy.PING, 4) + b"\0\0\0\1"
    try:
        spdy.Parser().feed(version2)
    except spdy.ProtocolError as err:
        assert "version 2" in str(err)
    else:
        raise AssertionError("a SPDY/2 frame was taken")
