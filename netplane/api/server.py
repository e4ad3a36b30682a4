"""The embedded Kubernetes API server: CRUD, PATCH, subresources (status, scale), watch, discovery,
OpenAPI v3 and server-side Tables over aiohttp, as kubectl and the official clients use them.

Store calls are synchronous and quick, so handlers call the store directly on the loop.
A watch subscribes to the store *before* it takes its snapshot (list or replayed log) and then
skips queued events at or below the snapshot's resourceVersion, so nothing is lost or doubled.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from netplane import names
from netplane.api import (audit, auth, codec, eviction, health, kubelets, writes, metrics, openapi, openapi_pb, paging,
                          patch, podexec, podlog, protobuf, proxy, schema, serviceaccounts, tables, views)
from netplane.api.errors import ApiError, Gone, bad_request
from netplane.api.kubelets import Kubelets
from netplane.api.writes import DeleteOptions
from netplane.api.resources import Resource, View, api_version, group_path
from netplane.api.satokens import TokenIssuer
from netplane.api.store import Store

MAX_BODY = 3 * 1024 * 1024
OPEN_PREFIXES = tuple(f"/{e}" for e in health.ENDPOINTS)  # answered without a token, as upstream's health checks
NO_DELETE_COLLECTION = frozenset({"namespaces"})  # as upstream: a namespace goes only by name
VERSION = {
    "major": names.KUBERNETES_VERSION[0],
    "minor": names.KUBERNETES_VERSION[1],
    "gitVersion": names.KUBERNETES_VERSION[2],
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "1970-01-01T00:00:00Z",
    "goVersion": "",
    "compiler": "cpython",
    "platform": "linux/amd64",
}
STORE = web.AppKey("store", Store)
WATCHES = web.AppKey("watches", set)  # the queues of open watches, ended on shutdown
OUTBOUND = web.AppKey("outbound", object)  # how the proxy subresources' sockets are made (proxy.Outbound)
KUBELETS = web.AppKey("kubelets", Kubelets)
ISSUER = web.AppKey("issuer", object)  # the ServiceAccount token issuer (satokens.TokenIssuer), or None
USER = web.RequestKey("user", auth.User)  # who a request speaks for
PROXIED = ("pods", "services", "nodes")  # the resources with a proxy subresource

Match = Callable[[dict], bool]


class Typed(NamedTuple):
    """What a request's body is read as: its schema, kind and apiVersion."""

    schema_key: str
    kind: str
    api_version: str

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# -- selectors: labels as kubectl writes them (k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b));
#    fields with =, == and != on the fields each resource supports, as the apiserver's field labels

