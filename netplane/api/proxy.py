"""The proxy subresources: ``pods/NAME[:PORT]/proxy/PATH`` and ``services/NAME[:PORT]/proxy/PATH``,
as kube-apiserver serves them (``kubectl proxy`` then reaches a pod at
``/api/v1/namespaces/NS/pods/NAME/proxy/``, as the Kubernetes Basics tutorial does).

The name may be ``name``, ``name:port`` or ``scheme:name:port``. A pod's port is a number (a
container port's name is taken too), else the first container port, else 80. A Service's port is one
of its ports' names (an unnamed port is ``name`` alone; a number is taken too); the request goes to
a ready endpoint of it, at that port's target, as upstream's service proxy picks one (not through
the ClusterIP).

The request is sent as HTTP/1.0 with ``Connection: close`` over a socket made by the server's
``Outbound`` (in a lab: a socket in a node's network namespace, so that it crosses the lab's data
plane), and the answer is passed back as it came: status, headers (but hop-by-hop ones) and body.
"""
from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from netplane.api.errors import ApiError, bad_request

# how the server makes its outbound sockets, given an addrinfo tuple (family, type, proto, name,
# address): aiohttp's socket factory, so its client sessions make theirs the same way
Outbound = Callable[[tuple], socket.socket]
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})
TIMEOUT = 30.0


def here(addrinfo: tuple) -> socket.socket:
    """The default Outbound: a socket in the server's own network namespace."""
    return socket.socket(*addrinfo[:3])


async def connect(outbound: Outbound, host: str, port: int,
                  context: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to host:port from a socket outbound makes (TLS with a context)."""
    sock = outbound((socket.AF_INET, socket.SOCK_STREAM, 0, "", (host, port)))
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    if context is None:
        return await asyncio.open_connection(sock=sock)
    return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=host)


def split_name(text: str) -> tuple[str, str, str]:
    """(scheme, name, port) of ``name``, ``name:port`` or ``scheme:name:port``."""
    parts = text.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise bad_request(f"invalid resource name {text!r}: expected name, name:port or scheme:name:port")


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def pod_target(pod: dict, port: str) -> tuple[str, int]:
    """(pod IP, port) the proxy goes to."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise _unavailable(f'address not allowed: pod "{pod["metadata"]["name"]}" has no IP yet')
    ports = [p for c in pod.get("spec", {}).get("containers", []) for p in c.get("ports") or []]
    if not port:
        return ip, int(ports[0]["containerPort"]) if ports else 80
    if port.isdigit():
        return ip, int(port)
    named = [p["containerPort"] for p in ports if p.get("name") == port]
    if not named:
        raise bad_request(f'pod "{pod["metadata"]["name"]}" has no container port named {port!r}')
    return ip, int(named[0])


def service_target(service: dict, slices: list[dict], port: str) -> tuple[str, int]:
    """(endpoint IP, port) of a ready endpoint behind the Service's port (by name, as upstream; a
    number is taken too)."""
    name = service["metadata"]["name"]
    ports = [p for p in service.get("spec", {}).get("ports") or [] if port in (p.get("name", ""), str(p.get("port")))]
    if not ports:
        raise _unavailable(f'no service port "{port}" found for service "{name}"')
    port_name = ports[0].get("name", "")
    choices = [(address, p["port"]) for s in slices for p in s.get("ports") or [] if p.get("name", "") == port_name
               for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready", True)
               for address in e.get("addresses") or []]
    if not choices:
        raise _unavailable(f'no endpoints available for service "{name}"')
    return random.choice(choices)


async def forward(request: web.Request, outbound: Outbound, host: str, port: int, path: str) -> web.Response:
    """Send the request to host:port and pass the answer back."""
    query = f"?{request.query_string}" if request.query_string else ""
    head = [f"{request.method} /{path}{query} HTTP/1.0", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in request.headers.items()
             if k.lower() not in HOP_BY_HOP | {"host", "authorization"}]
    body = await request.read()
    if body:
        head.append(f"Content-Length: {len(body)}")
    try:
        reader, writer = await asyncio.wait_for(connect(outbound, host, port), TIMEOUT)
    except (OSError, asyncio.TimeoutError) as err:
        raise _unavailable(f"error trying to reach service: dial tcp {host}:{port}: {err}") from None
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    except (OSError, asyncio.TimeoutError) as err:
        raise _unavailable(f"error trying to reach service: {err}") from None
    finally:
        writer.close()
    return _response(raw)


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and the headers (name, value) of an HTTP answer's head; ValueError when it is none."""
    lines = head.decode("iso-8859-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise ValueError("the answer is not HTTP") from None
    found = [line.partition(":") for line in lines[1:]]
    return status, [(key.strip(), value.strip()) for key, _, value in found if key]


def _response(raw: bytes) -> web.Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status, headers = parse_head(head)
    except ValueError:
        raise _unavailable("error trying to reach service: the backend's answer is not HTTP") from None
    resp = web.Response(status=status, body=body)
    for key, value in headers:
        if key.lower() not in HOP_BY_HOP:
            resp.headers.add(key, value)
    return resp
