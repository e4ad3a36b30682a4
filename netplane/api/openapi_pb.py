"""``/openapi/v2`` in protobuf (gnostic's openapi_v2.Document), the form client-go asks for.

kubectl reads it only when a group-version-kind has no schema in OpenAPI v3, to validate a manifest
on the client (``--validate``): it looks the kind up among the ``definitions`` and skips validation
when it is not there, so that a kind the server does not serve ends in kubectl's own "no matches for
kind" rather than in "failed to download openapi". So this encodes the document's ``swagger``,
``info`` and ``definitions`` (every schema, with its vendor extensions); the paths are in the JSON
form only. Field numbers are those of gnostic's OpenAPIv2.proto.
"""
from __future__ import annotations

from typing import Any

import yaml

ASKED_AS = "com.github.proto-openapi.spec.v2"  # client-go's Accept spells it ...v2@v1.0+protobuf
MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # the answer's, as kube-openapi's


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _text(number: int, value: str) -> bytes:
    return _bytes(number, value.encode())


def _named(number: int, name: str, value: bytes) -> bytes:
    """A NamedSchema / NamedAny entry: 1 name, 2 value."""
    return _bytes(number, _text(1, name) + _bytes(2, value))


def schema(s: dict[str, Any]) -> bytes:
    """One openapi_v2.Schema."""
    out = b""
    for key, number in (("$ref", 1), ("format", 2), ("title", 3), ("description", 4)):
        if isinstance(s.get(key), str):
            out += _text(number, s[key])
    out += b"".join(_text(19, name) for name in s.get("required", []))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, schema(extra)))
    elif isinstance(extra, bool):
        out += _bytes(21, _varint(2 << 3) + _varint(int(extra)))
    if isinstance(s.get("type"), str):
        out += _bytes(22, _text(1, s["type"]))  # TypeItem: repeated string value
    if isinstance(s.get("items"), dict):
        out += _bytes(23, _bytes(1, schema(s["items"])))  # ItemsItem: repeated Schema schema
    out += b"".join(_bytes(24, schema(part)) for part in s.get("allOf", []))
    if isinstance(s.get("properties"), dict):  # Properties: repeated NamedSchema additional_properties
        out += _bytes(25, b"".join(_named(1, name, schema(p)) for name, p in s["properties"].items()))
    for key, value in s.items():  # NamedAny whose Any carries the value as YAML (field 2)
        if key.startswith("x-"):
            out += _named(31, key, _text(2, yaml.safe_dump(value, default_flow_style=True).strip()))
    return out


def document(swagger: dict) -> bytes:
    """The protobuf form of a Swagger 2.0 document: its version, info and definitions."""
    info = _text(1, swagger["info"]["title"]) + _text(2, swagger["info"]["version"])
    definitions = b"".join(_named(1, name, schema(s)) for name, s in swagger["definitions"].items())
    return _text(1, swagger["swagger"]) + _bytes(2, info) + _bytes(9, definitions)
