"""The node agent's HTTPS port, the kubelet's 10250: what the API server reaches a node through
(``nodes/NAME/proxy/...``, the metrics API, and the pods' logs and streams).

TLS with a serving certificate the agent makes for itself (as a kubelet does when none is given),
and only clients with a certificate from the cluster's CA (the kubelet's --client-ca-file: the API
server's apiserver-kubelet-client); what such a client asks is allowed, as the kubelet's
AlwaysAllow authorizer allows it.

Paths, as the kubelet serves them: ``/healthz``, ``/pods`` (the pods bound to the node, a PodList),
``/stats/summary`` (stats.py), ``/containerLogs/NS/POD/CONTAINER`` (logs.py),
``/exec/NS/POD/CONTAINER?command=...`` and ``/attach/NS/POD/CONTAINER`` (streams.py),
``/portForward/NS/POD`` (portforward.py)."""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

from aiohttp import web

from netplane.agent import containers, logs, portforward, stats, streams
from netplane.agent.kubelet import Kubelet
from netplane.api import tls
from netplane.api.podlog import LogOptionError, LogOptions
from netplane.kernel import netns, nsenter

log = logging.getLogger(__name__)
CERT_NAME = "kubelet"  # its serving certificate and key, kubelet.crt and kubelet.key, as /var/lib/kubelet/pki has them


def refused(why: str, code: int = 400) -> web.Response:
    """A request the kubelet cannot serve, in plain text as the kubelet answers it."""
    return web.Response(status=code, text=f"{why}\n")


def tls_context(pki: Path, node_ip: str, node_name: str, client_ca: str) -> ssl.SSLContext:
    cert, key = tls.self_signed(pki, CERT_NAME, [node_ip, node_name])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
    return context


class KubeletServer:
    def __init__(self, kubelet: Kubelet, stats_: stats.Stats) -> None:
        self.kubelet, self.stats = kubelet, stats_

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/pods", self.pods)
        app.router.add_get("/stats/summary", self.summary)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self.exec)
        app.router.add_route("*", "/attach/{namespace}/{pod}/{container}", self.attach)
        app.router.add_route("*", "/portForward/{namespace}/{pod}", self.port_forward)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(self, request: web.Request) -> web.Response:
        items = sorted(self.kubelet.pods.cache.values(), key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def summary(self, request: web.Request) -> web.Response:
        if not self.kubelet.has_cgroups:
            raise web.HTTPServiceUnavailable(text="no stats: this machine lacks the cgroup v1 hierarchies\n")
        return web.json_response(await asyncio.to_thread(self.stats.summary, self.kubelet.pod_cgroups()))

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        where = request.match_info
        try:
            options = LogOptions.from_query(request.query)
            path, running = self.kubelet.container_log(where["namespace"], where["pod"], where["container"],
                                                       options.previous)
        except LogOptionError as err:
            return refused(str(err))
        except containers.Unavailable as err:
            return refused(str(err), err.code)
        out = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await out.prepare(request)
        try:
            await logs.read(path, options, out.write, running)
        except FileNotFoundError:  # the pod was removed meanwhile
            pass
        await out.write_eof()
        return out

    async def exec(self, request: web.Request) -> web.StreamResponse:
        where, command = request.match_info, request.query.getall("command", [])
        if not command:
            return refused("you must specify at least 1 command")
        try:
            argv = nsenter.command(self.kubelet.running(where["namespace"], where["pod"], where["container"]).pid,
                                   command)
        except containers.Unavailable as err:
            return refused(str(err), err.code)
        except OSError:  # it ended a moment ago
            return refused(f'container not found ("{where["container"]}")')
        return await streams.serve(request, argv, command)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        where = request.match_info
        try:
            name = self.kubelet.attach_socket(where["namespace"], where["pod"], where["container"])
        except containers.Unavailable as err:
            return refused(str(err), err.code)
        copier = netns.socket_in(self.kubelet.node_netns, socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            copier.connect(b"\0" + name.encode())
        except OSError:
            copier.close()
            return refused(f'container "{where["container"]}" cannot be attached to')
        return await streams.serve_attach(request, copier)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        where = request.match_info
        try:
            box = self.kubelet.sandbox_of(where["namespace"], where["pod"])
        except containers.Unavailable as err:
            return refused(str(err), err.code)
        return await portforward.serve(request, box.netns, where["pod"],
                                       refused)

    async def housekeeping(self) -> None:
        """A sample of every cgroup each HOUSEKEEPING seconds, so rates are there when asked for."""
        while self.kubelet.has_cgroups:
            await asyncio.to_thread(self.stats.summary, self.kubelet.pod_cgroups())
            await asyncio.sleep(stats.HOUSEKEEPING)

    async def serve(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        """Serve on the listening socket until cancelled."""
        runner = web.AppRunner(self.app(), handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock, ssl_context=context).start()
            await self.housekeeping()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
