"""The `netplane/echo` image: an agnhost-netexec-like server on every containerPort.

HTTP (TCP ports): ``GET /hostname`` -> the pod name, ``/clientip`` -> ``ip:port`` of the peer as the
server sees it (so NAT is visible), ``/echo?msg=X`` -> X, ``/healthz`` -> ok, and
``/dial?host=H&port=P&request=R&protocol=http|udp&tries=N`` -> the server itself asks H:P for R and
answers ``{"responses": [...], "errors": [...]}`` (how the Kubernetes e2e tests check reachability
from inside a pod). UDP ports: ``hostname``, ``clientip``, anything else is echoed.

Standard library only and no package of ours, so that it runs as ``python -I -S echo.py``: no site,
no asyncio (whose import alone pulls in ssl), a selector for the listening sockets and a thread per
HTTP connection. The image's containers are forked by the node's launcher (launcher.py), which
calls ``bind`` and ``serve`` in the container's process: forking a warm interpreter takes about a
millisecond where a fresh Python takes tens, and the children share the launcher's pages. Alone,
``echo.py --name POD --tcp 8080 --udp 8081`` serves in the namespace it was started in and prints
``listening`` once its sockets are bound.
"""
from __future__ import annotations

# socket's name lookups import encodings.idna on first use: loaded here, before the server is in a
# container's root, where the interpreter's own files may not be
import encodings.idna  # noqa: F401
import json
import selectors
import socket
import sys
import threading

MAX_HEAD = 65536


def _answer(name: str, request: str, peer: tuple[str, int]) -> str:
    if request == "hostname":
        return name
    if request == "clientip":
        return f"{peer[0]}:{peer[1]}"
    return request


def _unquote(text: str) -> str:
    """application/x-www-form-urlencoded decoding ('+' is a space, %XX a byte)."""
    raw = text.replace("+", " ").encode()
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 3 <= len(raw):  # '%'
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode(errors="replace")


def parse_query(query: str) -> dict[str, list[str]]:
    """A query string as urllib.parse.parse_qs reads it (blank values dropped)."""
    found: dict[str, list[str]] = {}
    for part in query.replace(";", "&").split("&"):
        name, eq, value = part.partition("=")
        if name and eq and value:
            found.setdefault(_unquote(name), []).append(_unquote(value))
    return found


def _dial_http(host: str, port: int, request: str, timeout: float) -> str:
    with socket.create_connection((host, port), timeout) as sock:
        sock.sendall(f"GET /{request} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks).split(b"\r\n\r\n", 1)[-1].decode()


def _dial_udp(host: str, port: int, request: str, timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request.encode(), (host, port))
        return sock.recvfrom(65535)[0].decode()


def dial(query: dict[str, list[str]]) -> dict[str, list[str]]:
    host = query.get("host", [""])[0]
    port = int(query.get("port", ["0"])[0])
    request = query.get("request", ["hostname"])[0]
    protocol = query.get("protocol", ["http"])[0]
    tries = int(query.get("tries", ["1"])[0])
    result: dict[str, list[str]] = {"responses": [], "errors": []}
    for _ in range(tries):
        try:
            ask = _dial_udp if protocol == "udp" else _dial_http
            result["responses"].append(ask(host, port, request, 2.0))
        except OSError as err:  # TimeoutError is one
            result["errors"].append(f"{type(err).__name__}: {err}")
    return result


def route(name: str, target: str, peer: tuple[str, int]) -> tuple[int, str]:
    """(status, body) of one request target ("/path?query")."""
    path, _, query = target.split("#", 1)[0].partition("?")
    path = path.strip("/")
    if path in ("hostname", "clientip"):
        return 200, _answer(name, path, peer)
    if path == "echo":
        return 200, parse_query(query).get("msg", [""])[0]
    if path in ("healthz", ""):
        return 200, "ok"
    if path == "dial":
        return 200, json.dumps(dial(parse_query(query)))
    return 404, f"unknown path /{path}"


def _read_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data or len(head) > MAX_HEAD:
            raise ValueError("incomplete request")
        head += data
    return head


def _http_connection(name: str, conn: socket.socket, peer: tuple[str, int]) -> None:
    with conn:
        conn.settimeout(10)
        try:
            target = _read_head(conn).split(b"\r\n", 1)[0].split(b" ")[1].decode()
            code, body = route(name, target, peer)
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            code, body = 400, "bad request"
        data = body.encode()
        status = {200: "OK", 400: "Bad Request", 404: "Not Found"}[code]
        try:
            conn.sendall(f"HTTP/1.1 {code} {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + data)
        except OSError:
            pass


def bind(tcp_ports: list[int], udp_ports: list[int]) -> list[tuple[socket.socket, str]]:
    """The listening sockets, in the namespace of the calling thread."""
    bound = []
    for port in tcp_ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(128)
        bound.append((sock, "tcp"))
    for port in udp_ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        bound.append((sock, "udp"))
    return bound


def serve(name: str, bound: list[tuple[socket.socket, str]]) -> None:
    """Answer on the bound sockets forever: UDP inline, each HTTP connection in a thread."""
    sel = selectors.DefaultSelector()
    for sock, kind in bound:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, kind)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            try:
                if key.data == "tcp":
                    conn, peer = sock.accept()
                    conn.setblocking(True)
                    threading.Thread(target=_http_connection, args=(name, conn, peer[:2]), daemon=True).start()
                else:
                    data, addr = sock.recvfrom(65535)
                    sock.sendto(_answer(name, data.decode(errors="replace").strip(), addr[:2]).encode(), addr)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # a peer gone before accept, an ICMP error on UDP: keep serving
                continue


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the pod name, answered to 'hostname'")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="an HTTP port")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port")
    args = parser.parse_args(argv)
    if not args.name:
        parser.error("--name is required")
    bound = bind(args.tcp, args.udp)
    sys.stdout.write("listening\n")  # for whoever waits for the server to be up
    sys.stdout.flush()
    try:
        serve(args.name, bound)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
