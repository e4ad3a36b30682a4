"""A lab's state directory: /var/lib/netplane/<lab>/ holds the lab as validated, the API store, the
kubeconfig, the control plane's pid and log, and each node's CNI data. `down` and `clean` remove it."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from netplane import names
from netplane.api import kubeconfig
from netplane.lab.model import Lab, from_dict

ROOT = Path(os.environ.get("NETPLANE_STATE_DIR", "/var/lib/netplane"))


@dataclass(frozen=True)
class LabState:
    name: str

    def __post_init__(self) -> None:
        names.check_lab_name(self.name)  # every path below is made from it

    @property
    def dir(self) -> Path:
        return ROOT / self.name

    @property
    def lab_file(self) -> Path:
        return self.dir / "lab.json"

    @property
    def store(self) -> Path:
        return self.dir / "store.db"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def pid_file(self) -> Path:
        return self.dir / "control-plane.pid"

    @property
    def log(self) -> Path:
        return self.dir / "control-plane.log"

    def node_resolv(self) -> Path:
        """The emulated nodes' /etc/resolv.conf (the kubelet's --resolv-conf), written: no name
        server, since a lab sends nothing outside; a pod with dnsPolicy Default gets it."""
        path = self.dir / "node-resolv.conf"
        path.write_text("# the lab's nodes have no name server of their own: a lab sends nothing outside\n")
        return path

    def image_catalog(self, images: dict) -> Path:
        """The lab file's images, written for node agents in their own processes (--image-catalog)."""
        path = self.dir / "images.json"
        path.write_text(json.dumps(images))
        return path

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def exists(self) -> bool:
        return self.lab_file.exists()

    def save_lab(self, lab: Lab) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lab_file.write_text(json.dumps(lab.to_dict(), indent=2))

    def load_lab(self) -> Lab:
        return from_dict(json.loads(self.lab_file.read_text()))

    def pid(self) -> int | None:
        """The control plane's pid if it is alive and is netplane's (a recycled pid is not)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if b"netplane.lab.daemon" in cmdline else None

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def token(self) -> str:
        """The lab's bearer token, made once, so that kubeconfigs stay valid across restarts."""
        path = self.dir / "token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def write_kubeconfig(self, server: str, token: str, ca: Path) -> None:
        kubeconfig.write(self.kubeconfig, self.name, kubeconfig.Connection(server, token, ca.read_bytes()))

    def connection(self) -> tuple[str, str, str]:
        """(server URL, token, CA file): what a Client needs to reach the lab's API server."""
        conn = kubeconfig.read(self.kubeconfig)
        return conn.server, conn.token, str(self.pki / "ca.crt")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def known_labs() -> list[str]:
    """The labs with a state directory (other directories there, such as `netplane cni`'s cache, are not labs)."""
    if not ROOT.is_dir():
        return []
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and names.is_lab_name(p.name))
