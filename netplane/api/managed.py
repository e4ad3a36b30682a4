"""Field ownership as kube-apiserver tracks it (structured-merge-diff, FieldsV1), and server-side apply.

A field set is a set of paths; a path is a tuple of FieldsV1 elements: ``f:<field>``, ``k:<key json>``
for an item of a keyed list (``k:{"name":"web"}``), ``v:<json>`` for an item of a set. Its members are
the leaves (scalars, atomic lists, empty objects) and the list items, as in an applied configuration.

- ``track``: what every other write records: the fields it added or changed become its manager's
  (one ``Update`` entry per manager, apiVersion and subresource), and no one else's.
- ``apply``: server-side apply: the configuration merged into the live object by the schema (keyed
  lists by key, sets by value, maps by key, the rest replaced), fields the manager applied before and
  no longer does removed unless another manager owns them; a field another manager owns with a
  different value is a conflict (409) unless forced, which takes it over.

The schema is schema.py's; what it leaves open is treated as a granular map (objects) or atomic (lists).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from netplane.api.errors import ApiError
from netplane.api.schema import ANY, Node

Path = tuple[str, ...]
FieldSet = frozenset
MISSING = object()
# never owned (stripmeta): the object's identity and what the server sets
STRIPPED_META = ("name", "namespace", "creationTimestamp", "selfLink", "uid", "generation", "managedFields",
                 "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _child(node: Node, name: str) -> Node:
    if node.type == "map":
        return node.item or ANY
    return node.child(name) if node.type == "object" else ANY


def _keys(node: Node) -> tuple[str, ...]:
    return node.map_keys or ((node.merge_key,) if node.merge_key else ())


def _item_key(item: dict, node: Node) -> str:
    """k:{...}: the item's key fields, a missing protocol read as its default, TCP (as upstream fills keys)."""
    key = {k: item.get(k, "TCP" if k == "protocol" else None) for k in _keys(node)}
    return "k:" + _json(key)


def _is_set(node: Node) -> bool:
    return node.type == "array" and not _keys(node) and bool(node.strategy and "merge" in node.strategy)


def members(value: Any, node: Node, prefix: Path = ()) -> dict[Path, Any]:
    """Every member of the value's field set, with the value there."""
    if isinstance(value, dict) and node.type in ("object", "map", "any"):
        if not value:
            return {prefix: value} if prefix else {}
        out: dict[Path, Any] = {}
        for name, child in value.items():
            out |= members(child, _child(node, name), (*prefix, f"f:{name}"))
        return out
    if isinstance(value, list) and node.type == "array" and _keys(node) and all(isinstance(i, dict) for i in value):
        out = {}
        for item in value:
            here = (*prefix, _item_key(item, node))
            out[here] = item
            out |= members(item, node.item or ANY, here)
        return out
    if isinstance(value, list) and _is_set(node):
        return {(*prefix, "v:" + _json(item)): item for item in value}
    return {prefix: value}


def _ownable(path: Path, subresource: str | None) -> bool:
    """Whether a write may own the path: not identity or server fields, not status on the main
    resource, only status on the status subresource."""
    if not path or path[0] in ("f:apiVersion", "f:kind"):
        return False
    if path[0] == "f:metadata" and (len(path) == 1 or path[1][2:] in STRIPPED_META):
        return False
    return (path[0] == "f:status") == (subresource == "status")


def field_set(obj: dict, node: Node, subresource: str | None = None) -> FieldSet:
    """The paths of obj a write of it may own."""
    return frozenset(p for p in members(obj, node) if _ownable(p, subresource))


def _leaf(path: Path) -> bool:
    return not path[-1].startswith("k:")


# -- FieldsV1

def encode(fields: FieldSet) -> dict:
    """The FieldsV1 object of a field set: a member that has members below it carries ``".": {}``."""
    root: dict = {}
    for path in sorted(fields):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    for path in fields:
        node = root
        for element in path:
            node = node[element]
        if node:
            node["."] = {}
    return _sorted(root)


def _sorted(node: dict) -> dict:
    return {k: _sorted(v) for k, v in sorted(node.items(), key=lambda kv: (kv[0] != ".", kv[0]))}


def decode(fields: Any, prefix: Path = ()) -> FieldSet:
    if not isinstance(fields, dict):
        return frozenset()
    out = set()
    for key, sub in fields.items():
        if key == ".":
            out.add(prefix)
        elif not sub:
            out.add((*prefix, key))
        else:
            out |= decode(sub, (*prefix, key))
    return frozenset(p for p in out if p)


# -- reading, merging and removing by path

