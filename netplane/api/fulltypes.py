"""The served kinds' whole field trees, with upstream's field descriptions, read at run time from the
models of the official Python client (the ``kubernetes`` package, generated from kube-apiserver's
OpenAPI): what ``kubectl explain`` prints, and what ``kubectl apply`` computes its patches from once
a schema carries the kind's group-version-kind. schema.py's merge keys and patch strategies are laid
over them, so that both describe the same lists.
"""
from __future__ import annotations

import re
from typing import Any

from netplane.api.schema import KINDS, Node

MODELS = {"Event": "CoreV1Event", "EventsV1Event": "EventsV1Event"}  # the client's model of a schema
# key (resources.Resource.schema_key), when it is not "V1" + the key
_LIST = re.compile(r"(?:List|list)\[(.+)\]")
_DICT = re.compile(r"(?:Dict\[str, |dict\(str, )(.+)[\])]")
_PRIMITIVES = {"str": {"type": "string"}, "int": {"type": "integer", "format": "int64"}, "bool": {"type": "boolean"},
               "float": {"type": "number", "format": "double"}, "datetime": {"type": "string", "format": "date-time"},
               "date": {"type": "string", "format": "date"}, "bytes": {"type": "string", "format": "byte"},
               "object": {"type": "string", "format": "int-or-string"}}  # IntOrString: the client's "object"


def _models() -> Any:
    import kubernetes.client.models  # a second of imports: only when a document is first asked for
    return kubernetes.client.models


def model_of(kind: str) -> str:
    return MODELS.get(kind, f"V1{kind}")


def component_name(model: str) -> str:
    """A model's component: its type's name as kubectl explain shows it (``V1Container`` is Container)."""
    return "io.netplane." + re.sub(r"^(Core)?V\d+((alpha|beta)\d+)?", "", model)


def _description(model: type, attribute: str) -> str:
    """A field's description: the pydantic field's (newer clients) or its property's docstring (older)."""
    field = getattr(model, "model_fields", {}).get(attribute)
    if field is not None and field.description:
        return field.description
    doc = getattr(getattr(model, attribute, None), "__doc__", "") or ""
    lines = [line.replace("# noqa: E501", "").strip() for line in doc.split("\n\n")[1:2]]
    return " ".join(line for line in lines if not line.startswith(":"))


class _Builder:
    """Component schemas of one document: one per model, named after it."""

    def __init__(self) -> None:
        self.models = _models()
        self.schemas: dict[str, dict] = {}

    def type_schema(self, text: str, node: Node) -> dict:
        """The schema of one client type string (``List[V1Container]``, ``Dict[str, str]``, ``V1Probe``)."""
        if text in _PRIMITIVES:
            return dict(_PRIMITIVES[text])
        if found := _LIST.fullmatch(text):
            out: dict = {"type": "array", "items": self.type_schema(found[1], node.item or Node("any"))}
            keys = node.map_keys or ((node.merge_key,) if node.merge_key else ())
            if keys:
                out |= {"x-kubernetes-patch-merge-key": node.merge_key, "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": list(keys)}
            elif node.strategy and "merge" in node.strategy:
                out["x-kubernetes-list-type"] = "set"
            else:
                out["x-kubernetes-list-type"] = "atomic"
            if node.strategy:
                out["x-kubernetes-patch-strategy"] = node.strategy
            return out
        if found := _DICT.fullmatch(text):
            return {"type": "object", "additionalProperties": self.type_schema(found[1], node.item or Node("any"))}
        self.component(text, node)
        out = {"allOf": [{"$ref": f"#/components/schemas/{component_name(text)}"}]}
        return out | ({"x-kubernetes-patch-strategy": node.strategy} if node.strategy else {})

    def component(self, model_name: str, node: Node) -> None:
        name = component_name(model_name)
        if name in self.schemas:
            return
        model = getattr(self.models, model_name)
        self.schemas[name] = {}  # a placeholder: a type may contain itself
        properties = {}
        for attribute, text in model.openapi_types.items():
            field = model.attribute_map[attribute]
            child = node.child(field) if node.type == "object" else Node("any")
            properties[field] = {**self.type_schema(text, child), "description": _description(model, attribute)}
        doc = " ".join((model.__doc__ or "").split("Attributes:")[0].split())
        required = [model.attribute_map[a] for a, f in getattr(model, "model_fields", {}).items()
                    if a in model.attribute_map and f.is_required()]
        self.schemas[name] = {"type": "object", "description": doc, "properties": properties,
                              **({"required": required} if required else {})}


def components(kinds: tuple[str, ...]) -> dict[str, dict]:
    """The component schemas of these kinds and of every type in them."""
    builder = _Builder()
    for kind in kinds:
        builder.component(model_of(kind), KINDS[kind])
    return builder.schemas
