"""The three PATCH formats of the Kubernetes API, as pure functions from (object, patch) to object.

- JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge, ``null`` deletes,
  everything else (lists too) replaces;
- JSON patch (RFC 6902, ``application/json-patch+json``): a list of add/remove/replace/move/copy/test
  operations on JSON pointers (RFC 6901);
- strategic merge patch (``application/strategic-merge-patch+json``): a merge patch that merges
  lists of objects by their merge key (containers by ``name``, ports by ``containerPort``, ...) and
  understands the ``$patch`` (``replace``/``delete``/``merge``), ``$retainKeys``,
  ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>`` directives. The merge keys
  come from schema.py, where they sit beside the fields they belong to.

A malformed patch is a 400 BadRequest; a patch that does not apply (a missing path, a failed
``test``) is a 422, as the apiserver answers.
"""
from __future__ import annotations

import copy
from typing import Any

from netplane.api.errors import ApiError, bad_request
from netplane.api.schema import ANY, Node

MERGE, JSON, STRATEGIC = "merge", "json", "strategic"
CONTENT_TYPES = {  # in kube-apiserver's order, which its 415 lists
    "application/json-patch+json": JSON,
    "application/merge-patch+json": MERGE,
    "application/strategic-merge-patch+json": STRATEGIC,
}


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


def apply(kind_node: Node, target: dict, patch: Any, patch_type: str) -> dict:
    """The target (not changed) with the patch applied."""
    if patch_type == JSON:
        result = json_patch(target, patch)
    elif not isinstance(patch, dict):
        raise bad_request(f"a {patch_type} merge patch must be a JSON object, not {type(patch).__name__}")
    elif patch_type == MERGE:
        result = merge_patch(target, patch)
    elif patch_type == STRATEGIC:
        result = strategic_merge_patch(target, patch, kind_node)
    else:
        raise ValueError(f"unknown patch type {patch_type!r}")
    if not isinstance(result, dict):
        raise unprocessable("the patched object is not a JSON object")
    return result


# -- RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- RFC 6902

_OPS = {"add": ("value",), "remove": (), "replace": ("value",), "move": ("from",), "copy": ("from",),
        "test": ("value",)}


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or op.get("op") not in _OPS or not isinstance(op.get("path"), str):
            raise bad_request(f"JSON patch operation {i}: needs op ({', '.join(_OPS)}) and a string path: {op!r}")
        for member in _OPS[op["op"]]:
            if member not in op:
                raise bad_request(f"JSON patch operation {i} ({op['op']}): missing {member!r}")
        doc = _operate(doc, op)
    return doc


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise bad_request(f"invalid JSON pointer {text!r}: must be empty or start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]


def _index(container: list, token: str, pointer: str, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise unprocessable(f"invalid array index {token!r} in {pointer!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise unprocessable(f"array index {index} out of range in {pointer!r}")
    return index


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, pointer)]
        else:
            raise unprocessable(f"the path {pointer!r} does not exist")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = _pointer(pointer)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, pointer)]
    raise unprocessable(f"the path {pointer!r} does not exist")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _pointer(pointer)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, for_add=True), value)
    else:
        raise unprocessable(f"cannot add at {pointer!r}: its parent is not an object or array")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _pointer(pointer)
    if not tokens:
        raise unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, pointer))
    raise unprocessable(f"the path {pointer!r} does not exist")


