"""OpenAPI v3: the documents kubectl downloads before it writes anything.

What kubectl 1.32 does with them (cli-runtime ``QueryParamVerifierV3``, kubectl ``apply/patcher.go``):

- ``--validate=strict`` (the default) reads ``/openapi/v3``, then the group-version's document, and
  looks for the PATCH operation tagged with the object's ``x-kubernetes-group-version-kind`` that
  takes a ``fieldValidation`` query parameter. Found: kubectl sends ``fieldValidation=Strict`` and
  leaves validation to the server (server.py does it with schema.py). Not found: kubectl falls back
  to client-side validation against ``/openapi/v2`` in protobuf, which this server does not serve;
  so every kind needs that operation.
- ``apply`` computes its strategic merge patch from the component schema tagged with the kind's
  GVK, and warns (falling back to its compiled-in types) on any field that schema does not describe;
  ``explain`` prints that schema's fields and descriptions. So each kind's schema is whole: its
  field tree and upstream's descriptions come from the official client's models (fulltypes.py),
  with schema.py's merge keys and patch strategies laid over them.

Everything is generated from resources.py, schema.py and the client's models; nothing is hand-written
per kind.
"""
from __future__ import annotations

import hashlib
import json
from functools import cache

from netplane import names
from netplane.api import fulltypes, writes, openapi_pb, views
from netplane.api.resources import Resource, group_path

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
               "application/apply-patch+yaml")
PATCH_SCHEMA = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
_QUERY = {
    "force": "Apply only: take over the fields other managers own instead of failing with a conflict.",
    "dryRun": "When present, modifications are not persisted. The only valid value is All.",
    "fieldManager": "The name of the actor making the change, recorded in metadata.managedFields.",
    "fieldValidation": "How unknown fields in the body are handled: Ignore, Warn (default) or Strict.",
    "pretty": "Accepted for compatibility; output is always compact.",
}
_LIST_QUERY = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch",
               "watch", "allowWatchBookmarks", "sendInitialEvents", "timeoutSeconds")
_DELETE_QUERY = ("gracePeriodSeconds", "propagationPolicy", "orphanDependents", "dryRun")


def schema_name(res_or_kind: Resource | str) -> str:
    if isinstance(res_or_kind, str):
        return "io.k8s.api.autoscaling.v1.Scale" if res_or_kind == "Scale" else res_or_kind
    res = res_or_kind
    packages = {"": "core", "discovery.k8s.io": "discovery", "coordination.k8s.io": "coordination",
                "events.k8s.io": "events"}
    package = packages.get(res.group, res.group)
    return f"io.k8s.api.{package}.{res.version}.{res.kind}"


def _camel(res: Resource) -> str:
    group = res.group.split(".")[0] if res.group else "core"
    return f"{group[0].upper()}{group[1:]}{res.version[0].upper()}{res.version[1:]}"


def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "version": version, "kind": kind}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _params(query: tuple[str, ...] | list[str]) -> list[dict]:
    return [{"name": n, "in": "query", "description": _QUERY.get(n, n), "schema": {"type": "string"},
             "uniqueItems": True} for n in query]


def _json_body(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}},
            "required": True}


def _response(schema: dict) -> dict:
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


def _operation(action: str, op_id: str, gvk: dict, params: list, body: dict | None, result: dict) -> dict:
    op = {"operationId": op_id, "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
          "parameters": params, "responses": _response(result)}
    if body is not None:
        op["requestBody"] = body
    return op


def _item_operations(res: Resource, suffix: str, kind_schema: str, gvk: dict) -> dict:
    """get, put, patch (and delete for the object itself) of an object or one of its subresources."""
    what = f"{'Namespaced' if res.namespaced else ''}{res.kind}{suffix}"
    ref, write = _ref(kind_schema), _params(["dryRun", "fieldManager", "fieldValidation"])
    patch_body = {"content": {t: {"schema": _ref(PATCH_SCHEMA)} for t in PATCH_TYPES}, "required": True}
    ops = {
        "get": _operation("get", f"read{_camel(res)}{what}", gvk, [], None, ref),
        "put": _operation("put", f"replace{_camel(res)}{what}", gvk, write, _json_body(ref), ref),
        "patch": _operation("patch", f"patch{_camel(res)}{what}", gvk, [*write, *_params(["force"])], patch_body, ref),
    }
    if not suffix:
        ops["delete"] = _operation("delete", f"delete{_camel(res)}{what}", gvk, _params(_DELETE_QUERY),
                                   None, ref)
    return ops


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "uniqueItems": True}


def _resource_paths(res: Resource) -> dict[str, dict]:
    gvk, root = _gvk(res.group, res.version, res.kind), group_path(res)
    ref = _ref(schema_name(res))
    list_ref = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    scope = [_path_param("namespace")] if res.namespaced else []
    collection = f"{root}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{root}/{res.plural}"
    what = f"{'Namespaced' if res.namespaced else ''}{res.kind}"
    paths = {
        collection: {
            "parameters": scope,
            "get": _operation("list", f"list{_camel(res)}{what}", gvk, _params(_LIST_QUERY), None, list_ref),
            "post": _operation("post", f"create{_camel(res)}{what}", gvk,
                               _params(["dryRun", "fieldManager", "fieldValidation"]), _json_body(ref), ref),
        },
        f"{collection}/{{name}}": {"parameters": [*scope, _path_param("name")],
                                   **_item_operations(res, "", schema_name(res), gvk)},
    }
    if res.namespaced:
        paths[f"{root}/{res.plural}"] = {"get": _operation(
            "list", f"list{_camel(res)}{res.kind}ForAllNamespaces", gvk, _params(_LIST_QUERY), None, list_ref)}
    if res.has_status:
        paths[f"{collection}/{{name}}/status"] = {"parameters": [*scope, _path_param("name")],
                                                  **_item_operations(res, "Status", schema_name(res), gvk)}
    if writes.scale_subresource_of(res):
        scale_gvk = _gvk("autoscaling", "v1", "Scale")
        paths[f"{collection}/{{name}}/scale"] = {"parameters": [*scope, _path_param("name")],
                                                 **_item_operations(res, "Scale", schema_name("Scale"), scale_gvk)}
    return paths