_KEY = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_./]*")
_VALUE = re.compile(r"[-A-Za-z0-9_.]*")
_SET = re.compile(r"(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)")
COMMON_FIELDS = {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace"}
FIELDS: dict[str, dict[str, str]] = {  # per resource: field label -> path in the object
    "pods": {f: f for f in ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName")},
    "events": {**{f: f for f in ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                                 "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                                 "involvedObject.fieldPath", "reason", "reportingComponent", "type")},
               "source": "source.component"},
    "nodes": {"spec.unschedulable": "spec.unschedulable"},
    "namespaces": {"status.phase": "status.phase"},
    "services": {"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"},
    "replicasets": {"status.replicas": "status.replicas"},
}


def _split_terms(text: str) -> list[str]:
    """Comma-separated terms; commas inside ``in (a,b)`` do not separate."""
    terms, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if c == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms if t.strip()]


def _terms(text: str, param: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, op, values) for each term; op is one of = != in notin exists !exists."""
    terms = []
    for term in _split_terms(text):
        found = _SET.fullmatch(term)
        if found:
            key, op = found["key"], found["op"]
            values = tuple(v.strip() for v in found["values"].split(",") if v.strip())
        else:
            for sep, op in (("!=", "!="), ("==", "="), ("=", "=")):
                if sep in term:
                    key, value = (part.strip() for part in term.split(sep, 1))
                    break
            else:
                negated = term.startswith("!")
                op, key, value = ("!exists" if negated else "exists"), (term[1:] if negated else term).strip(), ""
            values = (value,)
        if not _KEY.fullmatch(key) or not all(_VALUE.fullmatch(v) for v in values):
            supported = "k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)"
            raise bad_request(f"unable to parse requirement {term!r} in {param} (supported: {supported})")
        terms.append((key, op, values))
    return terms


def _unescaped(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of each character of text that no backslash escapes."""
    escaped = False
    for i, c in enumerate(text):
        if not escaped and c != "\\":
            yield i, c
        escaped = not escaped and c == "\\"


def _split_terms_unescaped(text: str) -> list[str]:
    cuts = [i for i, c in _unescaped(text) if c == ","]
    return [text[a + 1:b] for a, b in zip([-1, *cuts], [*cuts, len(text)])]


def _operator(term: str) -> tuple[str, str, str] | None:
    """(key, op, value) at the first unescaped =, == or !=; None when there is none."""
    for i, c in _unescaped(term):
        if c == "!" and term.startswith("!=", i):
            return term[:i], "!=", term[i + 2:]
        if c == "=":
            double = term.startswith("==", i)
            return term[:i], "=", term[i + (2 if double else 1):]
    return None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _field_terms(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """fieldSelector terms as apimachinery's fields.ParseSelector reads them: k=v, k==v, k!=v, split
    on commas, a value holding anything, with ``\\`` escaping ``,``, ``=``, ``!`` and itself."""
    terms = []
    for term in filter(str.strip, _split_terms_unescaped(text)):
        found = _operator(term)
        if found is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = found
        terms.append((key.strip(), op, (_unescape(value),)))
    return terms


def _test(op: str, present: bool, got: str, want: tuple[str, ...]) -> bool:
    if op in ("exists", "!exists"):
        return present == (op == "exists")
    if op in ("=", "in"):
        return present and got in want
    return not (present and got in want)  # "!=" and "notin" also match objects without the key


def _field(obj: dict, path: str) -> str:
    """A field's value as a field selector sees it: missing is the empty string, booleans lower-case."""
    node = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def selector(query: Mapping[str, str], plural: str = "pods", view: View | None = None) -> Match:
    """The predicate of a request's labelSelector and fieldSelector on a resource (on the stored
    objects of a view, whose labels are mapped to the stored resource's)."""
    labels = _terms(query.get("labelSelector", ""), "labelSelector")
    fields = _field_terms(query.get("fieldSelector", ""))
    known = {**COMMON_FIELDS, **FIELDS.get(plural, {})}
    if view is not None:
        known = {**COMMON_FIELDS, **{label: known[stored] for label, stored in view.field_labels.items()}}
    for key, _, _ in fields:
        if key not in known:
            raise bad_request(f"field label not supported: {key}")  # upstream's words
    fields = [(known[key], op, values) for key, op, values in fields]

    def match(obj: dict) -> bool:
        have = obj.get("metadata", {}).get("labels") or {}
        return all(_test(op, k in have, have.get(k, ""), v) for k, op, v in labels) and all(
            _test(op, True, _field(obj, k), v) for k, op, v in fields
        )

    return match


# -- responses and bodies


def _json(data: dict, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(data), status=status, content_type="application/json")


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name, "")
    if not text:
        return None
    if not text.isdigit():
        raise bad_request(f"invalid {name}: {text!r} is not a non-negative integer")
    return int(text)


def _bool_param(query: Mapping[str, str], name: str) -> bool | None:
    text = query.get(name)
    if text in (None, ""):
        return None
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise bad_request(f"invalid {name}: {text!r} is not a boolean")


class _YamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


def _media_type(request: web.Request) -> str:
    """The request's media type; none given reads as JSON, as the apiserver's clients expect."""
    header = request.headers.get("Content-Type", "")
    return header.split(";")[0].strip().lower() or "application/json"


def _unsupported_media(accepted: list[str]) -> ApiError:
    """Upstream's words (which do not name the type that was sent)."""
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media "
                                                 f"types include: {', '.join(accepted)}")


async def _decode(request: web.Request, media: str, duplicates: list[str] | None = None) -> Any:
    """The body as JSON or YAML; duplicate keys of JSON objects are noted in ``duplicates``."""
    raw = await request.read()
    if media in YAML_TYPES:
        try:
            return yaml.load(raw, Loader=_YamlLoader)
        except yaml.YAMLError as e:
            raise bad_request(f"the request body is not valid YAML: {e}") from None
        except RecursionError:
            raise bad_request("the request body is nested too deeply") from None

    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in out and duplicates is not None:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        return json.loads(raw, object_pairs_hook=pairs)
    except ValueError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # kube-apiserver's decoder stops at a depth of 10,000: 400 too
        raise bad_request("the request body is not valid JSON: nested too deeply") from None


async def _body(request: web.Request, namespace: str | None, name: str | None = None,
                duplicates: list[str] | None = None) -> dict:
    """The object of a request (JSON or YAML), its metadata checked against (and defaulted from) the URL."""
    media = _media_type(request)
    if media == protobuf.MEDIA_TYPE:  # kubectl create namespace|service|deployment (protobuf.py)
        body = protobuf.decode(await request.read())
    elif media in JSON_TYPES | YAML_TYPES:
        body = await _decode(request, media, duplicates)
    else:
        raise _unsupported_media(sorted(JSON_TYPES | YAML_TYPES) + [protobuf.MEDIA_TYPE])
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


# -- request options: dry run, field validation (schema.py), warnings


FIELD_VALIDATION = ("Ignore", "Warn", "Strict")
WARNINGS = web.RequestKey("warnings", list)  # the Warning headers the response gets


def _dry_run(query: Any) -> bool:
    """``dryRun=All`` (the query is a multidict: the parameter may repeat)."""
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f'Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _warn(request: web.Request, message: str) -> None:
    request.setdefault(WARNINGS, []).append(message)


def _fields_checked(request: web.Request, typed: Typed, obj: dict, duplicates: list[str]) -> dict:
    """The object as a Go decoder would take it, per ``fieldValidation``: Strict refuses unknown and
    duplicate fields (400); Warn (the default) drops them with a Warning header each; Ignore drops them."""
    mode = request.query.get("fieldValidation") or "Warn"
    if mode not in FIELD_VALIDATION:
        raise bad_request(f'fieldValidation: Unsupported value: "{mode}": '
                          f'supported values: {", ".join(FIELD_VALIDATION)}')
    node, kind, api_version_ = schema.for_kind(typed.schema_key), typed.kind, typed.api_version
    unknown = list(schema.unknown_fields(node, obj))
    problems = [f'unknown field "{u}"' for u in unknown] + [f'duplicate field "{d}"' for d in duplicates]
    if problems and mode == "Strict":
        version = api_version_.split("/")[-1]
        raise bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                          f"strict decoding error: {', '.join(problems)}")
    if problems and mode == "Warn":
        for problem in problems:
            _warn(request, problem)
    return schema.prune(node, obj, set(unknown))


# -- what the client accepts: JSON, YAML, a Table or PartialObjectMetadata


def _accepts(request: web.Request) -> tuple[str, str]:
    """("json" | "yaml" | "table" | "metadata", meta.k8s.io version) of the first media type we serve."""
    header = request.headers.get("Accept", "")
    if not header.strip():
        return "json", ""
    for clause in header.split(","):
        media, *params = [p.strip() for p in clause.split(";")]
        options = dict(p.split("=", 1) for p in params if "=" in p)
        as_ = options.get("as")
        if media.lower() not in ("application/json", "application/*", "*/*", "application/yaml"):
            continue
        if as_ is None:
            return ("yaml" if media.lower() == "application/yaml" else "json"), ""
        if options.get("g") != "meta.k8s.io" or options.get("v") not in tables.TABLE_VERSIONS:
            continue
        if as_ == "Table":
            return "table", options["v"]
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return "metadata", options["v"]
    raise ApiError(406, "NotAcceptable",
                   f"only the following media types are accepted: application/json, application/yaml, "
                   f"application/json;as=Table;v=v1;g=meta.k8s.io (asked for {header!r})")


