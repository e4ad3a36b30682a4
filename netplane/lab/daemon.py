"""The lab's control-plane process: API server, controllers and one node agent per emulated node
(controlPlane.mode embedded), or the keeper of `netplane server` and `netplane agent` processes in
the lab's hosts (mode hosts, see netplane.lab.hosts); the emulated cloud in both.

`netplane up` starts it in the background (`python -m netplane.lab.daemon LAB`); it writes the
kubeconfig once the API server listens. On SIGTERM it exits and leaves the pods running, as a
stopped kubelet does; `down` then removes the lab's processes and namespaces all at once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from netplane import names
from netplane.agent.node import AgentConfig, NodeAgent
from netplane.api.client import Client
from netplane.api import satokens, serviceaccounts, tls
from netplane.api.informer import Informers
from netplane.api.main import setup_logging
from netplane.api.server import start
from netplane.api.store import Store
from netplane.api.errors import ApiError
from netplane.controllers.daemonset import DaemonSetController
from netplane.controllers.deployment import DeploymentController
from netplane.controllers.endpointslice import EndpointSliceController
from netplane.controllers.eventttl import EventTTL
from netplane.controllers.gc import GarbageCollector
from netplane.controllers.kubernetesservice import KubernetesService, service_ip
from netplane.controllers.nodeipam import NodeIPAM
from netplane.controllers.nodelifecycle import NodeLifecycleController
from netplane.controllers.replicaset import ReplicaSetController
from netplane.controllers.scheduler import Scheduler
from netplane.controllers.serviceaccount import RootCAPublisher, ServiceAccountsController
from netplane.controllers.serviceip import admitter
from netplane.kernel import netns
from netplane.lab import cloud, hosts
from netplane.lab.model import Lab
from netplane.lab.state import LabState

log = logging.getLogger("netplane.daemon")


def controllers(informers: Informers, cluster_cidr: str, lease_seconds: int,
                ca_pem: str) -> dict[str, Callable[[], Awaitable]]:
    """The controller manager: every controller's loop, by name, on informers its caller runs;
    ``ca_pem`` is the API server's CA, published in every namespace."""
    client = informers.client
    inf = {plural: informers.get(plural) for plural in (
        "nodes", "pods", "services", "endpointslices", "endpoints", "replicasets", "deployments", "daemonsets",
        "namespaces", "serviceaccounts", "configmaps")}
    inf["leases"] = informers.get("leases", names.LEASE_NAMESPACE)
    loops = [
        NodeIPAM(client, inf["nodes"], cluster_cidr).loop,
        Scheduler(client, inf["nodes"], inf["pods"]).loop,
        EndpointSliceController(client, inf["services"], inf["pods"], inf["endpointslices"], inf["endpoints"],
                                inf["nodes"]).loop,
        ReplicaSetController(client, inf["replicasets"], inf["pods"]).loop,
        DeploymentController(client, inf["deployments"], inf["replicasets"]).loop,
        DaemonSetController(client, inf["daemonsets"], inf["nodes"], inf["pods"]).loop,
        NodeLifecycleController(client, inf["nodes"], inf["leases"], inf["pods"], lease_seconds).loop,
        ServiceAccountsController(client, inf["namespaces"], inf["serviceaccounts"]).loop,
        RootCAPublisher(client, inf["namespaces"], inf["configmaps"], ca_pem).loop,
        GarbageCollector(client, {"ReplicaSet": inf["replicasets"], "Deployment": inf["deployments"],
                                  "DaemonSet": inf["daemonsets"]}, [inf["pods"], inf["replicasets"]]).loop,
        EventTTL(client).loop,
    ]
    return {loop.name: loop.run for loop in loops}


API_PORT = 6443


