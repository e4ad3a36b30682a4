"""The API server's audit log, as kube-apiserver writes it: one ``audit.k8s.io/v1`` Event per
request, as a JSON line, to a file (``--audit-log-path``) and optionally to stdout, at one policy
level for every request:

- ``None``: nothing is written;
- ``Metadata``: who (user, groups, source IP, user agent), what (verb, requestURI, the object's
  resource, namespace, name, group, version and subresource), when (received, completed) and the
  response's status;
- ``Request``: also the request's body (``requestObject``) for writes;
- ``RequestResponse``: also the response's body (``responseObject``), except a watch's stream.

Each request gets one Event at stage ``ResponseComplete`` (a watch's once it ends); the stage
``RequestReceived`` is omitted, as the policies kubeadm documents omit it. A request refused by
authentication (401) is written without a user, as kube-apiserver's failed-authentication audit does.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from netplane.api.times import micro_time_text

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
WRITES = ("create", "update", "patch")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RequestInfo:
    """What a request is about, as the apiserver's RequestInfoFactory reads its path."""

    verb: str
    resource: str = ""  # "" for a non-resource URL (/healthz, /version, discovery)
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    group: str = ""
    version: str = ""

    def object_ref(self) -> dict | None:
        if not self.resource:
            return None
        fields = (("resource", self.resource), ("namespace", self.namespace), ("name", self.name),
                  ("apiGroup", self.group), ("apiVersion", self.version), ("subresource", self.subresource))
        return {key: value for key, value in fields if value}


METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_info(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(method.lower())
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":  # namespaces/NS/<resource>...; namespaces/NS alone is a Namespace
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return RequestInfo(method.lower())
    resource, name, subresource = rest[0], (rest[1:2] or [""])[0], (rest[2:3] or [""])[0]
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = METHOD_VERBS.get(method, method.lower())
    if resource == "namespaces" and name and not namespace:
        namespace = name
    return RequestInfo(verb, resource, namespace, name, subresource, group, version)


class AuditLog:
    """Where Events go, at which level."""

    def __init__(self, level: str, path: Path | None = None, stdout: bool = False) -> None:
        if level not in LEVELS:
            raise ValueError(f"audit level {level!r}: choose one of {', '.join(LEVELS)}")
        self.level = level
        self._sinks: list[IO[str]] = [sys.stdout] if stdout else []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sinks.append(open(path, "a", buffering=1))

    def write(self, event: dict) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        for sink in self._sinks:
            sink.write(line)

    def close(self) -> None:
        for sink in self._sinks:
            if sink is not sys.stdout:
                sink.close()


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None  # protobuf or YAML: not written


def event(log: AuditLog, request: web.Request, info: RequestInfo, response: web.StreamResponse, user: dict,
          received: float, request_body: bytes) -> dict:
    status: dict[str, Any] = {"metadata": {}, "code": response.status}
    body = getattr(response, "body", None)
    answer = _body(body) if isinstance(body, (bytes, bytearray)) and body else None
    if response.status >= 400 and isinstance(answer, dict) and answer.get("kind") == "Status":
        status |= {k: answer[k] for k in ("status", "message", "reason", "details") if k in answer}
    out: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": log.level, "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete", "requestURI": request.path_qs, "verb": info.verb, "user": user,
        "sourceIPs": [request.remote or ""], "userAgent": request.headers.get("User-Agent", ""),
    }
    if info.object_ref() is not None:
        out["objectRef"] = info.object_ref()
    out["responseStatus"] = status
    if log.level in ("Request", "RequestResponse") and info.verb in WRITES and request_body:
        found = _body(request_body)
        if found is not None:
            out["requestObject"] = found
    if log.level == "RequestResponse" and answer is not None and info.verb != "watch":
        out["responseObject"] = answer
    out |= {"requestReceivedTimestamp": micro_time_text(received), "stageTimestamp": micro_time_text(),
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}}
    return out


def middleware(log: AuditLog, user_of: Callable[[web.Request], dict]) -> Callable:
    """Writes an Event for every request the server answered (``user_of`` says who made it)."""

    @web.middleware
    async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
        received = time.time()
        response = await handler(request)
        info = request_info(request.method, request.path, dict(request.query))
        wanted = log.level != "Metadata" and info.verb in WRITES and request.body_exists
        body = await request.read() if wanted else b""  # the handler read it: aiohttp keeps it
        log.write(event(log, request, info, response, user_of(request), received, body))
        return response

    return audited