def _step(obj: Any, node: Node, element: str) -> tuple[Any, Node] | None:
    """The value one path element names below obj (a field, a keyed item, a set member), or None."""
    kind, _, text = element.partition(":")
    if kind == "f" and isinstance(obj, dict) and text in obj:
        return obj[text], _child(node, text)
    if kind == "k" and isinstance(obj, list):
        found = [i for i in obj if isinstance(i, dict) and _item_key(i, node) == element]
        return (found[0], node.item or ANY) if found else None
    if kind == "v" and isinstance(obj, list) and json.loads(text) in obj:
        return json.loads(text), node
    return None


def value_at(obj: Any, path: Path, node: Node) -> Any:
    for element in path:
        found = _step(obj, node, element)
        if found is None:
            return MISSING
        obj, node = found
    return obj


def merge(live: Any, config: Any, node: Node) -> Any:
    """The configuration merged into the live value, by the schema."""
    if isinstance(live, dict) and isinstance(config, dict) and node.type in ("object", "map", "any"):
        out = dict(live)
        for name, value in config.items():
            out[name] = merge(live[name], value, _child(node, name)) if name in live else value
        return out
    if isinstance(live, list) and isinstance(config, list) and node.type == "array":
        if _keys(node) and all(isinstance(i, dict) for i in live + config):
            out = list(live)
            at = {_item_key(item, node): i for i, item in enumerate(out)}
            for item in config:
                key = _item_key(item, node)
                if key in at:
                    out[at[key]] = merge(out[at[key]], item, node.item or ANY)
                else:
                    out.append(item)
            return out
        if _is_set(node):
            return live + [item for item in config if item not in live]
    return config


def remove(obj: Any, path: Path, node: Node) -> None:
    """Remove what path names from obj (in place); nothing when it is not there."""
    *parents, last = path
    for element in parents:
        found = _step(obj, node, element)
        if found is None:
            return
        obj, node = found
    kind, _, text = last.partition(":")
    if kind == "f" and isinstance(obj, dict):
        obj.pop(text, None)
    elif kind == "k" and isinstance(obj, list):
        obj[:] = [i for i in obj if not (isinstance(i, dict) and _item_key(i, node) == last)]
    elif kind == "v" and isinstance(obj, list):
        obj[:] = [i for i in obj if i != json.loads(text)]


def _writable_part(obj: dict, subresource: str | None) -> dict:
    """What a write may own of obj: its status through the status subresource, else all but it
    (so a kubelet's status write walks the status, not the whole pod)."""
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    return {k: v for k, v in obj.items() if k != "status"}


def changed(old: dict, new: dict, node: Node, subresource: str | None = None) -> tuple[FieldSet, FieldSet]:
    """(added or modified, removed) between two versions of an object."""
    before, after = (members(_writable_part(o, subresource), node) for o in (old, new))
    touched = {p for p in after
               if _ownable(p, subresource) and (p not in before or (_leaf(p) and before[p] != after[p]))}
    gone = {p for p in before if _ownable(p, subresource) and p not in after}
    return frozenset(touched), frozenset(gone)


# -- managedFields entries

@dataclass(frozen=True)
class Manager:
    name: str
    operation: str  # Apply or Update
    api_version: str
    subresource: str = ""

    def identity(self) -> tuple[str, str, str, str]:
        """Apply entries are one per manager (and subresource); Update entries one per apiVersion too."""
        return self.name, self.operation, "" if self.operation == "Apply" else self.api_version, self.subresource

    def describe(self) -> str:
        """How a conflict names the manager: "kubectl", or "kubectl-create" using apps/v1."""
        if self.operation != "Update":
            return json.dumps(self.name)
        where = f' with subresource "{self.subresource}"' if self.subresource else ""
        return f"{json.dumps(self.name)}{where} using {self.api_version}"


Owners = dict[tuple[str, str, str, str], tuple[Manager, FieldSet, str]]  # identity -> (manager, fields, time)


def owners_of(obj: dict) -> Owners:
    out: Owners = {}
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if not isinstance(entry, dict):
            continue
        who = Manager(str(entry.get("manager", "")), str(entry.get("operation", "Update")),
                      str(entry.get("apiVersion", "")), str(entry.get("subresource", "")))
        out[who.identity()] = (who, decode(entry.get("fieldsV1")), str(entry.get("time", "")))
    return out


def entries(owners: Owners) -> list[dict]:
    """managedFields: the non-empty entries, Apply before Update, then by time and manager."""
    out = []
    for who, fields, time in owners.values():
        if not fields:
            continue
        entry = {"manager": who.name, "operation": who.operation, "apiVersion": who.api_version}
        if time:
            entry["time"] = time
        entry |= {"fieldsType": "FieldsV1", "fieldsV1": encode(fields)}
        if who.subresource:
            entry["subresource"] = who.subresource
        out.append(entry)
    return sorted(out, key=lambda e: (e["operation"], e.get("time", ""), e["manager"], e["apiVersion"],
                                      e.get("subresource", "")))


