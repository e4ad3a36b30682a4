"""A lab whose control plane runs as on real machines (lab file ``controlPlane: {mode: hosts}``).

`netplane server` runs in its own emulated host ``cp-1`` on the underlay (172.30.0.3:6443), and
every node runs `netplane agent` as a process of its own inside its namespace, joined with a
bootstrap token over TLS, exactly as the Vagrant cluster's VMs do. The lab's control-plane process
supervises them, runs the emulated cloud (LoadBalancer IPs), and relays 127.0.0.1:PORT in the
machine's namespace to the server, so kubectl and netplane's CLI reach it as in any lab.

With ``replicas: 3, storage: etcd`` there are three such hosts (cp-1..cp-3, .3-.5), each with an
etcd member of one cluster and a server on it; the servers share one CA and one token file, and
elect the one that runs the controllers (netplane.controllers.leader). Agents are given every
server and fail over between them (client-side failover, netplane.api.client.Client); kubectl
reaches them through the relay, which connects from the underlay client to the first server that
accepts.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from netplane import names
from netplane.api import auth, kubeconfig, satokens, tls
from netplane.api.client import Client
from netplane.api.informer import Informers
from netplane.kernel import commands, netns
from netplane.lab import cloud, podroutes
from netplane.lab.model import Lab
from netplane.lab.state import LabState

log = logging.getLogger("netplane.hosts")
API_PORT = 6443
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
START_SECONDS = 45.0
RESTART_SECONDS = 1.0
CONNECT_SECONDS = 1.0


def netplane_command() -> str:
    return str(Path(sys.executable).with_name("netplane"))


def join_token(state: LabState) -> str:
    """The lab's bootstrap token, made once (`state/join-token`, mode 0600)."""
    path = state.dir / "join-token"
    if not path.exists():
        path.write_text(auth.new_bootstrap_token())
        path.chmod(0o600)
    return path.read_text().strip()


def server_dirs(state: LabState, lab: Lab) -> list[Path]:
    """Each replica's state directory: servers/cp-1, servers/cp-2, ..."""
    return [state.dir / "servers" / names.control_plane_host(i) for i in range(1, lab.controlPlane.replicas + 1)]


def server_urls(lab: Lab) -> str:
    """Every replica's URL, comma-separated, for clients that fail over between them."""
    return ",".join(f"https://{address}:{API_PORT}" for address in lab.control_plane_ips)


def etcd_argv(lab: Lab, state: LabState, index: int) -> list[str]:
    """A member of the lab's etcd cluster, one in each control-plane host."""
    me = lab.control_plane_ips[index - 1]
    cluster = ",".join(f"{names.control_plane_host(i)}=http://{address}:{ETCD_PEER_PORT}"
                       for i, address in enumerate(lab.control_plane_ips, 1))
    return ["etcd", "--name", names.control_plane_host(index), "--data-dir", str(state.dir / "etcd" / f"cp-{index}"),
            "--listen-client-urls", f"http://{me}:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://{me}:{ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"http://{me}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{me}:{ETCD_PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-token", f"netplane-{lab.name}",
            "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"]


def server_argv(lab: Lab, state: LabState, token: str, index: int) -> list[str]:
    argv = [netplane_command(), "server", "--listen", f"{lab.control_plane_ips[index - 1]}:{API_PORT}",
            "--state-dir", str(server_dirs(state, lab)[index - 1]), "--bootstrap-token", token, "--name", lab.name,
            "--cluster-cidr", lab.network.clusterCIDR, "--service-cidr", lab.network.serviceCIDR,
            "--cluster-domain", lab.network.dnsDomain, "--audit-level", lab.audit.level,
            *(["--audit-stdout"] if lab.audit.stdout else [])]
    if lab.controlPlane.storage == "etcd":
        members = ",".join(f"{address}:{ETCD_CLIENT_PORT}" for address in lab.control_plane_ips)
        return argv + ["--storage", f"etcd://{members}"]
    return argv + (["--storage", lab.storage] if lab.storage != "sqlite" else [])


def agent_argv(lab: Lab, state: LabState, token: str, node: str) -> list[str]:
    return [netplane_command(), "agent", "--server", server_urls(lab),
            "--token", token, "--node", node, "--iface", names.UNDERLAY_IF, "--state-dir", str(state.node_dir(node)),
            "--cluster-cidr", lab.network.clusterCIDR, "--proxy-mode", lab.network.proxyMode,
            "--cni", lab.network.cni, "--netns-prefix", names.lab_prefix(lab.name),
            "--resync-seconds", str(lab.nodeResyncSeconds),
            "--cluster-dns", names.cluster_dns_ip(lab.network.serviceCIDR), "--cluster-domain", lab.network.dnsDomain,
            "--resolv-conf", str(state.node_resolv()),
            "--image-catalog", str(state.image_catalog(lab.images)),
            "--node-labels", ",".join(f"{k}={v}" for k, v in lab.nodeLabels.get(node, {}).items()),
            "--capacity", ",".join(f"{k}={v}" for k, v in lab.nodeCapacity.get(node, {}).items())]


