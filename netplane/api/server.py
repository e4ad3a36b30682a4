"""The embedded Kubernetes API server: CRUD, status, watch and discovery over aiohttp.

Store calls are synchronous and quick, so handlers call the store directly on the loop.
A watch subscribes to the store *before* it takes its snapshot (list or replayed log) and then
skips queued events at or below the snapshot's resourceVersion, so nothing is lost or doubled.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from netplane.api.errors import ApiError, Gone, bad_request
from netplane.api.resources import RESOURCES, Resource, api_version, group_path
from netplane.api.store import Store

MAX_BODY = 3 * 1024 * 1024
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-netplane",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "1970-01-01T00:00:00Z",
    "goVersion": "",
    "compiler": "cpython",
    "platform": "linux/amd64",
}
STORE = web.AppKey("store", Store)
WATCHES = web.AppKey("watches", set)  # the queues of open watches, ended on shutdown
FIELDS = frozenset({"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"})

Match = Callable[[dict], bool]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# -- selectors (equality-based only, as the task needs; set-based ones are refused with 400)

_KEY = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_./]*")
_VALUE = re.compile(r"[-A-Za-z0-9_.]*")


def _terms(text: str, param: str) -> list[tuple[str, str, str]]:
    """(key, op, value) for each comma-separated term; op is one of = != exists !exists."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        for sep, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if sep in term:
                key, value = (part.strip() for part in term.split(sep, 1))
                break
        else:
            negated = term.startswith("!")
            op, key, value = ("!exists" if negated else "exists"), (term[1:] if negated else term).strip(), ""
        if not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise bad_request(
                f"unable to parse requirement {term!r} in {param} (supported: k=v, k==v, k!=v, k, !k)"
            )
        terms.append((key, op, value))
    return terms


def _test(op: str, present: bool, got: str, want: str) -> bool:
    if op in ("exists", "!exists"):
        return present == (op == "exists")
    return (present and got == want) == (op == "=")  # "!=" also matches objects without the key


def _field(obj: dict, path: str) -> str:
    """A field's value as a field selector sees it: missing is the empty string."""
    node = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def selector(query: Mapping[str, str]) -> Match:
    """The predicate of a request's labelSelector and fieldSelector."""
    labels = _terms(query.get("labelSelector", ""), "labelSelector")
    fields = _terms(query.get("fieldSelector", ""), "fieldSelector")
    for key, op, _ in fields:
        if key not in FIELDS or op not in ("=", "!="):
            supported = ", ".join(sorted(FIELDS))
            raise bad_request(f'field label not supported: "{key}" (supported: {supported}; =, ==, !=)')

    def match(obj: dict) -> bool:
        have = obj.get("metadata", {}).get("labels") or {}
        return all(_test(op, k in have, have.get(k, ""), v) for k, op, v in labels) and all(
            _test(op, True, _field(obj, k), v) for k, op, v in fields
        )

    return match


# -- responses and bodies


def _json(data: dict, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name, "")
    if not text:
        return None
    if not text.isdigit():
        raise bad_request(f"invalid {name}: {text!r} is not a non-negative integer")
    return int(text)


async def _body(request: web.Request, namespace: str | None, name: str | None = None) -> dict:
    """The JSON object of a request, its metadata checked against (and defaulted from) the URL."""
    try:
        body = json.loads(await request.read())
    except ValueError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict) or not isinstance(body.setdefault("metadata", {}), dict):
        raise bad_request("the request body must be a JSON object with an object 'metadata'")
    meta = body["metadata"]
    for key, want in (("namespace", namespace), ("name", name)):
        if want is None:
            continue
        if meta.get(key) and meta[key] != want:
            raise bad_request(
                f"the {key} of the object ({meta[key]}) does not match the {key} on the URL ({want})"
            )
        meta[key] = want
    return body


# -- watch


async def _send(resp: web.StreamResponse, events: list[tuple[str, dict]]) -> None:
    if events:
        lines = (json.dumps({"type": t, "object": o}, separators=(",", ":")) + "\n" for t, o in events)
        await resp.write("".join(lines).encode())


async def _next_batch(queue: asyncio.Queue, deadline: float | None) -> list | None:
    """The queued events (at least one), or None at the deadline or on shutdown."""
    remaining = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        batch = [await asyncio.wait_for(queue.get(), remaining)]
    except TimeoutError:
        return None
    while not queue.empty():
        batch.append(queue.get_nowait())
    return None if None in batch else batch


async def _watch(
    request: web.Request, res: Resource, namespace: str | None, match: Match
) -> web.StreamResponse:
    store = request.app[STORE]
    since = _int_param(request.query, "resourceVersion") or None  # unset and "0" both start with a list
    timeout = _int_param(request.query, "timeoutSeconds")
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

    def wanted(plural: str, obj: dict) -> bool:
        in_ns = namespace is None or obj["metadata"].get("namespace") == namespace
        return plural == res.plural and in_ns and match(obj)

    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    queue = store.subscribe()  # no await between this and the snapshot below
    request.app[WATCHES].add(queue)
    try:
        try:
            if since is None:
                items, last = store.list(res.plural, namespace)
                first = [("ADDED", o) for o in items if match(o)]
            else:
                events = store.events_since(since)
                last = events[-1][0] if events else since
                first = [(t, o) for _, t, p, o in events if wanted(p, o)]
        except Gone as e:
            await _send(resp, [("ERROR", e.status())])
            return resp
        await _send(resp, first)
        while (batch := await _next_batch(queue, deadline)) is not None:
            await _send(resp, [(t, o) for rv, t, p, o in batch if rv > last and wanted(p, o)])
            last = max(last, batch[-1][0])
    except ConnectionResetError:
        pass  # the client went away
    finally:
        request.app[WATCHES].discard(queue)
        store.unsubscribe(queue)
    return resp