def _without(owners: Owners, paths: FieldSet, but: tuple | None = None) -> Owners:
    """Every manager (but one) without the paths and what lies below them."""
    def kept(fields: FieldSet) -> FieldSet:
        return frozenset(p for p in fields if not any(p[:len(q)] == q for q in paths))
    return {k: (w, f if k == but else kept(f), t) for k, (w, f, t) in owners.items()}


def track(old: dict | None, new: dict, node: Node, who: Manager, now: str) -> list[dict]:
    """The managedFields after a write that is not an apply: who takes what it added or changed."""
    owners = owners_of(new) if (new.get("metadata") or {}).get("managedFields") else owners_of(old or {})
    touched, gone = changed(old or {}, new, node, who.subresource or None)
    owners = _without(owners, gone)
    if touched:
        owners = _without(owners, touched)
        mine = owners.get(who.identity(), (who, frozenset(), now))[1]
        owners[who.identity()] = (who, mine | touched, now)
    return entries(owners)


def _path_text(path: Path) -> str:
    out = ""
    for element in path:
        kind, _, text = element.partition(":")
        if kind == "f":
            out += f".{text}"
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(text).items()) + "]"
        else:
            out += f"[={text}]"
    return out


def conflict_error(conflicts: dict[Manager, list[Path]]) -> ApiError:
    """The 409 of an apply that would change fields other managers own, worded as upstream's."""
    count = sum(len(paths) for paths in conflicts.values())
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who.describe()}", "field": _path_text(p)}
              for who, paths in conflicts.items() for p in sorted(paths)]
    if count == 1:
        message = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        lines = [f"conflicts with {who.describe()}:\n" + "\n".join(f"- {_path_text(p)}" for p in sorted(paths))
                 for who, paths in sorted(conflicts.items(), key=lambda kv: kv[0].describe())]
        message = f"Apply failed with {count} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


KUBECTL = "kubectl"  # kubectl apply --server-side's manager
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # what a client-side apply leaves


def _last_applied(live: dict, node: Node) -> FieldSet:
    """The fields of the configuration a client-side `kubectl apply` left on the object."""
    text = (live.get("metadata") or {}).get("annotations", {}).get(LAST_APPLIED)
    try:
        return field_set(json.loads(text), node) if text else frozenset()
    except ValueError:
        return frozenset()


def apply(live: dict | None, config: dict, node: Node, who: Manager, force: bool, now: str) -> dict:
    """The object after server-side apply of config by who (managedFields included); raises the
    conflict error when another manager owns a field it changes and force is not set. As upstream,
    kubectl's apply takes over without a conflict the fields its client-side apply had applied
    (the last-applied annotation), and keeps that annotation to what it applies now."""
    live = live or {}
    owners = owners_of(live)
    if live and not owners:  # an object no one has applied to: all its fields were someone's before
        first = Manager("before-first-apply", "Update", who.api_version)
        owners[first.identity()] = (first, field_set(live, node), now)
    applied = field_set(config, node)
    merged = merge(live, config, node)
    previous = owners.get(who.identity(), (who, frozenset(), ""))[1]
    others = {k: v for k, v in owners.items() if k != who.identity()}
    for path in sorted(previous - applied, key=len, reverse=True):
        if not any(path in fields for _, fields, _ in others.values()):
            remove(merged, path, node)
    last_applied = _last_applied(live, node) if who.name == KUBECTL else frozenset()
    conflicts: dict[Manager, list[Path]] = {}
    for other, fields, _ in others.values():
        clash = [p for p in fields & applied if _leaf(p) and value_at(live, p, node) != value_at(merged, p, node)]
        if clash:
            conflicts[other] = clash
    unforced = {who: [p for p in paths if p not in last_applied] for who, paths in conflicts.items()}
    if any(unforced.values()) and not force:
        raise conflict_error({who: paths for who, paths in unforced.items() if paths})
    if LAST_APPLIED in (live.get("metadata") or {}).get("annotations", {}):
        merged["metadata"]["annotations"][LAST_APPLIED] = json.dumps(config, separators=(",", ":"))
    taken = frozenset(p for paths in conflicts.values() for p in paths)
    owners = _without(owners, taken, but=who.identity())
    time = now if merged != live or who.identity() not in owners else owners[who.identity()][2]
    owners[who.identity()] = (who, applied, time)
    merged.setdefault("metadata", {})["managedFields"] = entries(owners)
    return merged
