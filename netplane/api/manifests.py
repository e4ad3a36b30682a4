"""Manifests on the client side, as kubectl handles them: YAML documents -> create, or update."""
from __future__ import annotations

from pathlib import Path

import yaml

from netplane.api import resources
from netplane.api.client import Client
from netplane.api.errors import ApiError


class ManifestError(ValueError):
    pass


def load(path: str) -> list[dict]:
    """Every object of a YAML file (List kinds expanded); unknown kinds are refused before any write."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from None
    objects = []
    for i, doc in enumerate(docs):
        items = doc.get("items", []) if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else [doc]
        for obj in items:
            if not isinstance(obj, dict) or "kind" not in obj:
                raise ManifestError(f"{path}: document {i + 1}: not a Kubernetes object (no kind)")
            try:
                resources.by_kind(obj["kind"])
            except KeyError as err:
                raise ManifestError(f"{path}: document {i + 1}: {err.args[0]}") from None
            objects.append(obj)
    return objects


def describe(obj: dict) -> str:
    """`pod/web-1`, as kubectl names an object in its messages."""
    return f"{resources.by_kind(obj['kind']).singular}/{obj['metadata'].get('name', '?')}"


async def apply(client: Client, obj: dict) -> str:
    """Create the object, or update it when it exists; returns kubectl's verb for what happened."""
    res = resources.by_kind(obj["kind"])
    try:
        await client.create(res.plural, obj)
        return "created"
    except ApiError as err:
        if err.code != 409:
            raise
    meta = obj["metadata"]
    live = await client.get(res.plural, meta["name"], meta.get("namespace", "default") if res.namespaced else None)
    merged = {**live, **{k: v for k, v in obj.items() if k not in ("metadata", "status")}}
    merged["metadata"] = {**live["metadata"], **{k: v for k, v in meta.items() if k in ("labels", "annotations")}}
    if merged == live:
        return "unchanged"
    await client.update(res.plural, merged)
    return "configured"
