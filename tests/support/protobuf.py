"""Protobuf request bodies as client-go writes them, for tests of the server's decoder."""
from __future__ import annotations


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64: ten bytes of two's complement, as Go writes them
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def field(number: int, *parts: object) -> bytes:
    """One field: a single int as a varint, else the parts (str, bytes) joined, length-delimited."""
    if len(parts) == 1 and isinstance(parts[0], int):
        return varint(number << 3) + varint(parts[0])
    data = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
    return varint(number << 3 | 2) + varint(len(data)) + data
