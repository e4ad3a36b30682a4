"""Chunked lists: ``limit`` and the opaque ``continue`` token, as the apiserver pages through etcd.

A token names the resourceVersion of the first page and the last key (namespace, name) handed out;
the next page is read *as of that resourceVersion* (store.list rebuilds it from the event log), so
the pages of one list are consistent with each other. When the log no longer reaches back that far
the answer is ``410 Expired`` with a fresh token that continues from the same key at the current
state, exactly the advice the real server gives. A token with resourceVersion 0 is that fresh,
"inconsistent" kind.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from netplane.api.errors import ApiError, bad_request

TOKEN_VERSION = "np/v1"
EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a "
    "new list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list."
)

Key = tuple[str, str]


@dataclass(frozen=True)
class Token:
    resource_version: int  # 0: continue at the current state
    after: Key

    def encode(self) -> str:
        data = {"v": TOKEN_VERSION, "rv": self.resource_version, "start": list(self.after)}
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")

    @staticmethod
    def decode(text: str) -> Token:
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            if data.get("v") != TOKEN_VERSION:
                raise ValueError("unknown token version")
            ns, name = data["start"]
            rv = data["rv"]
            if not isinstance(rv, int) or rv < 0 or not isinstance(ns, str) or not isinstance(name, str):
                raise ValueError("malformed token")
            return Token(rv, (ns, name))
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            raise bad_request(f"continue key is not valid: {e}") from None


class Expired(ApiError):
    """410 Expired for a continue token the event log no longer covers; carries the fresh token."""

    def __init__(self, fresh: Token):
        super().__init__(410, "Expired", EXPIRED_MESSAGE)
        self.fresh = fresh

    def status(self) -> dict:
        status = super().status()
        status["metadata"] = {"continue": self.fresh.encode()}
        return status


def key_of(obj: dict) -> Key:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


def page(items: list[dict], limit: int | None, after: Key | None) -> tuple[list[dict], Key | None, int]:
    """(the page, the key to continue after or None when it is the last page, items left after it).
    ``items`` are sorted by key, as the store lists them."""
    if after is not None:
        items = [o for o in items if key_of(o) > after]
    if not limit or len(items) <= limit:
        return items, None, 0
    chunk = items[:limit]
    return chunk, key_of(chunk[-1]), len(items) - limit
