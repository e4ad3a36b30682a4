"""The `netplane/echo` image: an agnhost-netexec-like server on every containerPort.

HTTP (TCP ports): ``GET /hostname`` -> the pod name, ``/clientip`` -> ``ip:port`` of the peer as the
server sees it (so NAT is visible), ``/echo?msg=X`` -> X, ``/healthz`` -> ok, and
``/dial?host=H&port=P&request=R&protocol=http|udp&tries=N`` -> the server itself asks H:P for R and
answers ``{"responses": [...], "errors": [...]}`` (how the Kubernetes e2e tests check reachability
from inside a pod). UDP ports: ``hostname``, ``clientip``, anything else is echoed.

Standard library only, so a pod starts in tens of milliseconds and stays small.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import urllib.parse


def _answer(name: str, request: str, peer: tuple[str, int]) -> str:
    if request == "hostname":
        return name
    if request == "clientip":
        return f"{peer[0]}:{peer[1]}"
    return request


async def _dial_http(host: str, port: int, request: str, timeout: float) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET /{request} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return raw.split(b"\r\n\r\n", 1)[-1].decode()


def _dial_udp(host: str, port: int, request: str, timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request.encode(), (host, port))
        return sock.recvfrom(65535)[0].decode()


async def _dial(query: dict[str, list[str]]) -> dict[str, list[str]]:
    host = query.get("host", [""])[0]
    port = int(query.get("port", ["0"])[0])
    request = query.get("request", ["hostname"])[0]
    protocol = query.get("protocol", ["http"])[0]
    tries = int(query.get("tries", ["1"])[0])
    result: dict[str, list[str]] = {"responses": [], "errors": []}
    for _ in range(tries):
        try:
            if protocol == "udp":
                answer = await asyncio.to_thread(_dial_udp, host, port, request, 2.0)
            else:
                answer = await _dial_http(host, port, request, 2.0)
            result["responses"].append(answer)
        except (OSError, asyncio.TimeoutError) as err:
            result["errors"].append(f"{type(err).__name__}: {err}")
    return result


async def _route(name: str, target: str, peer: tuple[str, int]) -> tuple[int, str]:
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    path = url.path.strip("/")
    if path in ("hostname", "clientip"):
        return 200, _answer(name, path, peer)
    if path == "echo":
        return 200, query.get("msg", [""])[0]
    if path in ("healthz", ""):
        return 200, "ok"
    if path == "dial":
        return 200, json.dumps(await _dial(query))
    return 404, f"unknown path /{path}"


def _http_handler(name: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[:2]
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            code, body = await _route(name, target, peer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, IndexError):
            code, body = 400, "bad request"
        data = body.encode()
        status = {200: "OK", 400: "Bad Request", 404: "Not Found"}[code]
        writer.write(
            f"HTTP/1.1 {code} {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode() + data
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    return handle


class _UDPEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = data.decode(errors="replace").strip()
        assert self.transport is not None
        self.transport.sendto(_answer(self.name, request, addr).encode(), addr)


async def serve(name: str, tcp_ports: list[int], udp_ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(_http_handler(name), "0.0.0.0", port) for port in tcp_ports]
    for port in udp_ports:
        await loop.create_datagram_endpoint(lambda: _UDPEcho(name), local_addr=("0.0.0.0", port))
    sys.stdout.write("listening\n")  # the kubelet marks the container started on this line
    sys.stdout.flush()
    await asyncio.gather(*(s.serve_forever() for s in servers), asyncio.Event().wait())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the pod name, answered to 'hostname'")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="an HTTP port")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.name, args.tcp, args.udp))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