def _operate(doc: Any, op: dict) -> Any:
    kind, path = op["op"], op["path"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        _get(doc, path)  # must exist
        if not _pointer(path):
            return copy.deepcopy(op["value"])
        doc, _ = _remove(doc, path)
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "move":
        source = op["from"]
        if path != source and path.startswith(source + "/"):
            raise unprocessable(f"cannot move {source!r} into its own child {path!r}")
        doc, value = _remove(doc, source)
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
    if not json_equal(_get(doc, path), op["value"]):  # test
        raise unprocessable(f"testing value {path!r} failed")
    return doc


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: unlike Python's ==, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list, str)) or isinstance(b, (dict, list, str)):
        return type(a) is type(b) and a == b
    return a == b


# -- strategic merge patch

_DELETE = object()  # a map that a ``$patch: delete`` removes
ORDER, DELETE_FROM, RETAIN = "$setElementOrder/", "$deleteFromPrimitiveList/", "$retainKeys"


def strategic_merge_patch(target: dict, patch: dict, node: Node) -> dict:
    result = _merge_map(copy.deepcopy(target), patch, node)
    if result is _DELETE:
        raise unprocessable("a strategic merge patch cannot delete the whole object")
    return result


def _merge_map(original: dict, patch: dict, node: Node) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != "$patch"}, node)
    if directive not in (None, "merge"):
        raise bad_request(f"unknown $patch directive {directive!r} (supported: replace, delete, merge)")
    if RETAIN in patch:
        keep = patch[RETAIN]
        if not isinstance(keep, list):
            raise bad_request(f"{RETAIN} must be a list of field names")
        original = {k: v for k, v in original.items() if k in keep}
    orders: dict[str, list] = {}
    for key, value in patch.items():
        if key in ("$patch", RETAIN):
            continue
        if key.startswith(ORDER):
            orders[key[len(ORDER):]] = value
        elif key.startswith(DELETE_FROM):
            field = key[len(DELETE_FROM):]
            if isinstance(original.get(field), list) and isinstance(value, list):
                original[field] = [v for v in original[field] if not any(json_equal(v, d) for d in value)]
        elif key.startswith("$"):
            raise bad_request(f"unknown strategic merge patch directive {key!r}")
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        child = node.child(key) if node.type == "object" else (node.item or ANY) if node.type == "map" else ANY
        if value is None:
            original.pop(key, None)
            continue
        have = original.get(key)
        if isinstance(value, dict):
            merged = _merge_map(have if isinstance(have, dict) else {}, value, child)
            if merged is _DELETE:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _merge_list(have if isinstance(have, list) else [], value, child, key)
        else:
            original[key] = value
    for key, order in orders.items():
        if isinstance(original.get(key), list) and isinstance(order, list):
            original[key] = _ordered(original[key], order, node.child(key).merge_key)
    return original


def _merge_list(original: list, patch: list, node: Node, name: str) -> list:
    item = node.item or ANY
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return _merge_list([], [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")],
                           Node("array", item=item), name)
    if "merge" not in (node.strategy or "").split(","):  # an atomic list: the patch replaces it
        return [_clean(p, item) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "delete")]
    key = node.merge_key
    if key is None:  # a set of scalars
        merged = list(original)
        for value in patch:
            if not any(json_equal(value, v) for v in merged):
                merged.append(copy.deepcopy(value))
        return merged
    merged = list(original)
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise unprocessable(f"an element of {name!r} does not contain its merge key {key!r}: {element!r}")
        at = next((i for i, have in enumerate(merged)
                   if isinstance(have, dict) and json_equal(have.get(key), element[key])), None)
        if element.get("$patch") == "delete":
            merged = [m for m in merged if not (isinstance(m, dict) and json_equal(m.get(key), element[key]))]
            continue
        result = _merge_map(copy.deepcopy(merged[at]) if at is not None else {}, element, item)
        if result is _DELETE:
            if at is not None:
                del merged[at]
        elif at is None:
            merged.append(result)
        else:
            merged[at] = result
    return merged


def _clean(value: Any, node: Node) -> Any:
    """A value that replaces what was there: directives and nulls are applied to nothing."""
    if isinstance(value, dict):
        merged = _merge_map({}, value, node)
        return {} if merged is _DELETE else merged
    if isinstance(value, list):
        return _merge_list([], value, node, "")
    return value


def _ordered(items: list, order: list, key: str | None) -> list:
    """The items listed in ``order`` first, in that order, then the others as they were."""
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    placed = [next(i for i in items if json_equal(ident(i), w)) for w in wanted
              if any(json_equal(ident(i), w) for i in items)]
    rest = [i for i in items if not any(json_equal(ident(i), w) for w in wanted)]
    return placed + rest