async def keep_running(name: str, space: str, argv: list[str], log_file: Path) -> None:
    """Run argv inside a namespace, started again whenever it ends, until cancelled (then ended)."""
    while True:
        with open(log_file, "ab") as out:
            proc = await commands.start(space, argv, stdout=out, stderr=out)
        try:
            status = await proc.wait()
        except asyncio.CancelledError:
            proc.terminate()
            await proc.wait()
            raise
        log.error("%s exited (%s); starting it again (log: %s)", name, status, log_file)
        await asyncio.sleep(RESTART_SECONDS)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def relay(space: str, addresses: list[tuple[str, int]]) -> tuple[asyncio.AbstractServer, int]:
    """A TCP relay from 127.0.0.1:PORT here to the first of addresses that accepts, connecting from
    inside a namespace on the underlay (client-side failover for kubectl); (server, PORT)."""
    loop = asyncio.get_running_loop()
    order = list(addresses)

    async def connect() -> socket.socket | None:
        for address in list(order):
            upstream = netns.socket_in(space, socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(upstream, address), CONNECT_SECONDS)
                return upstream
            except (OSError, asyncio.TimeoutError):
                upstream.close()
                order.remove(address)
                order.append(address)  # tried last from now on
        return None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    return listener, listener.sockets[0].getsockname()[1]


async def wait_for(path: Path, seconds: float, log_file: Path) -> None:
    """Until path exists; after seconds, an error quoting the end of log_file."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not path.exists():
        if loop.time() > deadline:
            tail = log_file.read_text(errors="replace").splitlines()[-10:] if log_file.exists() else ["(no log)"]
            raise RuntimeError(f"{path.name} did not appear in {seconds:.0f} s; {log_file} ends with:\n"
                               + "\n".join(tail))
        await asyncio.sleep(0.05)


def share_credentials(state: LabState, lab: Lab, token: str) -> None:
    """One CA and one token file for every replica, so that any of them serves any client."""
    if not (state.pki / "ca.key").exists():
        tls.make_ca(state.pki, lab.name)
    satokens.ensure_key(state.pki)
    tokens = auth.TokenFile(state.dir / "tokens.json")
    tokens.admin()
    if not tokens.accepts(token):
        tokens.add(auth.Token(token, "bootstrap", description="the lab's join token"))
    for directory in server_dirs(state, lab):
        (directory / "pki").mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "ca.key", satokens.KEY_FILE):
            shutil.copy2(state.pki / name, directory / "pki" / name)
        if not (directory / "tokens.json").exists():
            shutil.copy2(tokens.path, directory / "tokens.json")


async def parts(lab: Lab, state: LabState) -> tuple[dict[str, Callable[[], Awaitable]], Client, asyncio.AbstractServer]:
    """Start etcd (if the lab uses it) and the servers and wait for them; then what the lab's process
    runs: their keepers, the agents (each a process), and the cloud; with the admin client and the relay."""
    token = join_token(state)
    logs = state.dir / "logs"
    logs.mkdir(exist_ok=True)
    share_credentials(state, lab, token)
    keepers: list[asyncio.Task] = []
    for i in range(1, lab.controlPlane.replicas + 1):
        space, host = names.control_plane_netns(lab.name, i), names.control_plane_host(i)
        if lab.controlPlane.storage == "etcd":
            keepers.append(asyncio.create_task(keep_running(f"etcd/{host}", space, etcd_argv(lab, state, i),
                                                            logs / f"etcd-{host}.log")))
        keepers.append(asyncio.create_task(keep_running(f"server/{host}", space, server_argv(lab, state, token, i),
                                                        logs / f"server-{host}.log")))
    for i, directory in enumerate(server_dirs(state, lab), 1):
        await wait_for(directory / "admin.kubeconfig", START_SECONDS, logs / f"server-{names.control_plane_host(i)}.log")
    admin = kubeconfig.read(server_dirs(state, lab)[0] / "admin.kubeconfig")
    listener, port = await relay(names.client_netns(lab.name), [(a, API_PORT) for a in lab.control_plane_ips])
    local = f"https://127.0.0.1:{port}"
    client = Client(local, admin.token, str(state.pki / "ca.crt"))
    run: dict[str, Callable[[], Awaitable]] = {f"keeper/{i}": (lambda task=task: task) for i, task in enumerate(keepers)}
    for node in lab.nodes:
        argv = agent_argv(lab, state, token, node)
        run[f"agent/{node}"] = lambda node=node, argv=argv: keep_running(
            f"agent/{node}", names.node_netns(lab.name, node), argv, logs / f"agent-{node}.log")
    informers = Informers(client)
    run.update(cloud.components(informers, lab.name, lab.network.loadBalancerPool))
    control_plane = [names.control_plane_netns(lab.name, i) for i in range(1, lab.controlPlane.replicas + 1)]
    run.update(podroutes.components(informers, control_plane, lab.network.clusterCIDR))
    run.update(informers.parts())
    state.write_kubeconfig(local, admin.token, state.pki / "ca.crt")
    return run, client, listener