def apiserver_names(service_cidr: str, cluster_domain: str, *addresses: str) -> list[str]:
    """What the API server's certificate names: its own addresses, the `kubernetes` Service's IP and
    DNS names in the cluster's domain (so an in-cluster client verifies it), and loopback."""
    return [*addresses, service_ip(service_cidr), "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            f"kubernetes.default.svc.{cluster_domain}", "127.0.0.1", "localhost"]


def admission(service_cidr: str) -> Callable:
    """The API server's admission: Services get their IPs and NodePorts, pods their ServiceAccount."""
    services = admitter(service_cidr)

    def admit(verb: str, plural: str, obj: dict, old: dict | None, store) -> dict:
        return serviceaccounts.admit_pod(verb, plural, services(verb, plural, obj, old, store), old, store)

    return admit


def token_issuer(pki: Path, cluster_domain: str) -> satokens.TokenIssuer:
    return satokens.TokenIssuer(satokens.ensure_key(pki), satokens.issuer_url(cluster_domain))


async def system_namespaces(client: Client) -> None:
    """The namespaces the real API server makes at start: kube-node-lease holds the nodes' Leases."""
    for name in ("kube-public", names.LEASE_NAMESPACE):
        try:
            await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as err:
            if err.code != 409:
                raise


async def supervise(name: str, run: Callable[[], Awaitable]) -> None:
    """Keep a component running: one that ends or fails is logged and started again."""
    while True:
        try:
            await run()
            log.error("%s ended; starting it again", name)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            log.exception("%s was cancelled from within; starting it again", name)
        except Exception:  # noqa: BLE001 - logged; the lab keeps running
            log.exception("%s failed; starting it again", name)
        await asyncio.sleep(1.0)


async def run(state: LabState) -> None:
    lab = state.load_lab()
    if lab.controlPlane.mode == "hosts":
        parts, client, relay = await hosts.parts(lab, state)
        try:
            await until_stopped(parts)
        finally:
            relay.close()
            await client.close()
        return
    await run_embedded(state, lab)


async def until_stopped(parts: dict[str, Callable[[], Awaitable]]) -> None:
    """Supervise every part until SIGTERM or SIGINT, then cancel them all."""
    tasks = [asyncio.create_task(supervise(name, run), name=name) for name, run in parts.items()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log.info("running %d parts", len(tasks))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_embedded(state: LabState, lab: Lab) -> None:
    """The control plane in this process. The API server listens on loopback for the lab's own
    clients and, as a control-plane node's does, on node-1's address in node-1 (port 6443), which
    the `kubernetes` Service leads pods to. Its outbound sockets (to pods for the proxy
    subresources, to kubelets) are made in node-1, so they cross the lab's data plane."""
    token = state.token()
    first, advertise = names.node_netns(lab.name, lab.nodes[0]), lab.node_ip(lab.nodes[0])
    domain = lab.network.dnsDomain
    certs = tls.ensure(state.pki, lab.name, apiserver_names(lab.network.serviceCIDR, domain, advertise))
    store = Store(str(state.store) if lab.storage == "sqlite" else lab.storage,
                  admit=admission(lab.network.serviceCIDR))
    runner, port = await start(store, "127.0.0.1", 0, token, certs.server_context(), outbound=netns.sockets_in(first),
                               issuer=token_issuer(state.pki, domain),
                               sockets=[netns.listener_in(first, advertise, API_PORT)],
                               kubelet_client=tls.kubelet_client(state.pki))
    server = f"https://127.0.0.1:{port}"
    # one client and one set of informers for the controllers and every node agent: a Node or
    # Service change is decoded once, not once per agent
    client = Client(server, token, str(certs.ca))
    informers = Informers(client)
    agents = [
        NodeAgent(client, AgentConfig(
            node_name=node, netns=names.node_netns(lab.name, node), pod_netns_prefix=names.lab_prefix(lab.name),
            state_dir=state.node_dir(node), cluster_cidr=lab.network.clusterCIDR,
            lease_seconds=lab.nodeLeaseSeconds, resync_seconds=lab.nodeResyncSeconds, labels=lab.nodeLabels.get(node, {}),
            proxy_mode=lab.network.proxyMode, iptables_backend=lab.network.iptablesBackend, cni=lab.network.cni,
            cluster_dns=(names.cluster_dns_ip(lab.network.serviceCIDR),), cluster_domain=domain,
            resolv_conf=str(state.node_resolv()), images=lab.images, client_ca=str(certs.ca)),
            informers)
        for node in lab.nodes
    ]
    await system_namespaces(client)
    parts = controllers(informers, lab.network.clusterCIDR, lab.nodeLeaseSeconds, certs.ca.read_text())
    parts.update(cloud.components(informers, lab.name, lab.network.loadBalancerPool))
    endpoints = KubernetesService(client, lab.network.serviceCIDR, advertise, API_PORT)
    await endpoints.sync()  # there before the kubeconfig is, as kube-apiserver makes it before it is ready
    parts["kubernetes-service"] = endpoints.run
    parts.update({f"agent/{a.config.node_name}": a.run for a in agents})
    parts.update(informers.parts())
    state.write_kubeconfig(server, token, certs.ca)
    log.info("API server on %s; %d node agents", server, len(agents))
    await until_stopped(parts)
    await client.close()
    await runner.cleanup()


def main() -> None:
    state = LabState(sys.argv[1])
    setup_logging()
    state.pid_file.write_text(str(os.getpid()))
    asyncio.run(run(state))


if __name__ == "__main__":
    main()
