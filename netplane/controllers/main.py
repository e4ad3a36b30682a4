"""`netplane server`: the API server and the controllers with no emulated nodes, for agents that join
over the network (Vagrant VMs, or the emulated hosts of a lab whose control plane runs in a host).

Several servers may share one etcd (``--storage``): each runs the controllers only while it holds
the Lease ``kube-system/netplane-controllers`` (netplane.controllers.leader), so one of them leads
and another takes over within the lease duration when it dies.

Its state directory holds the store (``api.db``), the CA and the server's certificate (``pki/``),
the tokens (``tokens.json``) and ``admin.kubeconfig``. The server speaks TLS with the cluster's own
CA; the certificate names the listen address, 127.0.0.1 and localhost. Agents join with a bootstrap
token (``--bootstrap-token``, or one from ``netplane token create``), through which they also learn
the CA. Restarted on the same state directory, it keeps its store, CA and tokens.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from netplane import names
from netplane.api import audit, auth, kubeconfig, loop, satokens, tls
from netplane.api.client import Client
from netplane.api.informer import Informers
from netplane.api.server import start
from netplane.api.store import Store
from netplane.controllers import manager
from netplane.controllers.kubernetesservice import KubernetesService
from netplane.controllers.leader import LeaderElector

log = logging.getLogger("netplane.server")
ADMIN_KUBECONFIG = "admin.kubeconfig"
TOKENS = "tokens.json"


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    state_dir: Path
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    cluster_domain: str = names.CLUSTER_DOMAIN  # names the API server's certificate and the tokens' issuer
    storage: str | None = None  # etcd://...; None: SQLite in the state directory
    bootstrap_token: str | None = None
    lease_seconds: int = 40  # the nodes' Leases
    name: str = "server"  # names the CA and the kubeconfig's context
    election: tuple[float, float, float] = (15.0, 10.0, 2.0)  # lease duration, renew deadline, retry period
    audit: tuple[str, str, bool] = ("None", "audit.log", False)  # level; file in state_dir (- for none); stdout too



def _reachable(host: str) -> bool:
    """Whether pods could reach a server listening on host (not loopback, not every address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def https_url(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def token_file(state_dir: Path) -> auth.TokenFile:
    return auth.TokenFile(state_dir / TOKENS)


def create_token(state_dirs: list[Path], ttl_seconds: float | None, description: str = "") -> str:
    """A new bootstrap token, given to the servers of state_dirs (the replicas of one control plane)."""
    token = auth.new_bootstrap_token()
    expires = None if ttl_seconds is None else time.time() + ttl_seconds
    for state_dir in state_dirs:
        token_file(state_dir).add(auth.Token(token, "bootstrap", expires, description))
    return token


def join_command(state_dirs: list[Path], token: str) -> str:
    """What to run on a machine that should join these servers as a node."""
    servers = ",".join(kubeconfig.read(d / ADMIN_KUBECONFIG).server for d in state_dirs)
    return f"netplane agent --server {servers} --token {token}"


async def run(cfg: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT (or until cancelled)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tokens = token_file(cfg.state_dir)
    admin = tokens.admin()
    if cfg.bootstrap_token and not tokens.accepts(cfg.bootstrap_token):
        auth.split_bootstrap(cfg.bootstrap_token)  # the form, before it is stored
        tokens.add(auth.Token(cfg.bootstrap_token, "bootstrap", description="--bootstrap-token"))
    pki = cfg.state_dir / "pki"
    certs = tls.ensure(pki, cfg.name, tls.apiserver_names(cfg.service_cidr, cfg.cluster_domain, cfg.host))
    store = Store(cfg.storage or str(cfg.state_dir / "api.db"), admit=manager.admission(cfg.service_cidr))
    level, where, stdout = cfg.audit
    audit_log = None if level == "None" else \
        audit.AuditLog(level, None if where == "-" else cfg.state_dir / where, stdout=stdout or where == "-")
    runner, port = await start(store, cfg.host, cfg.port, tokens, certs.server_context(), ca_pem=certs.ca.read_bytes(),
                               issuer=satokens.for_cluster(pki, cfg.cluster_domain), kubelet_client=tls.kubelet_client(pki),
                               audit_log=audit_log)
    url = https_url(cfg.host, port)  # the bound port, when cfg.port was 0
    client = Client(url, admin, str(certs.ca))
    try:
        await manager.system_objects(client)
        informers = Informers(client)
        parts = manager.loops(informers, cfg.cluster_cidr, cfg.lease_seconds, certs.ca.read_text()) | informers.parts()
        identity = f"{socket.gethostname()}_{url}_{secrets.token_hex(3)}"
        elector = LeaderElector(client, names.LEADER_LEASE, "kube-system", identity, *cfg.election)

        async def lead() -> None:
            await asyncio.gather(*(loop.supervise(name, fn) for name, fn in parts.items()))

        tasks = [asyncio.create_task(elector.run(lead), name="leader-election")]
        if _reachable(cfg.host):  # every server puts itself in the `kubernetes` Service's endpoints
            endpoints = KubernetesService(client, cfg.service_cidr, cfg.host, port)
            await endpoints.sync()
            tasks.append(asyncio.create_task(loop.supervise("kubernetes-service", endpoints.run)))
        kubeconfig.write(cfg.state_dir / ADMIN_KUBECONFIG, cfg.name,
                         kubeconfig.Connection(url, admin, certs.ca.read_bytes()))
        log.info("API server on %s; join nodes with: netplane agent --server %s --token TOKEN", url, url)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await client.close()
        await runner.cleanup()
        store.close()
