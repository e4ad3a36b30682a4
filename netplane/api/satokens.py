"""ServiceAccount tokens as kube-apiserver issues and checks them: JWTs signed RS256 with the
cluster's service-account key (``sa.key``, beside the CA; one key for every replica of a control
plane), the issuer and audience kubeadm configures, the ``kubernetes.io`` claims naming the
namespace, the account and the object the token is bound to.

A token is good while its signature, issuer, audience and expiry check out *and* the objects it
names still exist with the same uid (a token bound to a deleted pod stops working at once, as
upstream's). Tokens the kubelet asks for with its 3607 s are extended to a year, with a
``warnafter`` at the hour, as kube-apiserver's --service-account-extend-token-expiration does.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from netplane import names
from netplane.api.auth import User

KEY_FILE = "sa.key"
KUBELET_SECONDS = 3607  # what the kubelet asks for a projected token (kube-api-access)
EXTENDED_SECONDS = 365 * 24 * 3600
MIN_SECONDS, MAX_SECONDS = 600, 2 ** 32
CLAIMS = "kubernetes.io"


def ensure_key(directory: Path) -> Path:
    """The service-account signing key in ``directory`` (a 2048-bit RSA key, as kubeadm's sa.key),
    made once."""
    key = directory / KEY_FILE
    if not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        made = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key.touch(mode=0o600)
        key.write_bytes(made.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return key


@dataclass(frozen=True)
class Identity:
    """Who a good token speaks for."""

    namespace: str
    service_account: str
    audiences: tuple[str, ...]

    uid: str = ""  # the ServiceAccount's

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def user(self) -> User:
        return User(self.username, ("system:serviceaccounts", f"system:serviceaccounts:{self.namespace}",
                                    "system:authenticated"), self.uid)


def issuer_url(cluster_domain: str = names.CLUSTER_DOMAIN) -> str:
    """kubeadm's --service-account-issuer: the `kubernetes` Service's name in the cluster's domain."""
    return f"https://kubernetes.default.svc.{cluster_domain}"


def for_cluster(pki: Path, cluster_domain: str) -> "TokenIssuer":
    """The issuer of a cluster's tokens: its key in ``pki`` (made once), its domain's issuer URL."""
    return TokenIssuer(ensure_key(pki), issuer_url(cluster_domain))


class TokenIssuer:
    """Issues and checks the tokens of one signing key; a token without audiences is for the API
    server, named by the issuer's URL as kube-apiserver's default --api-audiences."""

    def __init__(self, key_file: Path, issuer: str = issuer_url()) -> None:
        self.issuer, self.api_audiences = issuer, (issuer,)
        self.private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        self.public = self.private.public_key()
        der = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    def issue(self, account: dict, seconds: int, audiences: list[str] | None = None,
              bound: dict | None = None, node: dict | None = None) -> tuple[str, int]:
        """A token for ServiceAccount ``account``; ``bound``: the object (Pod or Secret) it lives
        as long as; ``node``: the Node of a bound pod. Returns the token and its expiry (Unix time)."""
        now = int(time.time())
        meta = account["metadata"]
        private: dict = {"namespace": meta["namespace"],
                         "serviceaccount": {"name": meta["name"], "uid": meta.get("uid", "")}}
        if bound is not None and bound.get("kind") in ("Pod", "Secret"):
            private[bound["kind"].lower()] = {"name": bound["name"], "uid": bound.get("uid", "")}
        if node is not None:
            private["node"] = {"name": node["metadata"]["name"], "uid": node["metadata"].get("uid", "")}
        lifetime = seconds
        if seconds == KUBELET_SECONDS and bound is not None and bound.get("kind") == "Pod":
            private["warnafter"] = now + seconds
            lifetime = EXTENDED_SECONDS
        claims = {"iss": self.issuer, "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
                  "aud": list(audiences or self.api_audiences), "iat": now, "nbf": now, "exp": now + lifetime,
                  "jti": secrets.token_hex(16), CLAIMS: private}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.key_id}), now + lifetime

    def claims(self, token: str) -> dict | None:
        """The claims of a token this key signed for the API server, unexpired; None otherwise."""
        if token.count(".") != 2:
            return None
        try:
            return jwt.decode(token, self.public, algorithms=["RS256"], audience=list(self.api_audiences),
                              issuer=self.issuer,
                              options={"require": ["exp", "iat", "sub"]}, leeway=60)
        except jwt.PyJWTError:
            return None

    def authenticate(self, token: str, lookup) -> Identity | None:
        """Who the token speaks for, if it is good and what it names still exists with its uid;
        ``lookup(plural, namespace, name)`` reads an object (None when there is none)."""
        claims = self.claims(token)
        if claims is None or not isinstance(claims.get(CLAIMS), dict):
            return None
        private = claims[CLAIMS]
        namespace, account = private.get("namespace", ""), private.get("serviceaccount") or {}
        found = lookup("serviceaccounts", namespace, account.get("name", ""))
        if found is None or found["metadata"].get("uid") != account.get("uid"):
            return None
        for kind, plural in (("pod", "pods"), ("secret", "secrets")):
            if kind in private:
                bound = lookup(plural, namespace, private[kind].get("name", ""))
                if bound is None or bound["metadata"].get("uid") != private[kind].get("uid"):
                    return None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        return Identity(namespace, account.get("name", ""), tuple(audiences), account.get("uid", ""))
