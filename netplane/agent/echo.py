"""The `netplane/echo` image: an agnhost-netexec-like server on every containerPort.

HTTP (TCP ports): ``GET /hostname`` -> the pod name, ``/clientip`` -> ``ip:port`` of the peer as the
server sees it (so NAT is visible), ``/echo?msg=X`` -> X, ``/healthz`` -> ok, and
``/dial?host=H&port=P&request=R&protocol=http|udp&tries=N`` -> the server itself asks H:P for R and
answers ``{"responses": [...], "errors": [...]}`` (how the Kubernetes e2e tests check reachability
from inside a pod). UDP ports: ``hostname``, ``clientip``, anything else is echoed.

Standard library only and no package of ours, so that it runs as ``python -I -S echo.py``: no site,
no asyncio (whose import alone pulls in ssl), a selector for the listening sockets and a thread per
HTTP connection. Two ways to run it:

- ``echo.py --name POD --tcp 8080 --udp 8081``: one server in the namespace it was started in, as a
  container's `command` may run it; prints ``listening`` once its sockets are bound.
- ``echo.py --launcher``: the node's echo launcher. A kubelet starts one and asks it, one JSON line
  on stdin per container, to fork a server: the child enters the pod's network namespace (setns on
  its only thread, so the whole process lives there), binds the ports, and only then is reported
  started. Forking a warm interpreter takes about a millisecond where a fresh Python takes tens, and
  the children share the launcher's pages copy-on-write (``gc.freeze`` keeps the collector from
  touching them), so a pod's process costs little memory of its own. Each child is a process of its
  own, in its own session, with its own pid in the pod's namespace: the kubelet signals it, finds it
  after a restart, and `down` kills it, as any container. The launcher reports each child's exit
  status; it ends when its stdin closes (the kubelet has gone) and leaves the servers running.
"""
from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15
START_SECONDS = 10.0
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


# --- the launcher ---------------------------------------------------------------------------------

def _setns(libc, ns_path: str) -> None:
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            import ctypes
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns_path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(libc, request: dict, status_w: int, keep: set[int]) -> None:
    """In the forked child: become the pod's server. Never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in keep:
            os.close(fd)
        os.setsid()
        _setns(libc, request["netns"])
        bound = bind(request.get("tcp", []), request.get("udp", []))
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        libc.prctl(PR_SET_NAME, b"netplane-echo", 0, 0, 0)
        os.write(1, b"listening\n")
        os.write(status_w, b"ok")
        os.close(status_w)
        serve(request["name"], bound)
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then the child ends
        try:
            os.write(status_w, f"{type(err).__name__}: {err}".encode())
        except OSError:
            pass
        code = 1
    os._exit(code)


def _reply(message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def _start(libc, request: dict, keep: set[int]) -> None:
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_r)
        _child(libc, request, status_w, keep)
    os.close(status_w)
    ready, _, _ = select.select([status_r], [], [], START_SECONDS)
    answer = os.read(status_r, 4096).decode(errors="replace") if ready else "no answer in time"
    os.close(status_r)
    if answer == "ok":
        _reply({"id": request["id"], "pid": pid})
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reply({"id": request["id"], "pid": pid, "error": answer or "the server ended at start"})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def launcher() -> None:
    """Fork a server per request line until stdin closes; report every child's exit."""
    import ctypes
    import gc

    libc = ctypes.CDLL(None, use_errno=True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "requests")
    sel.register(wake_r, selectors.EVENT_READ, "children")
    keep = {wake_r, wake_w, sel.fileno()}  # what a child closes
    gc.collect()
    gc.freeze()  # what is here now stays out of the collector's reach: shared with every child
    pending = b""
    while True:
        for key, _ in sel.select():
            if key.data == "children":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            data = os.read(0, 65536)
            if not data:
                return  # the kubelet is gone; its pods' servers live on
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    _start(libc, json.loads(line), keep)
        _reap()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", action="store_true", help="fork servers on request (see the module's doc)")
    parser.add_argument("--name", help="the pod name, answered to 'hostname'")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="an HTTP port")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port")
    args = parser.parse_args(argv)
    if args.launcher:
        launcher()
        return
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
