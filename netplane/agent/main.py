"""`netplane agent`: one node agent as a process of its own, in the namespaces it runs in.

It is the node agent of an emulated lab (kubelet through CNI, the VXLAN overlay, kube-proxy rules),
run on a machine that joins a `netplane server`: a Vagrant VM, or an emulated host of a lab whose
control plane runs in a host. It reaches the server with a kubeconfig, or with a bootstrap token
through which it learns the server's CA (kept in its state directory). A wrong token or an
unreachable server is reported and retried with backoff; while the server is away the data plane
stays as it is, and the agent reconciles when the server is back. A node is held by one agent: its
Lease names the agent (an id kept in the state directory), and a second agent for the same node is
refused.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from netplane import names
from netplane.agent.node import DEFAULT_CLUSTER_DNS, AgentConfig, NodeAgent
from netplane.api import auth, kubeconfig, loop
from netplane.api.client import Client, discover_ca, server_urls
from netplane.api.errors import ApiError
from netplane.api.times import age_seconds

log = logging.getLogger("netplane.agent")
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
T = TypeVar("T")


class NodeTaken(RuntimeError):
    """Another agent holds the node's Lease."""


@dataclass(frozen=True)
class JoinConfig:
    node: str
    state_dir: Path
    server: str | None = None  # with token
    token: str | None = None
    kubeconfig: Path | None = None
    iface: str = names.UNDERLAY_IF
    cluster_cidr: str = "10.244.0.0/16"
    netns_prefix: str = "cni-"  # the pods' namespaces: <prefix>pod.<namespace>.<name>
    proxy_mode: str = "nftables"
    cni: str = "netplane"
    lease_seconds: int = 40
    resync_seconds: float = 30.0
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=dict)
    cluster_dns: tuple[str, ...] = (DEFAULT_CLUSTER_DNS,)
    cluster_domain: str = names.CLUSTER_DOMAIN
    resolv_conf: str = "/etc/resolv.conf"
    images: dict[str, dict] = field(default_factory=dict)


def identity(state_dir: Path) -> str:
    """This agent's id in its node's Lease: the host's name and a random id kept in the state
    directory, so a restarted agent is still the same holder."""
    path = state_dir / "agent-id"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{socket.gethostname()}-{secrets.token_hex(4)}")
    return path.read_text().strip()


def why_not(server: str, err: Exception) -> str | None:
    """What keeps an agent from joining through `server`, for the log; None for an error that
    retrying does not cure (raised as it is)."""
    if isinstance(err, auth.TokenError):
        return f"cannot join {server}: {err}"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return (f"cannot trust {server}: its certificate is not signed by the CA this agent was given "
                f"({err.certificate_error}); give the cluster's CA in the kubeconfig's certificate-authority-data, "
                f"or join with --token, which learns it")
    if isinstance(err, ApiError) and err.code in (401, 403):
        return f"{server} refuses this agent's credentials ({err}); `netplane token create` prints a join command"
    if isinstance(err, (aiohttp.ClientError, OSError, asyncio.TimeoutError)):
        return f"cannot reach {server} ({err or type(err).__name__})"
    return None


async def with_backoff(attempts: Callable[[], list[tuple[str, Callable[[], Awaitable[T]]]]]) -> T:
    """The first of the (server, attempt) pairs that succeeds; each failure is logged with why_not,
    and the round is tried again after a growing pause."""
    delay = BACKOFF_START
    while True:
        for server, attempt in attempts():
            try:
                return await attempt()
            except Exception as err:  # noqa: BLE001 - why_not tells the ones worth retrying
                if (why := why_not(server, err)) is None:
                    raise
                log.error("%s", why)
        log.info("trying again in %.0f s", delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def connection(cfg: JoinConfig) -> kubeconfig.Connection:
    """Server, token and CA: from the kubeconfig, or learnt through the bootstrap token, retried
    with backoff while the server is unreachable or refuses the token."""
    if cfg.kubeconfig is not None:
        return kubeconfig.read(cfg.kubeconfig)
    assert cfg.server and cfg.token

    async def learn(server: str) -> kubeconfig.Connection:
        return kubeconfig.Connection(cfg.server, cfg.token, await discover_ca(server, cfg.token))
    return await with_backoff(lambda: [(server, lambda server=server: learn(server))
                                       for server in server_urls(cfg.server)])


async def claim(client: Client, node: str, holder: str) -> None:
    """Refuse to run when another agent renewed the node's Lease within its duration."""
    try:
        lease = await client.get("leases", node, names.LEASE_NAMESPACE)
    except ApiError as err:
        if err.code == 404:
            return
        raise
    spec = lease.get("spec", {})
    other, renewed = spec.get("holderIdentity"), spec.get("renewTime")
    if other in (None, holder, node) or not renewed:  # free, ours, or an embedded lab's agent
        return
    age = age_seconds(renewed)
    if age < spec.get("leaseDurationSeconds", 40):
        raise NodeTaken(f"node {node} is held by agent {other} (its Lease was renewed {age:.0f} s ago): stop that "
                        f"agent, or give this one another --node")


async def run(cfg: JoinConfig) -> None:
    """Join and run the node agent until cancelled."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    holder = identity(cfg.state_dir)
    conn = await connection(cfg)
    ca_file = cfg.state_dir / "server-ca.crt"
    ca_file.write_bytes(conn.ca_pem)
    client = Client(conn.server, conn.token, str(ca_file))
    try:
        # a wrong CA or token in a kubeconfig shows here, on the first request: said and retried
        await with_backoff(lambda: [(client.base_url, lambda: claim(client, cfg.node, holder))])
        agent = NodeAgent(client, AgentConfig(
            node_name=cfg.node, netns=None, pod_netns_prefix=cfg.netns_prefix, state_dir=cfg.state_dir,
            cluster_cidr=cfg.cluster_cidr, lease_seconds=cfg.lease_seconds, resync_seconds=cfg.resync_seconds,
            labels=cfg.labels, capacity=cfg.capacity, iface=cfg.iface, proxy_mode=cfg.proxy_mode, cni=cfg.cni, holder=holder,
            cluster_dns=cfg.cluster_dns, cluster_domain=cfg.cluster_domain, resolv_conf=cfg.resolv_conf,
            images=cfg.images, client_ca=str(ca_file)))
        log.info("node %s joined %s as %s", cfg.node, conn.server, holder)
        await loop.supervise(f"agent/{cfg.node}", agent.run)
    finally:
        await client.close()
