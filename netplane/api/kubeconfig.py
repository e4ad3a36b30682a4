"""Kubeconfig files: what kubectl, the Python client and netplane's own agents read to reach a server."""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Connection:
    server: str  # https://HOST:PORT
    token: str
    ca_pem: bytes


def write(path: Path, name: str, conn: Connection) -> None:
    """A kubeconfig with one cluster, one token user and one context (mode 0600, replaced whole)."""
    cluster, user = f"netplane-{name}", f"netplane-{name}-admin"
    authority = base64.b64encode(conn.ca_pem).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": conn.server, "certificate-authority-data": authority}}],
        "users": [{"name": user, "user": {"token": conn.token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster, "user": user, "namespace": "default"}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.rename(path)


def read(path: Path) -> Connection:
    """The current context's server, token and CA; ValueError naming what is missing."""
    config = yaml.safe_load(path.read_text()) or {}
    current = config.get("current-context")
    context = next((c["context"] for c in config.get("contexts", []) if c.get("name") == current), None)
    if context is None:
        raise ValueError(f"{path}: no context {current!r} (current-context)")
    cluster = next((c["cluster"] for c in config.get("clusters", []) if c.get("name") == context.get("cluster")), {})
    user = next((u["user"] for u in config.get("users", []) if u.get("name") == context.get("user")), {})
    if not cluster.get("server") or not user.get("token"):
        raise ValueError(f"{path}: the context needs a cluster with a server and a user with a token")
    if "certificate-authority-data" in cluster:
        ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    elif "certificate-authority" in cluster:
        ca_pem = (path.parent / cluster["certificate-authority"]).read_bytes()
    else:
        raise ValueError(f"{path}: the cluster has no certificate-authority(-data)")
    return Connection(cluster["server"], user["token"], ca_pem)