def _include_object(query: Mapping[str, str]) -> str:
    value = query.get("includeObject") or "Metadata"
    if value not in tables.INCLUDE_OBJECT:
        raise bad_request(f'includeObject: Unsupported value: "{value}": supported values: '
                          f"{', '.join(tables.INCLUDE_OBJECT)}")
    return value


def _encoded(request: web.Request, data: dict, status: int = 200) -> web.Response:
    """JSON, or YAML when that is what the client asked for."""
    if request.headers.get("Accept", "").split(",")[0].split(";")[0].strip().lower() == "application/yaml":
        return web.Response(text=yaml.safe_dump(data, sort_keys=False), status=status, content_type="application/yaml")
    return _json(data, status)


def _as_requested(request: web.Request, res: Resource, obj: dict,
                  outward: Callable[[dict], dict] = lambda obj: obj) -> web.Response:
    """One object of a GET, as the client asked for it (a view's object converted by ``outward``)."""
    form, version = _accepts(request)
    if form == "table":
        meta = {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}
        return _json(tables.table(res, [obj], meta, _include_object(request.query), version=version))
    if form == "metadata":
        return _json({**tables.partial_metadata(obj), "apiVersion": f"meta.k8s.io/{version}"})
    return _encoded(request, outward(obj))


# -- watch

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
BOOKMARK_INTERVAL = web.AppKey("bookmark_interval", float)  # seconds between BOOKMARKs (the apiserver: ~1 min;
# here 10 s, so that a client sees within seconds that a watch whose server died has gone silent)