async def _end_watches(app: web.Application) -> None:
    for queue in app[WATCHES]:
        queue.put_nowait(None)


# -- resource handlers


class _Handlers:
    """The REST verbs of one resource."""

    def __init__(self, res: Resource):
        self.res = res

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        namespace, match = request.match_info.get("namespace"), selector(request.query)
        if request.query.get("watch") in ("1", "true"):
            return await _watch(request, self.res, namespace, match)
        items, rv = request.app[STORE].list(self.res.plural, namespace)
        return _json({
            "kind": f"{self.res.kind}List",
            "apiVersion": api_version(self.res),
            "metadata": {"resourceVersion": str(rv)},
            "items": [o for o in items if match(o)],
        })

    async def create(self, request: web.Request) -> web.Response:
        body = await _body(request, request.match_info.get("namespace"))
        return _json(request.app[STORE].create(self.res.plural, body), status=201)

    async def get(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(request.app[STORE].get(self.res.plural, info.get("namespace"), info["name"]))

    async def replace(self, request: web.Request) -> web.Response:
        return await self._update(request, None)

    async def replace_status(self, request: web.Request) -> web.Response:
        return await self._update(request, "status")

    async def delete(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(request.app[STORE].delete(self.res.plural, info.get("namespace"), info["name"]))

    async def _update(self, request: web.Request, subresource: str | None) -> web.Response:
        body = await _body(request, request.match_info.get("namespace"), request.match_info["name"])
        return _json(request.app[STORE].update(self.res.plural, body, subresource))


def _add_resource_routes(router: web.UrlDispatcher, res: Resource) -> None:
    h, root = _Handlers(res), group_path(res)
    collection = f"{root}/{res.plural}"
    if res.namespaced:
        router.add_get(collection, h.list_or_watch)  # across all namespaces
        collection = f"{root}/namespaces/{{namespace}}/{res.plural}"
    router.add_get(collection, h.list_or_watch)
    router.add_post(collection, h.create)
    item = collection + "/{name}"
    router.add_get(item, h.get)
    router.add_put(item, h.replace)
    router.add_delete(item, h.delete)
    if res.has_status:
        router.add_get(item + "/status", h.get)
        router.add_put(item + "/status", h.replace_status)


# -- discovery


def _constant(data: dict) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return _json(data)

    return handler


def _resource_list(group_version: str, resources: list[Resource]) -> dict:
    entries = []
    for r in resources:
        short = [a for a in r.aliases if a != r.singular]
        verbs = ["create", "delete", "get", "list", "update", "watch"]
        entries.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": verbs, "shortNames": short})
        if r.has_status:
            entries.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get", "update"]})
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries
    }


def _add_discovery_routes(router: web.UrlDispatcher) -> None:
    by_gv: dict[str, list[Resource]] = {}
    for r in RESOURCES:
        by_gv.setdefault(api_version(r), []).append(r)
    groups = []
    for gv, resources in by_gv.items():
        router.add_get(group_path(resources[0]), _constant(_resource_list(gv, resources)))
        if "/" in gv:
            name, version = gv.split("/")
            entry = {"groupVersion": gv, "version": version}
            group = {"name": name, "versions": [entry], "preferredVersion": entry}
            groups.append(group)
            router.add_get(f"/apis/{name}", _constant({"kind": "APIGroup", "apiVersion": "v1", **group}))
    router.add_get("/apis", _constant({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
    versions = sorted(gv for gv in by_gv if "/" not in gv)

    async def api_versions(request: web.Request) -> web.Response:
        addresses = [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]
        return _json({"kind": "APIVersions", "versions": versions, "serverAddressByClientCIDRs": addresses})

    router.add_get("/api", api_versions)
    router.add_get("/version", _constant(VERSION))


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


# -- middlewares and the app

_HTTP_MESSAGES = {
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
}


@web.middleware
async def _errors_as_status(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a ``kind: Status`` with its HTTP code."""
    try:
        return await handler(request)
    except ApiError as e:
        return _json(e.status(), status=e.code)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        error = ApiError.for_code(e.status, _HTTP_MESSAGES.get(e.status, e.text or e.reason))
        return _json(error.status(), status=e.status)


def _bearer(token: str) -> Callable:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if request.path not in OPEN_PATHS and not hmac.compare_digest(given, expected):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    return check


def build_app(store: Store, token: str | None = None) -> web.Application:
    middlewares = [_errors_as_status] + ([_bearer(token)] if token else [])
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[STORE] = store
    app[WATCHES] = set()
    app.on_shutdown.append(_end_watches)
    for path in OPEN_PATHS:
        app.router.add_get(path, _ok)
    _add_discovery_routes(app.router)
    for res in RESOURCES:
        _add_resource_routes(app.router, res)
    return app


async def start(
    store: Store, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serves the store (over TLS when given a context); returns the runner (``await runner.cleanup()``
    stops it) and the bound port."""
    # handler_cancellation: a watch whose client hangs up is cancelled at once and unsubscribes.
    runner = web.AppRunner(build_app(store, token), handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]
