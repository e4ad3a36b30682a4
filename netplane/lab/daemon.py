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
import sys

from netplane import names
from netplane.agent.node import AgentConfig, NodeAgent
from netplane.api import audit, loop, satokens, tls
from netplane.api.client import Client
from netplane.api.informer import Informers
from netplane.api.main import setup_logging
from netplane.api.server import start
from netplane.api.store import Store
from netplane.controllers import manager
from netplane.controllers.kubernetesservice import KubernetesService
from netplane.kernel import netns
from netplane.lab import cloud, hosts
from netplane.lab.model import Lab
from netplane.lab.state import LabState

log = logging.getLogger("netplane.daemon")


API_PORT = 6443


async def run(state: LabState) -> None:
    lab = state.load_lab()
    if lab.controlPlane.mode == "hosts":
        parts, client, relay = await hosts.parts(lab, state)
        try:
            await loop.until_stopped(parts)
        finally:
            relay.close()
            await client.close()
        return
    await run_embedded(state, lab)


async def run_embedded(state: LabState, lab: Lab) -> None:
    """The control plane in this process. The API server listens on loopback for the lab's own
    clients and, as a control-plane node's does, on node-1's address in node-1 (port 6443), which
    the `kubernetes` Service leads pods to. Its outbound sockets (to pods for the proxy
    subresources, to kubelets) are made in node-1, so they cross the lab's data plane."""
    token = state.token()
    first, advertise = names.node_netns(lab.name, lab.nodes[0]), lab.node_ip(lab.nodes[0])
    domain = lab.network.dnsDomain
    certs = tls.ensure(state.pki, lab.name, tls.apiserver_names(lab.network.serviceCIDR, domain, advertise))
    store = Store(str(state.store) if lab.storage == "sqlite" else lab.storage,
                  admit=manager.admission(lab.network.serviceCIDR))
    audit_log = audit.AuditLog(lab.audit.level, state.audit_log, lab.audit.stdout) if lab.audit.level != "None" \
        else None
    runner, port = await start(store, "127.0.0.1", 0, token, certs.server_context(), outbound=netns.sockets_in(first),
                               issuer=satokens.for_cluster(state.pki, domain),
                               sockets=[netns.listener_in(first, advertise, API_PORT)],
                               kubelet_client=tls.kubelet_client(state.pki), audit_log=audit_log)
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
            capacity=lab.nodeCapacity.get(node, {}),
            proxy_mode=lab.network.proxyMode, iptables_backend=lab.network.iptablesBackend, cni=lab.network.cni,
            cluster_dns=(names.cluster_dns_ip(lab.network.serviceCIDR),), cluster_domain=domain,
            resolv_conf=str(state.node_resolv()), images=lab.images, client_ca=str(certs.ca)),
            informers)
        for node in lab.nodes
    ]
    await manager.system_objects(client)
    parts = manager.loops(informers, lab.network.clusterCIDR, lab.nodeLeaseSeconds, certs.ca.read_text())
    parts.update(cloud.components(informers, lab.name, lab.network.loadBalancerPool))
    endpoints = KubernetesService(client, lab.network.serviceCIDR, advertise, API_PORT)
    await endpoints.sync()  # there before the kubeconfig is, as kube-apiserver makes it before it is ready
    parts["kubernetes-service"] = endpoints.run
    parts.update({f"agent/{a.config.node_name}": a.run for a in agents})
    parts.update(informers.parts())
    state.write_kubeconfig(server, token, certs.ca)
    log.info("API server on %s; %d node agents", server, len(agents))
    await loop.until_stopped(parts)
    await client.close()
    await runner.cleanup()


def main() -> None:
    state = LabState(sys.argv[1])
    setup_logging()
    state.pid_file.write_text(str(os.getpid()))
    asyncio.run(run(state))


if __name__ == "__main__":
    main()