class _Events:
    """Writes watch events, converting objects to one-row Tables when the client asked for them
    (column definitions only on the first, as the apiserver does)."""

    def __init__(self, resp: web.StreamResponse, res: Resource, form: str, version: str, include: str,
                 outward: Callable[[dict], dict]):
        self.resp, self.res, self.form, self.version, self.include = resp, res, form, version, include
        self.outward = outward
        self.headers = True

    def _object(self, type_: str, obj: dict) -> dict:
        if self.form == "table" and type_ in ("ADDED", "MODIFIED", "DELETED"):
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            table = tables.table(self.res, [obj], meta, self.include, headers=self.headers, version=self.version)
            self.headers = False
            return table
        if self.form == "metadata" and type_ in ("ADDED", "MODIFIED", "DELETED"):
            return {**tables.partial_metadata(obj), "apiVersion": f"meta.k8s.io/{self.version}"}
        return self.outward(obj) if type_ in ("ADDED", "MODIFIED", "DELETED") else obj

    async def send(self, events: list[tuple[str, dict]]) -> None:
        if events:
            lines = (codec.dumps({"type": t, "object": self._object(t, o)}) + b"\n" for t, o in events)
            await self.resp.write(b"".join(lines))

    async def bookmark(self, rv: int, initial_events_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        await self.send([("BOOKMARK", {"kind": self.res.kind, "apiVersion": api_version(self.res), "metadata": meta})])


def _check_watch_options(query: Mapping[str, str]) -> bool | None:
    """sendInitialEvents (None when not given), after the apiserver's checks of a watch's options."""
    initial = _bool_param(query, "sendInitialEvents")
    match = query.get("resourceVersionMatch", "")
    if initial is not None and match != "NotOlderThan":
        raise _invalid_list_options("resourceVersionMatch", "Forbidden: sendInitialEvents requires setting "
                                    "resourceVersionMatch to NotOlderThan")
    if match and initial is None:
        raise _invalid_list_options("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden for "
                                    "watch unless sendInitialEvents is provided")
    if match and match != "NotOlderThan":
        raise _invalid_list_options("resourceVersionMatch", f'Unsupported value: "{match}": supported values: '
                                    '"NotOlderThan"')
    return initial


async def _next_batch(queue: asyncio.Queue, wait: float | None) -> list | None:
    """The queued events: at least one, or none once ``wait`` seconds passed; None on shutdown.

    The queue is empty when this returns, timed out or not: a wait that times out just as an event
    arrives leaves it queued (its get is cancelled), and the caller's bookmark, read from the
    subscription's progress, counts every event offered so far as taken."""
    batch = []
    if queue.empty():
        try:
            batch.append(await asyncio.wait_for(queue.get(), wait))
        except TimeoutError:
            pass
    while not queue.empty():
        batch.append(queue.get_nowait())
    return None if None in batch else batch


async def _watch(
    request: web.Request, res: Resource, namespace: str | None, match: Match, outward: Callable[[dict], dict]
) -> web.StreamResponse:
    """A watch: the current objects first (no resourceVersion, "0", or sendInitialEvents=true, which
    ends them with a BOOKMARK annotated initial-events-end), else the log replayed from the given
    resourceVersion; then every change, BOOKMARKs every so often when allowed, until timeoutSeconds."""
    store, query, loop = request.app[STORE], request.query, asyncio.get_running_loop()
    initial = _check_watch_options(query)
    since = _int_param(query, "resourceVersion") or None
    timeout = _int_param(query, "timeoutSeconds")
    deadline = None if timeout is None else loop.time() + timeout
    interval = request.app[BOOKMARK_INTERVAL] if _bool_param(query, "allowWatchBookmarks") else None
    form, version = _accepts(request)
    include = _include_object(query)

    def wanted(plural: str, obj: dict) -> bool:
        in_ns = namespace is None or obj["metadata"].get("namespace") == namespace
        return plural == res.plural and in_ns and match(obj)

    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    out = _Events(resp, res, form, version, include, outward)
    feed = store.subscribe(wanted)  # no await between this and the snapshot below
    request.app[WATCHES].add(feed.queue)
    try:
        try:
            if initial or (initial is None and since is None):
                items, last = store.list(res.plural, namespace)
                first = [("ADDED", o) for o in items if match(o)]
            elif since is None:  # sendInitialEvents=false: from now on
                first, last = [], store.resource_version
            else:
                events = store.events_since(since)
                last = events[-1][0] if events else since
                first = [(t, o) for _, t, p, o in events if wanted(p, o)]
        except Gone as e:
            await out.send([("ERROR", e.status())])
            return resp
        await out.send(first)
        if initial:
            await out.bookmark(last, initial_events_end=True)
        next_bookmark = None if interval is None else loop.time() + interval
        while deadline is None or loop.time() < deadline:
            waits = [t - loop.time() for t in (deadline, next_bookmark) if t is not None]
            batch = await _next_batch(feed.queue, max(0.0, min(waits)) if waits else None)
            if batch is None:
                break
            offered = feed.progress  # read before any await: every wanted event up to it is in batch
            await out.send([(t, o) for rv, t, _, o in batch if rv > last])
            last = max(last, offered)
            if next_bookmark is not None and loop.time() >= next_bookmark:
                await out.bookmark(last)
                next_bookmark = loop.time() + interval
    except ConnectionResetError:
        pass  # the client went away
    finally:
        request.app[WATCHES].discard(feed.queue)
        store.unsubscribe(feed)
    return resp


async def _end_watches(app: web.Application) -> None:
    for queue in app[WATCHES]:
        queue.put_nowait(None)


# -- lists: selectors, limit/continue (paging.py), resourceVersion/resourceVersionMatch


def _invalid_list_options(field: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
                    {"group": "meta.k8s.io", "kind": "ListOptions", "causes": [{"field": field, "message": message}]})


def _list(store: Store, plural: str, namespace: str | None, match: Match,
          query: Mapping[str, str]) -> tuple[list[dict], dict]:
    """One page of a list and its ListMeta, after the apiserver's checks of the list options."""
    token_text = query.get("continue", "")
    rv_text, rv_match = query.get("resourceVersion", ""), query.get("resourceVersionMatch", "")
    if _bool_param(query, "sendInitialEvents") is not None:
        raise _invalid_list_options("sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for list")
    if rv_match:
        if not rv_text:
            raise _invalid_list_options("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden "
                                        "unless resourceVersion is provided")
        if token_text:
            raise _invalid_list_options("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden "
                                        "when continue is provided")
        if rv_match not in ("Exact", "NotOlderThan"):
            raise _invalid_list_options("resourceVersionMatch", f'Unsupported value: "{rv_match}": supported '
                                        'values: "Exact", "NotOlderThan", ""')
        if rv_match == "Exact" and rv_text == "0":
            raise _invalid_list_options("resourceVersionMatch", 'Forbidden: resourceVersionMatch "exact" is '
                                        'forbidden for resourceVersion "0"')
    if token_text and rv_text not in ("", "0"):
        raise bad_request("specifying resource version is not allowed when using continue")
    limit, rv = _int_param(query, "limit"), _int_param(query, "resourceVersion")
    after = None
    if token_text:
        token = paging.Token.decode(token_text)
        after = token.after
        try:
            items, current = store.list(plural, namespace, token.resource_version or None)
        except Gone:
            raise paging.Expired(paging.Token(0, after)) from None
    else:
        # Exact reads the past; NotOlderThan (and a bare resourceVersion) is served by the present,
        # unless that is older than asked for: then store.list says "Too large resource version".
        at = rv if rv and (rv_match == "Exact" or rv > store.resource_version) else None
        items, current = store.list(plural, namespace, at)
    chunk, next_key, remaining = paging.page([o for o in items if match(o)], limit, after)
    meta: dict[str, Any] = {"resourceVersion": str(current)}
    if next_key is not None:
        meta["continue"] = paging.Token(current, next_key).encode()
        if not query.get("labelSelector") and not query.get("fieldSelector"):
            meta["remainingItemCount"] = remaining
    return chunk, meta


# -- field managers

APPLY_PATCH = "application/apply-patch+yaml"
MAX_MANAGER = 128


def _invalid_patch_options(field: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {field}: {message}',
                    {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                        {"reason": "FieldValueRequired" if message.startswith("Required") else "FieldValueInvalid",
                         "message": message, "field": field}]})


def _manager(request: web.Request) -> str:
    """The write's field manager: ``fieldManager``, else the User-Agent up to its first '/', as
    kube-apiserver names it (kubectl, OpenAPI-Generator, ...), else "unknown"."""
    given = request.query.get("fieldManager")
    if given is not None:
        if len(given.encode()) > MAX_MANAGER or not given.isprintable():
            raise _invalid_patch_options("fieldManager", f'Invalid value: "{given}": must be at most {MAX_MANAGER} '
                                                         "printable characters")
        return given
    agent = "".join(c for c in request.headers.get("User-Agent", "").split("/")[0] if c.isprintable())
    return agent[:MAX_MANAGER] or "unknown"


# -- resource handlers


