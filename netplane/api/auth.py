"""Bearer tokens for the API server, and kubeadm-style discovery of its CA through a bootstrap token.

A server's tokens live in one JSON file (``tokens.json`` in its state directory), which the server
re-reads when it changes, so ``netplane token create`` in another process takes effect at once.
The admin token is what kubeconfigs carry; bootstrap tokens (``[a-z0-9]{6}.[a-z0-9]{16}``, id and
secret, as kubeadm's) let an agent join. Every valid token may do everything: there is no RBAC.

Discovery: ``GET /netplane/cluster-info`` is open and returns the server's CA with, per bootstrap
token, an HMAC-SHA256 of the CA keyed by the token's secret (kubeadm signs its cluster-info
ConfigMap with a JWS keyed the same way). An agent that knows a token fetches it without verifying
the server, checks the signature of its token id, and from then on trusts only that CA: a
man-in-the-middle without the token cannot produce the signature.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import string
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BOOTSTRAP_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
CLUSTER_INFO_PATH = "/netplane/cluster-info"
ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class User:
    """Who a request speaks for, as authentication finds it (user.Info)."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""

    def info(self) -> dict:
        """As an audit event or a review writes it."""
        return {"username": self.name, **({"uid": self.uid} if self.uid else {}), "groups": list(self.groups)}


ADMIN = User("kubernetes-admin", ("system:masters", "system:authenticated"))  # kubeadm's admin.conf user
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


def bootstrap_user(token_id: str) -> User:
    return User(f"system:bootstrap:{token_id}", ("system:bootstrappers", "system:authenticated"))


class TokenError(ValueError):
    """A token that has the wrong form or cannot be verified; the message says what to do."""


@dataclass(frozen=True)
class Token:
    token: str
    kind: str  # "admin" or "bootstrap"
    expires: float | None = None  # Unix time; None: never
    description: str = ""

    def valid(self, now: float) -> bool:
        return self.expires is None or now < self.expires


def new_bootstrap_token() -> str:
    """A fresh token of kubeadm's bootstrap shape: six characters of id, a dot, sixteen of secret."""
    return ".".join("".join(secrets.choice(ALPHABET) for _ in range(n)) for n in (6, 16))


def split_bootstrap(token: str) -> tuple[str, str]:
    """(id, secret) of a bootstrap token; TokenError naming the expected form otherwise."""
    match = BOOTSTRAP_TOKEN_RE.match(token)
    if not match:
        raise TokenError(f"token {token[:6]!r}... is not a bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}, "
                         "as `netplane token create` prints")
    return match.group(1), match.group(2)


def signature(secret: str, ca_pem: bytes) -> str:
    return hmac.new(secret.encode(), ca_pem, hashlib.sha256).hexdigest()


class TokenFile:
    """The server's tokens, read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._tokens: list[Token] = []

    def tokens(self) -> list[Token]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            self._tokens = [Token(**t) for t in json.loads(self.path.read_text())["tokens"]]
            self._stamp = (st.st_mtime_ns, st.st_size)
        return self._tokens

    def accepts(self, token: str) -> bool:
        return self.user(token) is not None

    def user(self, token: str) -> User | None:
        """Who a token of this file speaks for: the admin, or a bootstrap token's user; None if none."""
        now = time.time()
        found = next((t for t in self.tokens() if hmac.compare_digest(t.token.encode(), token.encode())
                      and t.valid(now)), None)
        if found is None:
            return None
        return ADMIN if found.kind == "admin" else bootstrap_user(found.token.split(".", 1)[0])

    def add(self, token: Token) -> None:
        """Add a token (written whole through a temporary file, so a reader never sees half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tokens = [t for t in self.tokens() if t.valid(time.time())] + [token]
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=1))
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def admin(self) -> str:
        """The admin token, made on first use."""
        for t in self.tokens():
            if t.kind == "admin":
                return t.token
        token = Token(secrets.token_urlsafe(24), "admin", description="kubeconfig")
        self.add(token)
        return token.token

    def cluster_info(self, ca_pem: bytes) -> dict:
        """What the open discovery path serves: the CA and its signature per valid bootstrap token."""
        now = time.time()
        signed = {}
        for t in self.tokens():
            if t.kind == "bootstrap" and t.valid(now):
                token_id, secret = split_bootstrap(t.token)
                signed[token_id] = signature(secret, ca_pem)
        return {"ca": ca_pem.decode(), "signatures": signed}


def verified_ca(cluster_info: dict, token: str) -> bytes:
    """The CA of a cluster-info answer, once the token's signature checks out; TokenError if not."""
    token_id, secret = split_bootstrap(token)
    ca_pem = str(cluster_info.get("ca", "")).encode()
    signed = cluster_info.get("signatures", {}).get(token_id)
    if signed is None:
        raise TokenError(f"the server knows no bootstrap token {token_id!r} (expired, or never made): "
                         "make one on the server with `netplane token create`")
    if not hmac.compare_digest(signed, signature(secret, ca_pem)):
        raise TokenError(f"the CA the server sent is not signed with token {token_id!r}'s secret: "
                         "a wrong token, or not the server you meant")
    return ca_pem
