#!/usr/bin/env python3
"""The test servers pods run, as one program called by the name it is run as (as busybox is): the
e2e tests' ``agnhost`` (subcommands netexec, serve-hostname, pause, connect, porter), hashicorp's
``http-echo`` and traefik's ``whoami``, with their flags, endpoints and answers; and the server of
the ``netplane/echo`` image, which is netexec on every containerPort.

netexec (HTTP on --http-port, UDP on --udp-port): ``/`` -> ``NOW: <time>``, ``/hostname`` (and
``/hostName``) -> the host's name (the pod's), ``/clientip`` -> ``ip:port`` of the peer as the
server sees it (so NAT is visible), ``/echo?msg=X`` -> X, ``/header?key=K`` -> that request header,
``/healthz`` -> ok, ``/shell?cmd=C`` -> ``{"output": ...}``, ``/exit?code=N`` -> the server exits,
``/dial?host=H&port=P&request=R&protocol=http|udp&tries=N`` -> the server itself asks H:P for R and
answers ``{"responses": [...], "errors": [...]}`` (how the e2e tests check reachability from inside
a pod). UDP: ``hostname``, ``clientip``, ``echo X`` -> X; anything else is echoed.

Standard library only and no package of ours: the image catalog writes this file into a
container's root as ``/agnhost`` (``/http-echo``, ``/whoami`` link to it), and the node's launcher
imports it to serve ``netplane/echo`` in a forked child (``bind``, ``serve``) without an exec.
Threads per HTTP connection, a selector for the listening sockets, no asyncio.
"""
from __future__ import annotations

# socket's name lookups import encodings.idna on first use: loaded here, before the server is in a
# container's root, where the interpreter's own files may not be
import encodings.idna  # noqa: F401
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_HEAD = 65536
STATUS_TEXT = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


# -- HTTP, as small as the servers need -------------------------------------------------------------

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


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    peer: tuple[str, int]
    local: tuple[str, int]
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        path, _, query = self.target.split("#", 1)[0].partition("?")
        self.path, self.query = "/" + path.strip("/"), parse_query(query)

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


@dataclass
class Response:
    code: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # what the server does once the answer is sent (exit)


Handler = Callable[[Request], Response]


def _read_request(conn: socket.socket, peer: tuple[str, int]) -> Request:
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data or len(head) > MAX_HEAD:
            raise ValueError("incomplete request")
        head += data
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]) if k]
    return Request(method, target, version, headers, peer, conn.getsockname()[:2])


def _http_connection(handler: Handler, conn: socket.socket, peer: tuple[str, int]) -> None:
    with conn:
        conn.settimeout(10)
        try:
            answer = handler(_read_request(conn, peer))
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            answer = Response(400, "bad request")
        data = answer.body.encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
        try:
            conn.sendall(f"HTTP/1.1 {answer.code} {STATUS_TEXT.get(answer.code, 'Status')}\r\n"
                         f"Content-Type: {answer.content_type}\r\nContent-Length: {len(data)}\r\n{extra}"
                         f"Connection: close\r\n\r\n".encode() + data)
        except OSError:
            pass
    if answer.after is not None:
        answer.after()


# -- netexec ----------------------------------------------------------------------------------------

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
    """What /dial answers: ``tries`` requests to host:port, each answer or error."""
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


def _shell(command: str) -> dict[str, str]:
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
    out = {"output": done.stdout + done.stderr}
    return out if done.returncode == 0 else {**out, "error": f"exit status {done.returncode}"}