class _Handlers:
    """The REST verbs of one resource and its subresources; of a view (views.py), on its stored
    resource's objects, converted on the way in and out."""

    def __init__(self, res: Resource):
        self.res = res
        self.view = views.VIEWS.get(res)
        self.plural = self.view.stored.plural if self.view else res.plural

    def _out(self, obj: dict) -> dict:
        return self.view.from_stored(obj) if self.view else obj

    def _in(self, obj: dict) -> dict:
        return self.view.to_stored(obj) if self.view else obj

    @staticmethod
    def _where(request: web.Request) -> tuple[str | None, str]:
        return request.match_info.get("namespace"), request.match_info["name"]

    def _typed(self, subresource: str | None = None) -> Typed:
        if subresource == "scale":
            return Typed("Scale", "Scale", writes.SCALE_API_VERSION)
        return Typed(self.res.schema_key, self.res.kind, api_version(self.res))

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        namespace, match = request.match_info.get("namespace"), selector(request.query, self.plural, self.view)
        if _bool_param(request.query, "watch"):
            return await _watch(request, self.res, namespace, match, self._out)
        form, version = _accepts(request)
        items, meta = _list(request.app[STORE], self.plural, namespace, match, request.query)
        if form == "table":
            return _json(tables.table(self.res, items, meta, _include_object(request.query), version=version))
        if form == "metadata":
            partial = [{**tables.partial_metadata(o), "apiVersion": f"meta.k8s.io/{version}"} for o in items]
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{version}",
                          "metadata": meta, "items": partial})
        return _encoded(request, {"kind": f"{self.res.kind}List", "apiVersion": api_version(self.res),
                                  "metadata": meta, "items": [self._out(o) for o in items]})

    async def create(self, request: web.Request) -> web.Response:
        duplicates: list[str] = []
        body = await _body(request, request.match_info.get("namespace"), duplicates=duplicates)
        body = _fields_checked(request, self._typed(), body, duplicates)
        if self.view is not None:
            self.view.check_create(body)
        if self.res.plural == "pods" and request.app[ISSUER] is not None:  # admission will look its account up
            await serviceaccounts.wait_for_account(request.app[STORE], body["metadata"]["namespace"], body)
        made = request.app[STORE].create(self.plural, self._in(body), dry_run=_dry_run(request.query),
                                         manager=_manager(request))
        return _encoded(request, self._out(made), status=201)

    async def get(self, request: web.Request) -> web.Response:
        found = request.app[STORE].get(self.plural, *self._where(request))
        return _as_requested(request, self.res, found, self._out)

    async def get_scale(self, request: web.Request) -> web.Response:
        return _encoded(request, writes.scale_of(request.app[STORE].get(self.res.plural, *self._where(request))))

    async def replace(self, request: web.Request) -> web.Response:
        return await self._update(request, None)

    async def replace_status(self, request: web.Request) -> web.Response:
        return await self._update(request, "status")

    async def replace_scale(self, request: web.Request) -> web.Response:
        return await self._update(request, "scale")

    async def patch(self, request: web.Request) -> web.Response:
        return await self._patch(request, None)

    async def patch_status(self, request: web.Request) -> web.Response:
        return await self._patch(request, "status")

    async def patch_scale(self, request: web.Request) -> web.Response:
        return await self._patch(request, "scale")

    async def replace_ephemeral(self, request: web.Request) -> web.Response:
        return await self._update(request, writes.EPHEMERAL)

    async def patch_ephemeral(self, request: web.Request) -> web.Response:
        return await self._patch(request, writes.EPHEMERAL)

    @staticmethod
    async def _delete_options(request: web.Request) -> tuple[DeleteOptions, bool]:
        """The DeleteOptions of a DELETE (body or query) and whether it is a dry run."""
        body = None
        if (await request.read()).strip():
            media = _media_type(request)
            if media not in JSON_TYPES | YAML_TYPES:
                raise _unsupported_media(sorted(JSON_TYPES | YAML_TYPES))
            body = await _decode(request, media)
        options = DeleteOptions.parse(body, request.query)
        return options, _dry_run(request.query) or options.dry_run

    async def delete(self, request: web.Request) -> web.Response:
        options, dry_run = await self._delete_options(request)
        deleted = request.app[STORE].delete(self.plural, *self._where(request), options, dry_run=dry_run)
        return _encoded(request, self._out(deleted))

    async def delete_collection(self, request: web.Request) -> web.Response:
        """deletecollection: every object the label and field selectors match, each deleted as a
        DELETE of it would be; the answer lists them as they are after it (a pod still terminating
        carries its deletionTimestamp)."""
        options, dry_run = await self._delete_options(request)
        store, match = request.app[STORE], selector(request.query, self.plural, self.view)
        items, _ = store.list(self.plural, request.match_info.get("namespace"))
        deleted = []
        for obj in filter(match, items):
            try:
                deleted.append(self._out(store.delete(self.plural, obj["metadata"].get("namespace"),
                                                      obj["metadata"]["name"], options, dry_run=dry_run)))
            except ApiError as err:  # gone meanwhile (a namespace's deletion took it along)
                if err.code != 404:
                    raise
        return _encoded(request, {"kind": f"{self.res.kind}List", "apiVersion": api_version(self.res),
                                  "metadata": {"resourceVersion": str(store.resource_version)}, "items": deleted})

    async def evict(self, request: web.Request) -> web.Response:
        """pods/NAME/eviction (kubectl drain): a policy/v1 Eviction deletes the pod with its
        deleteOptions, unless its PodDisruptionBudget refuses (eviction.py). 201 Success, as upstream."""
        namespace, name = self._where(request)
        body = await _body(request, namespace, name)
        if (body.get("apiVersion"), body.get("kind")) not in (("policy/v1", "Eviction"), (None, None)):
            raise bad_request(f"the body must be a policy/v1 Eviction, not {body.get('apiVersion')} "
                              f"{body.get('kind')}")
        options = DeleteOptions.parse(body.get("deleteOptions") or None, request.query)
        eviction.evict(request.app[STORE], namespace, name, options, _dry_run(request.query) or options.dry_run)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                     status=201)

    async def token(self, request: web.Request) -> web.Response:
        """serviceaccounts/NAME/token: a TokenRequest answered with a token (201, as upstream)."""
        if request.app[ISSUER] is None:
            raise ApiError(404, "NotFound", "this server issues no ServiceAccount tokens")
        namespace, name = self._where(request)
        body = await _body(request, namespace, name)
        return _json(serviceaccounts.token_request(request.app[STORE], request.app[ISSUER], namespace, name, body),
                     status=201)

    async def proxy(self, request: web.Request) -> web.Response:
        """pods/NAME[:PORT]/proxy/PATH and services/NAME[:PORT]/proxy/PATH (proxy.py); nodes/NAME/proxy/PATH
        to the node's kubelet port."""
        scheme, name, port = proxy.split_name(request.match_info["name"])
        if self.res.plural == "nodes":
            if scheme not in ("", "https") or port not in ("", str(kubelets.KUBELET_PORT)):
                raise bad_request("the proxy reaches a node's kubelet port (https, 10250) only")
            node = request.app[STORE].get("nodes", None, name)
            return await request.app[KUBELETS].forward(request, node, request.match_info.get("path", ""))
        if scheme not in ("", "http"):
            raise bad_request(f"the proxy speaks http to {self.res.plural}, not {scheme}")
        store, namespace = request.app[STORE], request.match_info.get("namespace")
        target = store.get(self.res.plural, namespace, name)
        if self.res.plural == "pods":
            host, number = proxy.pod_target(target, port)
        else:
            slices = [s for s in store.list("endpointslices", namespace)[0]
                      if s["metadata"].get("labels", {}).get(names.SERVICE_NAME_LABEL) == name]
            host, number = proxy.service_target(target, slices, port)
        return await proxy.forward(request, request.app[OUTBOUND], host, number, request.match_info.get("path", ""))

    def _pod_and_node(self, request: web.Request) -> tuple[dict, dict | None]:
        """The pod a subresource request names, and its Node (None while it has none)."""
        store = request.app[STORE]
        pod = store.get("pods", *self._where(request))
        node_name = pod["spec"].get("nodeName")
        return pod, store.get("nodes", None, node_name) if node_name else None

    def from_node(self, serve: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
        """A pod subresource the kubelet of the pod's node serves: pods/NAME/log (podlog.py), exec,
        attach and portforward (podexec.py)."""
        async def handler(request: web.Request) -> web.StreamResponse:
            pod, node = self._pod_and_node(request)
            return await serve(request, pod, request.app[KUBELETS], node)

        return handler

    async def _update(self, request: web.Request, subresource: str | None) -> web.Response:
        duplicates: list[str] = []
        namespace, name = self._where(request)
        body = await _body(request, namespace, name, duplicates)
        body = _fields_checked(request, self._typed(subresource), body, duplicates)
        updated = request.app[STORE].update(self.plural, self._in(body), subresource, dry_run=_dry_run(request.query),
                                            manager=_manager(request))
        return _encoded(request, writes.scale_of(updated) if subresource == "scale" else self._out(updated))

    async def _patch(self, request: web.Request, subresource: str | None) -> web.Response:
        media = _media_type(request)
        if media == APPLY_PATCH and subresource is None:
            return await self._apply(request)
        patch_type = patch.CONTENT_TYPES.get(media)
        if patch_type is None:
            raise _unsupported_media([*patch.CONTENT_TYPES, APPLY_PATCH])
        if "force" in request.query:
            raise _invalid_patch_options("force", "Forbidden: may not be specified for non-apply patch")
        document = await _decode(request, "application/json")
        typed = self._typed(subresource)
        node = schema.for_kind(typed.schema_key)

        def change(current: dict) -> dict:
            changed = patch.apply(node, self._out(current), document, patch_type)
            return self._in(_fields_checked(request, typed, changed, []))

        patched = request.app[STORE].patch(self.plural, *self._where(request), change, subresource,
                                           dry_run=_dry_run(request.query), manager=_manager(request))
        return _encoded(request, writes.scale_of(patched) if subresource == "scale" else self._out(patched))

    async def _apply(self, request: web.Request) -> web.Response:
        """Server-side apply (``application/apply-patch+yaml``): 201 when it made the object."""
        manager = request.query.get("fieldManager")
        if not manager:
            raise _invalid_patch_options("fieldManager", "Required value: is required for apply patch")
        config = await _decode(request, "application/yaml")
        config = _fields_checked(request, self._typed(), config, [])
        force = _bool_param(request.query, "force") or False
        result, created = request.app[STORE].apply(self.plural, *self._where(request), self._in(config),
                                                   _manager(request), force, dry_run=_dry_run(request.query))
        return _encoded(request, self._out(result), status=201 if created else 200)


def _add_resource_routes(router: web.UrlDispatcher, res: Resource) -> None:
    h, root = _Handlers(res), group_path(res)
    collection = f"{root}/{res.plural}"
    if res.namespaced:
        router.add_get(collection, h.list_or_watch)  # across all namespaces
        collection = f"{root}/namespaces/{{namespace}}/{res.plural}"
    router.add_get(collection, h.list_or_watch)
    router.add_post(collection, h.create)
    if res.plural not in NO_DELETE_COLLECTION:
        router.add_delete(collection, h.delete_collection)
    item = collection + "/{name}"
    router.add_get(item, h.get)
    router.add_put(item, h.replace)
    router.add_patch(item, h.patch)
    router.add_delete(item, h.delete)
    if res.has_status:
        router.add_get(item + "/status", h.get)
        router.add_put(item + "/status", h.replace_status)
        router.add_patch(item + "/status", h.patch_status)
    if res.plural == "pods":
        router.add_get(f"{item}/{writes.EPHEMERAL}", h.get)
        router.add_put(f"{item}/{writes.EPHEMERAL}", h.replace_ephemeral)
        router.add_patch(f"{item}/{writes.EPHEMERAL}", h.patch_ephemeral)
        router.add_post(item + "/eviction", h.evict)
        router.add_get(item + "/log", h.from_node(podlog.serve))
        for method in ("GET", "POST"):  # a WebSocket upgrade is a GET; SPDY's was a POST
            for sub, serve in (("exec", podexec.serve_exec), ("attach", podexec.serve_attach),
                               ("portforward", podexec.serve_port_forward)):
                router.add_route(method, f"{item}/{sub}", h.from_node(serve))
    if res.plural == "serviceaccounts":
        router.add_post(item + "/token", h.token)
    if res.plural in PROXIED:
        router.add_route("*", item + "/proxy", h.proxy)
        router.add_route("*", item + "/proxy/{path:.*}", h.proxy)
    if writes.scale_subresource_of(res):
        router.add_get(item + "/scale", h.get_scale)
        router.add_put(item + "/scale", h.replace_scale)
        router.add_patch(item + "/scale", h.patch_scale)


# -- discovery


def _constant(data: dict) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return _json(data)

    return handler


CATEGORY_ALL = frozenset({"pods", "services", "deployments", "replicasets", "daemonsets", "statefulsets", "jobs",
                          "cronjobs"})  # kubectl get all


def _resource_list(group_version: str, resources: list[Resource]) -> dict:
    entries = []
    for r in resources:
        short = [a for a in r.aliases if a != r.singular]
        verbs = ["create", "delete", *([] if r.plural in NO_DELETE_COLLECTION else ["deletecollection"]),
                 "get", "list", "patch", "update", "watch"]
        entries.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": verbs, "shortNames": short})
        if r.plural in CATEGORY_ALL:
            entries[-1]["categories"] = ["all"]
        if r.has_status:
            entries.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get", "patch", "update"]})
        if r.plural == "pods":  # kubectl drain looks for it here
            entries.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                            "version": "v1", "kind": "Eviction", "verbs": ["create"]})
            entries.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                            "verbs": ["get"]})
            entries.append({"name": f"pods/{writes.EPHEMERAL}", "singularName": "", "namespaced": True,
                            "kind": "Pod", "verbs": ["get", "patch", "update"]})
            for sub, kind in (("exec", "PodExecOptions"), ("attach", "PodAttachOptions"),
                              ("portforward", "PodPortForwardOptions")):
                entries.append({"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind,
                                "verbs": ["create", "get"]})
        if r.plural == "serviceaccounts":  # kubectl create token
            entries.append({"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                            "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                            "verbs": ["create"]})
        if r.plural in PROXIED:
            entries.append({"name": f"{r.plural}/proxy", "singularName": "", "namespaced": r.namespaced,
                            "kind": f"{r.kind}ProxyOptions", "verbs": ["create", "delete", "get", "patch", "update"]})
        if writes.scale_subresource_of(r):  # kubectl scale finds the Scale kind here
            entries.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": r.namespaced,
                            "group": "autoscaling", "version": "v1", "kind": "Scale",
                            "verbs": ["get", "patch", "update"]})
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries
    }


