"""What decoding a request body into the internal type does upstream, before defaults and
validation: a Secret's write-only ``stringData`` is folded into ``data`` (base64, stringData winning
on a shared key) and never stored; ``[]byte`` fields (a Secret's data, a ConfigMap's binaryData)
must be base64, or the body cannot be decoded at all (400, as Go's JSON decoder says it)."""
from __future__ import annotations

import base64
import binascii
import re

from netplane.api.errors import bad_request
from netplane.api.resources import Resource

_BASE64_CHARS = re.compile(r"[^A-Za-z0-9+/=\r\n]")
BYTES_FIELDS = {"Secret": "data", "ConfigMap": "binaryData"}


def _bad_base64_at(value: str) -> int | None:
    """Where Go's base64 decoder gives up on a value, or None when it decodes."""
    try:
        base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        return None
    except (binascii.Error, ValueError):
        stray = _BASE64_CHARS.search(value)
        return stray.start() if stray else len(value) - len(value) % 4


def decode(res: Resource, obj: dict) -> None:
    """The body as the internal type holds it (in place); 400 when a bytes field is not base64."""
    field = BYTES_FIELDS.get(res.kind)
    if field is None:
        return
    data = obj.get(field)
    if isinstance(data, dict):
        for value in data.values():
            at = _bad_base64_at(value) if isinstance(value, str) else 0
            if at is not None:
                raise bad_request(f'{res.kind} in version "v1" cannot be handled as a {res.kind}: '
                                  f"illegal base64 data at input byte {at}")
    if res.kind == "Secret" and "stringData" in obj:
        plain = obj.pop("stringData") or {}
        if isinstance(plain, dict) and plain:
            folded = dict(data) if isinstance(data, dict) else {}
            folded.update({k: base64.b64encode(str(v).encode()).decode() for k, v in plain.items()})
            obj["data"] = folded