def netexec(name: str) -> Handler:
    """agnhost netexec's HTTP endpoints; ``name`` is what /hostname answers."""

    def handle(req: Request) -> Response:
        path = req.path
        if path in ("/hostname", "/hostName"):
            return Response(200, name)
        if path == "/clientip":
            return Response(200, f"{req.peer[0]}:{req.peer[1]}")
        if path == "/echo":
            return Response(200, req.arg("msg"))
        if path == "/header":
            key = req.arg("key")
            return Response(200, req.header(key) if key else json.dumps(dict(req.headers)))
        if path == "/healthz":
            return Response(200, "ok")
        if path == "/dial":
            return Response(200, json.dumps(dial(req.query)), "application/json")
        if path == "/shell":
            return Response(200, json.dumps(_shell(req.arg("cmd"))), "application/json")
        if path == "/exit":
            code = req.arg("code", "0")
            if not code.isdigit() or int(code) > 127:
                return Response(400, f"bad exit code {code!r}")
            return Response(200, "", after=lambda: os._exit(int(code)))
        if path == "/":
            return Response(200, f"NOW: {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
        return Response(404, f"404 page not found: {path}")

    return handle


def udp_answer(name: str, request: str, peer: tuple[str, int]) -> str:
    if request == "hostname":
        return name
    if request == "clientip":
        return f"{peer[0]}:{peer[1]}"
    return request[len("echo "):] if request.startswith("echo ") else request


# -- the sockets ------------------------------------------------------------------------------------

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


def serve(name: str, bound: list[tuple[socket.socket, str]], handler: Handler | None = None,
          on_tcp: Callable[[socket.socket], None] | None = None) -> None:
    """Answer on the bound sockets forever: UDP inline, each TCP connection in a thread, by
    ``on_tcp`` (raw) or as HTTP by ``handler`` (netexec's by default)."""
    handler = handler or netexec(name)
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
                    work = (on_tcp, (conn,)) if on_tcp else (_http_connection, (handler, conn, peer[:2]))
                    threading.Thread(target=work[0], args=work[1], daemon=True).start()
                else:
                    data, addr = sock.recvfrom(65535)
                    sock.sendto(udp_answer(name, data.decode(errors="replace").strip(), addr[:2]).encode(), addr)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # a peer gone before accept, an ICMP error on UDP: keep serving
                continue


# -- the programs -----------------------------------------------------------------------------------

def _flags(argv: list[str], defaults: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Go-style flags (``-name=value``, ``--name value``, ``--bool``) over their defaults, and the
    other arguments; an unknown flag ends the program with usage, as Go's flag package does."""
    values, rest, i = dict(defaults), [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.lstrip("-").partition("=")
            if name not in defaults:
                sys.exit(f"flag provided but not defined: -{name}\nflags: "
                         + " ".join(f"--{k}" for k in defaults))
            if not eq:
                if defaults[name] in ("true", "false") and not (i + 1 < len(argv) and argv[i + 1] in ("true", "false")):
                    value = "true"
                else:
                    i += 1
                    value = argv[i] if i < len(argv) else ""
            values[name] = value
        else:
            rest.append(arg)
        i += 1
    return values, rest


def _forever(name: str, bound: list[tuple[socket.socket, str]], **how) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"Serving on {', '.join(f'{k}/{s.getsockname()[1]}' for s, k in bound)}", flush=True)
    serve(name, bound, **how)


def cmd_netexec(argv: list[str]) -> None:
    flags, _ = _flags(argv, {"http-port": "8080", "udp-port": "8081", "sctp-port": "-1", "http-override": "",
                             "udp-listen-addresses": "", "delay-shutdown": "0", "tls-cert-file": "",
                             "tls-private-key-file": ""})
    udp = [int(flags["udp-port"])] if int(flags["udp-port"]) > 0 else []
    _forever(socket.gethostname(), bind([int(flags["http-port"])], udp))


def cmd_serve_hostname(argv: list[str]) -> None:
    flags, _ = _flags(argv, {"port": "9376", "tcp": "false", "udp": "false", "http": "true", "close": "false"})
    name, port = socket.gethostname(), int(flags["port"])
    if flags["tcp"] == "true":  # the hostname on a plain connection, which then closes
        def tell(conn: socket.socket) -> None:
            with conn:
                conn.sendall(name.encode())
        _forever(name, bind([port], []), on_tcp=tell)
    elif flags["udp"] == "true":
        _forever(name, bind([], [port]))
    else:
        _forever(name, bind([port], []), handler=lambda req: Response(200, name))


def cmd_pause(argv: list[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    print("Paused", flush=True)
    while True:
        signal.pause()


def cmd_connect(argv: list[str]) -> None:
    """Try a connection; exit 0 if it is made, else say TIMEOUT, REFUSED or OTHER and exit 1 (what
    the NetworkPolicy e2e tests read)."""
    flags, rest = _flags(argv, {"timeout": "0", "protocol": "tcp", "source-port": "0"})
    if len(rest) != 1 or ":" not in rest[0]:
        sys.exit("usage: agnhost connect HOST:PORT [--timeout=5s] [--protocol=tcp|udp]")
    host, _, port = rest[0].rpartition(":")
    timeout = float(flags["timeout"].rstrip("s") or 0) or None
    try:
        if flags["protocol"] == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.sendto(b"hostname", (host.strip("[]"), int(port)))
                sock.recvfrom(65535)
        else:
            socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except TimeoutError:
        sys.stderr.write("TIMEOUT\n")
        sys.exit(1)
    except ConnectionRefusedError:
        sys.stderr.write("REFUSED\n")
        sys.exit(1)
    except OSError as err:
        sys.stderr.write(f"OTHER: {err}\n")
        sys.exit(1)


def cmd_porter(argv: list[str]) -> None:
    """An HTTP server on every SERVE_PORT_<port>=<answer> of the environment, answering that."""
    answers = {int(k[len("SERVE_PORT_"):]): v for k, v in os.environ.items()
               if k.startswith("SERVE_PORT_") and k[len("SERVE_PORT_"):].isdigit()}
    if not answers:
        sys.exit("porter: no SERVE_PORT_<port> in the environment")
    bound = bind(sorted(answers), [])
    for sock, _ in bound:
        port = sock.getsockname()[1]
        threading.Thread(target=serve, args=("", [(sock, "tcp")], lambda req, a=answers[port]: Response(200, a)),
                         daemon=True).start()
    cmd_pause([])


def http_echo(argv: list[str]) -> None:
    """hashicorp/http-echo: -text on every path (with a newline), /health as JSON."""
    flags, _ = _flags(argv, {"text": "", "listen": ":5678", "status-code": "200", "version": "false"})
    if not flags["text"]:
        sys.exit("Missing -text option!")
    port, code, text = int(flags["listen"].rpartition(":")[2]), int(flags["status-code"]), flags["text"] + "\n"

    def handle(req: Request) -> Response:
        if req.path == "/health":
            return Response(200, '{"status":"ok"}\n', "application/json")
        return Response(code, text, headers={"X-App-Name": "http-echo", "X-App-Version": "1.0.0"})

    _forever(socket.gethostname(), bind([port], []), handler=handle)


def whoami(argv: list[str]) -> None:
    """traefik/whoami: the host's name and addresses and the request as it arrived."""
    flags, _ = _flags(argv, {"port": "80", "name": os.environ.get("WHOAMI_NAME", ""), "verbose": "false"})
    name = socket.gethostname()

    def addresses() -> list[str]:  # loopback, then the pod's own (the kubelet's /etc/hosts names it)
        try:
            found = {a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET)}
        except OSError:
            found = set()
        return ["127.0.0.1", *sorted(found - {"127.0.0.1"})]

    def handle(req: Request) -> Response:
        if req.path == "/health":
            return Response(200, "")
        lines = [f"Hostname: {name}"] + ([f"Name: {flags['name']}"] if flags["name"] else [])
        lines += [f"IP: {a}" for a in addresses()] + [f"RemoteAddr: {req.peer[0]}:{req.peer[1]}",
                                                        f"{req.method} {req.target} {req.version}"]
        lines += [f"{k}: {v}" for k, v in req.headers]
        if req.path == "/api":
            return Response(200, json.dumps({"hostname": name, "ip": addresses(), "headers": {
                k: [v] for k, v in req.headers}, "url": req.target, "host": req.header("Host"),
                "method": req.method, "remoteAddr": f"{req.peer[0]}:{req.peer[1]}"}), "application/json")
        return Response(200, "\n".join(lines) + "\n\n")

    _forever(name, bind([int(flags["port"])], []), handler=handle)


AGNHOST = {"netexec": cmd_netexec, "serve-hostname": cmd_serve_hostname, "pause": cmd_pause,
           "connect": cmd_connect, "porter": cmd_porter}
PROGRAMS = {"http-echo": http_echo, "whoami": whoami}


def main(argv: list[str]) -> None:
    program = os.path.basename(argv[0])
    if program in PROGRAMS:
        PROGRAMS[program](argv[1:])
        return
    if len(argv) < 2 or argv[1] not in AGNHOST:
        sys.exit("Usage: agnhost [command]\n\nAvailable commands: " + ", ".join(sorted(AGNHOST)))
    AGNHOST[argv[1]](argv[2:])


if __name__ == "__main__":
    main(sys.argv)