def _add_discovery_routes(router: web.UrlDispatcher) -> list[str]:
    """/version, /api, /apis and each group and group-version, with or without a trailing slash
    (kube-apiserver answers both; some clients ask for ``/api/``); the paths, for ``GET /``."""
    paths = ["/apis/"]

    def add(path: str, handler: Handler) -> None:
        router.add_get(path, handler)
        router.add_get(path + "/", handler)
        paths.append(path)

    by_gv: dict[str, list[Resource]] = {}
    for r in views.SERVED:
        by_gv.setdefault(api_version(r), []).append(r)
    lists = {gv: _resource_list(gv, resources) for gv, resources in by_gv.items()}
    lists[metrics.GROUP_VERSION] = metrics.RESOURCE_LIST  # served by the metrics API's own routes
    groups = []
    for gv, resource_list in lists.items():
        add(f"/apis/{gv}" if "/" in gv else f"/api/{gv}", _constant(resource_list))
        if "/" in gv:
            name, version = gv.split("/")
            entry = {"groupVersion": gv, "version": version}
            group = {"name": name, "versions": [entry], "preferredVersion": entry}
            groups.append(group)
            add(f"/apis/{name}", _constant({"kind": "APIGroup", "apiVersion": "v1", **group}))
    add("/apis", _constant({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
    versions = sorted(gv for gv in by_gv if "/" not in gv)

    async def api_versions(request: web.Request) -> web.Response:
        addresses = [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]
        return _json({"kind": "APIVersions", "versions": versions, "serverAddressByClientCIDRs": addresses})

    add("/api", api_versions)
    add("/version", _constant(VERSION))
    return paths


def _add_openapi_routes(router: web.UrlDispatcher) -> None:
    """``/openapi/v3`` and one document per group-version (openapi.py says what kubectl uses them for)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=openapi.index(), content_type="application/json")

    async def document(request: web.Request) -> web.Response:
        gv = request.match_info["gv"]
        if gv not in openapi.group_versions():
            raise ApiError(404, "NotFound", f"no OpenAPI v3 document for {gv!r}")
        immutable = request.query.get("hash") == openapi.digest(gv)
        headers = {"Cache-Control": "public, immutable" if immutable else "no-cache, private",
                   "Etag": f'"{openapi.digest(gv)}"'}
        return web.Response(body=openapi.document(gv), content_type="application/json", headers=headers)

    async def swagger(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept") or "*/*"
        if openapi_pb.ASKED_AS in accept:  # client-go, for kubectl's client-side validation
            return web.Response(body=openapi.swagger_protobuf(), content_type=openapi_pb.MEDIA_TYPE)
        if "json" not in accept and "*/*" not in accept:
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json, "
                                                 f"{openapi_pb.MEDIA_TYPE}")
        return web.Response(body=openapi.swagger(), content_type="application/json")

    router.add_get("/openapi/v2", swagger)
    router.add_get("/openapi/v3", index)
    router.add_get("/openapi/v3/", index)
    router.add_get("/openapi/v3/{gv:.+}", document)


def _storage_ok(store: Store) -> bool:
    """Whether the storage answers a read (kube-apiserver's etcd check)."""
    try:
        store.get("namespaces", None, "default")
    except ApiError as err:
        return err.code == 404
    except Exception:  # noqa: BLE001 - any failure of the storage is a failed check
        return False
    return True


# -- middlewares and the app

_HTTP_MESSAGES = {
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    413: f"Request entity too large: limit is {MAX_BODY}",
}


@web.middleware
async def _errors_as_status(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a ``kind: Status`` with its HTTP code; warnings as Warning headers."""
    try:
        resp = await handler(request)
        if not resp.prepared:
            for message in request.get(WARNINGS, ()):
                resp.headers.add("Warning", '299 - "{}"'.format(message.replace("\\", "\\\\").replace('"', '\\"')))
        return resp
    except ApiError as e:
        return _json(e.status(), status=e.code)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        error = ApiError.for_code(e.status, _HTTP_MESSAGES.get(e.status, e.text or e.reason))
        return _json(error.status(), status=e.status)


Authenticate = Callable[[str], "auth.User | None"]  # a bearer token -> who it speaks for, None if nobody


def _bearer(authenticate: Authenticate) -> Callable:
    """Every request but the open paths carries a bearer token that authenticate(token) takes;
    who it speaks for is the request's USER."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        user = _user(request.headers.get("Authorization", ""), authenticate)
        if user is None and not _open(request.path) and request.path != auth.CLUSTER_INFO_PATH:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        request[USER] = user or auth.ANONYMOUS
        return await handler(request)

    return check


def _open(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPEN_PREFIXES)


def _user(header: str, authenticate: Authenticate) -> auth.User | None:
    """`Bearer <token>`, the scheme in any case as kube-apiserver reads it; a header that is not
    UTF-8 (aiohttp keeps such bytes as surrogates) is no token, not a server error."""
    parts = header.strip().split(" ", 2)  # as kube-apiserver: "Bearer <token>[ anything]"
    try:
        return authenticate(parts[1]) if len(parts) >= 2 and parts[0].lower() == "bearer" and parts[1] else None
    except UnicodeError:
        return None


def _authenticator(token: str | auth.TokenFile, store: Store, issuer: TokenIssuer | None) -> Authenticate:
    """The server's own tokens, and the ServiceAccount tokens its issuer signed."""
    own = token.user if isinstance(token, auth.TokenFile) else \
        (lambda given: auth.ADMIN if hmac.compare_digest(given.encode(), token.encode()) else None)
    if issuer is None:
        return own

    def lookup(plural: str, namespace: str | None, name: str) -> dict | None:
        return serviceaccounts.lookup(store, plural, namespace, name)

    def authenticate(given: str) -> auth.User | None:
        user = own(given)
        if user is not None:
            return user
        identity = issuer.authenticate(given, lookup)
        return identity.user() if identity is not None else None

    return authenticate


def build_app(store: Store, token: str | auth.TokenFile | None = None, bookmark_interval: float = 10.0,
              ca_pem: bytes | None = None, outbound: proxy.Outbound = proxy.here,
              issuer: TokenIssuer | None = None, kubelet_client: tuple[Path, Path] | None = None,
              audit_log: audit.AuditLog | None = None) -> web.Application:
    """The API server's application; with a TokenFile and the CA, also the open discovery path.
    ``outbound`` makes the sockets to pods (proxy subresources) and kubelets; ``issuer`` signs and
    checks ServiceAccount tokens (with it, pods are admitted as the ServiceAccount admission plugin
    does); ``kubelet_client`` is the certificate and key it shows kubelets (tls.kubelet_client);
    ``audit_log`` receives an audit Event per request."""
    middlewares = [_errors_as_status] + ([_bearer(_authenticator(token, store, issuer))] if token else [])
    if audit_log is not None and audit_log.level != "None":
        middlewares.insert(0, audit.middleware(audit_log, lambda request: request[USER].info() if USER in request
                                               else ({} if token else auth.ANONYMOUS.info())))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[STORE] = store
    app[WATCHES] = set()
    app[BOOKMARK_INTERVAL] = bookmark_interval
    app[OUTBOUND] = outbound
    app[KUBELETS] = Kubelets(kubelet_client, outbound)
    app[ISSUER] = issuer
    app.on_shutdown.append(_end_watches)
    app.on_cleanup.append(lambda app: app[KUBELETS].close())
    health_paths = health.routes(app.router, lambda: _storage_ok(store))
    if isinstance(token, auth.TokenFile) and ca_pem is not None:
        tokens = token

        async def cluster_info(_: web.Request) -> web.Response:
            return _json(tokens.cluster_info(ca_pem))

        app.router.add_get(auth.CLUSTER_INFO_PATH, cluster_info)
    discovery = _add_discovery_routes(app.router)
    _add_openapi_routes(app.router)
    root = [*discovery, *health_paths, "/openapi/v2", "/openapi/v3", "/openapi/v3/"]
    app.router.add_get("/", _constant({"paths": sorted(root)}))
    for res in views.SERVED:
        _add_resource_routes(app.router, res)
    metrics.routes(app.router, lambda plural, namespace: store.list(plural, namespace)[0], selector, app[KUBELETS])
    return app


async def start(
    store: Store, host: str = "127.0.0.1", port: int = 0, token: str | auth.TokenFile | None = None,
    ssl_context: ssl.SSLContext | None = None, bookmark_interval: float = 10.0, ca_pem: bytes | None = None,
    outbound: proxy.Outbound = proxy.here, issuer: TokenIssuer | None = None, sockets: Iterable[socket.socket] = (),
    kubelet_client: tuple[Path, Path] | None = None, audit_log: audit.AuditLog | None = None,
) -> tuple[web.AppRunner, int]:
    """Serves the store (over TLS when given a context) on host:port and on each of ``sockets``
    (listening already); returns the runner (``await runner.cleanup()`` stops it) and the bound
    port. Watches that allow bookmarks get one every ``bookmark_interval`` s."""
    # handler_cancellation: a watch whose client hangs up is cancelled at once and unsubscribes.
    app = build_app(store, token, bookmark_interval, ca_pem, outbound, issuer, kubelet_client, audit_log)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    for sock in sockets:
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner, bound