def group_versions() -> dict[str, list[Resource]]:
    """The served group-versions by their OpenAPI path: ``api/v1``, ``apis/apps/v1``, ..."""
    out: dict[str, list[Resource]] = {}
    for res in views.SERVED:
        out.setdefault(group_path(res).lstrip("/"), []).append(res)
    return out


def _tagged(schemas: dict[str, dict], schema_key: str, gvk: dict) -> dict:
    """A kind's schema, from the document's components, with its group-version-kind, by which
    kubectl finds it (explain, apply's patches)."""
    whole = schemas[fulltypes.component_name(fulltypes.model_of(schema_key))]
    return {**whole, "x-kubernetes-group-version-kind": [gvk]}


@cache
def document(gv_path: str) -> bytes:
    """The OpenAPI v3 document of one group-version, as JSON bytes."""
    resources = group_versions()[gv_path]
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {PATCH_SCHEMA: {
        "type": "object",
        "description": "The body of a PATCH: a JSON patch, a merge patch or a strategic merge patch."}}
    kinds = [res.schema_key for res in resources] + (["Scale"] if any(map(writes.scale_subresource_of, resources)) else [])
    schemas |= fulltypes.components(tuple(kinds))
    for res in resources:
        paths.update(_resource_paths(res))
        schemas[schema_name(res)] = _tagged(schemas, res.schema_key, _gvk(res.group, res.version, res.kind))
    if "Scale" in kinds:
        schemas[schema_name("Scale")] = _tagged(schemas, "Scale", _gvk("autoscaling", "v1", "Scale"))
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": names.KUBERNETES_VERSION[2]},
           "paths": paths, "components": {"schemas": schemas}}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def digest(gv_path: str) -> str:
    return hashlib.sha512(document(gv_path)).hexdigest().upper()


@cache
def index() -> bytes:
    """``/openapi/v3``: where each group-version's document is, with its hash for client caches."""
    paths = {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest(gv)}"} for gv in group_versions()}
    return json.dumps({"paths": paths}, separators=(",", ":")).encode()


def _v2(value: object) -> object:
    """A v3 schema fragment in Swagger 2.0's terms: its references point at ``definitions``, and a
    field that is one referenced type is a ``$ref`` beside its description, as upstream writes it."""
    if isinstance(value, dict):
        parts = value.get("allOf")
        if isinstance(parts, list) and len(parts) == 1 and set(parts[0]) == {"$ref"}:
            value = {**{k: v for k, v in value.items() if k != "allOf"}, "$ref": parts[0]["$ref"]}
        return {k: (v.replace("#/components/schemas/", "#/definitions/") if k == "$ref" else _v2(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_v2(v) for v in value]
    return value


def _v2_parameters(parameters: list[dict]) -> list[dict]:
    """Path and query parameters with their type inline, as Swagger 2.0 has them."""
    return [{k: v for k, v in p.items() if k != "schema"} | p.get("schema", {}) for p in parameters]


def _v2_operation(op: dict) -> dict:
    """A v3 operation as Swagger 2.0 writes it: typed parameters, the body as an ``in: body`` one."""
    out = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
    out["parameters"] = _v2_parameters(op.get("parameters", []))
    if "requestBody" in op:
        content = op["requestBody"]["content"]
        out["consumes"] = sorted(content)
        out["parameters"].append({"name": "body", "in": "body", "required": True,
                                  "schema": _v2(next(iter(content.values()))["schema"])})
    out["produces"] = ["application/json", "application/yaml"]
    out["responses"] = {code: {"description": r["description"],
                               "schema": _v2(r["content"]["application/json"]["schema"])}
                        for code, r in op.get("responses", {}).items()}
    return out


@cache
def swagger() -> bytes:
    """``/openapi/v2`` as JSON: every group-version's paths and schemas in one Swagger 2.0 document,
    which Swagger's editor opens (the seeds' way to read the API)."""
    paths: dict[str, dict] = {}
    definitions: dict[str, dict] = {}
    for gv in group_versions():
        doc = json.loads(document(gv))
        definitions |= _v2(doc["components"]["schemas"])
        for path, item in doc["paths"].items():
            paths[path] = {verb: (_v2_operation(op) if isinstance(op, dict) and "responses" in op else op)
                           for verb, op in item.items() if verb != "parameters"}
            if item.get("parameters"):
                paths[path]["parameters"] = _v2_parameters(item["parameters"])
    doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": names.KUBERNETES_VERSION[2]},
           "paths": paths, "definitions": definitions}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@cache
def swagger_protobuf() -> bytes:
    """``/openapi/v2`` in protobuf, for client-go (openapi_pb.py says what it holds)."""
    return openapi_pb.document(json.loads(swagger()))
