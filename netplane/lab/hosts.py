"""A lab whose control plane runs as on real machines (lab file ``controlPlane: {mode: hosts}``).

`netplane server` runs in its own emulated host ``cp-1`` on the underlay (172.30.0.3:6443), and
every node runs `netplane agent` as a process of its own inside its namespace, joined with a
bootstrap token over TLS, exactly as the Vagrant cluster's VMs do. The lab's control-plane process
supervises them, runs the emulated cloud (LoadBalancer IPs), and relays 127.0.0.1:PORT in the
machine's namespace to the server, so kubectl and netplane's CLI reach it as in any lab.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from netplane import names
from netplane.api import auth, kubeconfig
from netplane.api.client import Client
from netplane.kernel import netns
from netplane.lab import cloud
from netplane.lab.model import Lab
from netplane.lab.state import LabState

log = logging.getLogger("netplane.hosts")
API_PORT = 6443
START_SECONDS = 30.0
RESTART_SECONDS = 1.0


def netplane_command() -> str:
    return str(Path(sys.executable).with_name("netplane"))


def join_token(state: LabState) -> str:
    """The lab's bootstrap token, made once (`state/join-token`, mode 0600)."""
    path = state.dir / "join-token"
    if not path.exists():
        path.write_text(auth.new_bootstrap_token())
        path.chmod(0o600)
    return path.read_text().strip()


def server_argv(lab: Lab, state: LabState, token: str) -> list[str]:
    argv = [netplane_command(), "server", "--listen", f"{lab.control_plane_ip}:{API_PORT}",
            "--state-dir", str(state.dir / "server"), "--bootstrap-token", token, "--name", lab.name,
            "--cluster-cidr", lab.network.clusterCIDR, "--service-cidr", lab.network.serviceCIDR]
    return argv + (["--storage", lab.storage] if lab.storage != "sqlite" else [])


def agent_argv(lab: Lab, state: LabState, token: str, node: str) -> list[str]:
    return [netplane_command(), "agent", "--server", f"https://{lab.control_plane_ip}:{API_PORT}",
            "--token", token, "--node", node, "--iface", names.UNDERLAY_IF, "--state-dir", str(state.node_dir(node)),
            "--cluster-cidr", lab.network.clusterCIDR, "--proxy-mode", lab.network.proxyMode,
            "--cni", lab.network.cni, "--netns-prefix", names.lab_prefix(lab.name)]


async def keep_running(name: str, space: str, argv: list[str], log_file: Path) -> None:
    """Run argv inside a namespace, started again whenever it ends, until cancelled (then ended)."""
    while True:
        with open(log_file, "ab") as out:
            proc = await asyncio.create_subprocess_exec(*netns.command(space, argv), stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=out, stderr=out)
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


async def relay(space: str, address: tuple[str, int]) -> tuple[asyncio.AbstractServer, int]:
    """A TCP relay from 127.0.0.1:PORT here to address inside a namespace; (server, PORT)."""
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = netns.socket_in(space, socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, address)
        except OSError:
            upstream.close()
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


async def parts(lab: Lab, state: LabState) -> tuple[dict[str, Callable[[], Awaitable]], Client, asyncio.AbstractServer]:
    """Start the server and wait for it; then what the lab's process runs: the agents (each a
    process), the server's keeper, and the cloud; with the admin client and the relay."""
    token = join_token(state)
    space = names.control_plane_netns(lab.name)
    server_dir = state.dir / "server"
    logs = state.dir / "logs"
    logs.mkdir(exist_ok=True)
    server = asyncio.create_task(keep_running("server", space, server_argv(lab, state, token), logs / "server.log"))
    await wait_for(server_dir / "admin.kubeconfig", START_SECONDS, logs / "server.log")
    admin = kubeconfig.read(server_dir / "admin.kubeconfig")
    state.pki.mkdir(parents=True, exist_ok=True)
    (state.pki / "ca.crt").write_bytes(admin.ca_pem)
    listener, port = await relay(space, (lab.control_plane_ip, API_PORT))
    local = f"https://127.0.0.1:{port}"
    client = Client(local, admin.token, str(state.pki / "ca.crt"))
    run: dict[str, Callable[[], Awaitable]] = {"server": lambda: server}
    for node in lab.nodes:
        argv = agent_argv(lab, state, token, node)
        run[f"agent/{node}"] = lambda node=node, argv=argv: keep_running(
            f"agent/{node}", names.node_netns(lab.name, node), argv, logs / f"agent-{node}.log")
    run.update(cloud.components(client, lab.name, lab.network.loadBalancerPool))
    state.write_kubeconfig(local, admin.token, state.pki / "ca.crt")
    return run, client, listener
