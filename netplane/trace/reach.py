"""`netplane reach`: which addresses of a Service answer from where, and with what client address.

For every source (a pod, a node, the underlay client) and every address of a Service port (its
ClusterIP, its NodePort on each node, its load-balancer and external IPs), one TCP connection from
the source's network namespace asks the endpoint `GET /clientip` (the echo server's answer is the
address it saw). A cell is that address, named after what holds it (a pod, a node's eth0, cni0 or
flannel.1, the underlay client), or `refused` (rejected: the Service has no endpoints), or
`no answer` (dropped, or routed nowhere, within the timeout). All probes run at once, each on its
own socket made in its source's namespace, so a matrix costs one timeout.

JSON (`-o json`): [{"service", "destination", "address", "port", "source",
                    "result": "answered" | "refused" | "no answer", "seen": IP | null,
                    "seen_as": name | null, "detail": str}]
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass

from netplane import names
from netplane.kernel import netns
from netplane.trace.resolve import SERVICE_PREFIXES, Resolver, TraceError, service_port

ANSWERED, REFUSED, NO_ANSWER = "answered", "refused", "no answer"
REQUEST = b"GET /clientip HTTP/1.0\r\nHost: reach\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Source:
    label: str   # "default/client", "node/node-1", "underlay/client"
    netns: str


@dataclass(frozen=True)
class Destination:
    service: str  # "default/web:80"
    kind: str     # "ClusterIP", "NodePort node/node-1", "LoadBalancer", "externalIP"
    address: str
    port: int


@dataclass(frozen=True)
class Outcome:
    result: str        # ANSWERED, REFUSED or NO_ANSWER
    seen: str | None   # the client address the endpoint saw
    detail: str = ""   # the error, or the answer when it was not an address


def destinations(svc: dict, port: dict, node_ips: dict[str, str]) -> list[Destination]:
    """Every address of one Service port a client can use, in the order a table shows them."""
    meta, spec = svc["metadata"], svc.get("spec", {})
    name = f"{meta.get('namespace', 'default')}/{meta['name']}:{port.get('name') or port['port']}"
    found = []
    if spec.get("clusterIP") not in (None, "", "None"):
        found.append(Destination(name, "ClusterIP", spec["clusterIP"], int(port["port"])))
    if port.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
        found += [Destination(name, f"NodePort node/{node}", ip, int(port["nodePort"])) for node, ip in node_ips.items()]
    if spec.get("type") == "LoadBalancer":
        found += [Destination(name, "LoadBalancer", i["ip"], int(port["port"]))
                  for i in (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")]
    found += [Destination(name, "externalIP", ip, int(port["port"])) for ip in spec.get("externalIPs") or []]
    return found


def address_names(pods: list[dict], nodes: list[dict], node_ips: dict[str, str], client_ip: str) -> dict[str, str]:
    """Who holds each address a probe can be seen from: pods, the underlay client, and each node's
    eth0, cni0 (its pod subnet's gateway, .1) and flannel.1 (the subnet's network address, .0)."""
    found = {client_ip: "underlay/client"}
    for node in nodes:
        name = node["metadata"]["name"]
        if name in node_ips:
            found[node_ips[name]] = f"node/{name} {names.UNDERLAY_IF}"
        cidr = node.get("spec", {}).get("podCIDR")
        if cidr:
            subnet = ipaddress.ip_network(cidr)
            found[str(subnet.network_address)] = f"node/{name} {names.VXLAN_IF}"
            found[str(subnet.network_address + 1)] = f"node/{name} {names.BRIDGE_IF}"
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if ip and not pod.get("spec", {}).get("hostNetwork"):
            found[ip] = f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"
    return found


async def _ask(sock: socket.socket, address: str, port: int, timeout: float) -> Outcome:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (address, port))
            await loop.sock_sendall(sock, REQUEST)
            answer = b""
            while chunk := await loop.sock_recv(sock, 4096):
                answer += chunk
    except TimeoutError:
        return Outcome(NO_ANSWER, None, "timed out")
    except ConnectionRefusedError:
        return Outcome(REFUSED, None, "connection refused")
    except OSError as err:
        return Outcome(NO_ANSWER, None, errno.errorcode.get(err.errno or 0, str(err)))
    finally:
        sock.close()
    body = answer.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
    host = body.rpartition(":")[0] if ":" in body else body
    try:
        return Outcome(ANSWERED, str(ipaddress.ip_address(host)))
    except ValueError:
        return Outcome(ANSWERED, None, body[:80])


async def probe(sources: list[Source], targets: list[Destination], timeout: float = 2.0
                ) -> dict[tuple[Source, Destination], Outcome]:
    """Every source asks every destination, all at once."""
    cells = [(s, d) for s in sources for d in targets]
    wanted = Counter(s.netns for s, _ in cells)
    # one thread per namespace makes all of that namespace's sockets
    sockets = {space: netns.run_in(space, lambda n=n: [socket.socket() for _ in range(n)])
               for space, n in wanted.items()}
    for sock in (sock for made in sockets.values() for sock in made):
        sock.setblocking(False)
    asks = [_ask(sockets[s.netns].pop(), d.address, d.port, timeout) for s, d in cells]
    return dict(zip(cells, await asyncio.gather(*asks)))


@dataclass(frozen=True)
class Plan:
    sources: list[Source]
    destinations: list[Destination]
    names: dict[str, str]  # address -> who holds it


async def plan(client, lab, services: list[str], sources: list[str], namespace: str) -> Plan:
    """The sources and destinations of `netplane reach`: each SERVICE is `[svc/]NAME[:PORT]` (its
    first TCP port by default); without --from the sources are every node, the underlay client and
    the first Running pod (by name) on each node."""
    nodes = (await client.list("nodes"))["items"]
    pods = (await client.list("pods"))["items"]
    node_ips = {n: lab.node_ip(n) for n in lab.nodes}
    targets: list[Destination] = []
    for text in services:
        name, _, spec = (text.split("/", 1)[1] if text.startswith(SERVICE_PREFIXES) else text).partition(":")
        svc = await client.get("services", name, namespace)
        port = service_port(svc, spec or None, "tcp")
        found = destinations(svc, port, node_ips)
        if not found:
            raise TraceError(f"service {name!r} has no address to reach (headless, with no external IP)")
        targets += found
    if not sources:
        running = sorted((p for p in pods if p.get("status", {}).get("phase") == "Running"
                          and p["metadata"].get("namespace", "default") == namespace
                          and not p.get("spec", {}).get("hostNetwork")), key=lambda p: p["metadata"]["name"])
        first = {p["spec"].get("nodeName"): p["metadata"]["name"] for p in reversed(running)}
        sources = [f"node/{n}" for n in lab.nodes] + ["underlay/client"] + [first[n] for n in lab.nodes if n in first]
    resolver = Resolver(client, lab)
    found_sources = []
    for text in sources:
        label, _, place = await resolver.source(text, namespace)
        found_sources.append(Source(label, place.netns))
    return Plan(found_sources, targets, address_names(pods, nodes, node_ips, lab.client_ip))


def short_name(name: str | None, address: str | None) -> str:
    """A cell's text for a seen address: the pod's name in its namespace, `node-1 cni0`, ..."""
    if name is None:
        return address or "?"
    return name.removeprefix("default/").removeprefix("node/")


def cell(outcome: Outcome, names_: dict[str, str]) -> str:
    if outcome.result != ANSWERED:
        return outcome.result
    if outcome.seen is None:
        return "answered"
    return short_name(names_.get(outcome.seen), outcome.seen)


def tables(plan: Plan, results: dict[tuple[Source, Destination], Outcome]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per Service port: (its name, the header, a row per destination with a cell per source)."""
    found = []
    for service in dict.fromkeys(d.service for d in plan.destinations):
        header = ["DESTINATION", "ADDRESS", *(short_name(s.label, None) for s in plan.sources)]
        rows = [[d.kind, f"{d.address}:{d.port}", *(cell(results[(s, d)], plan.names) for s in plan.sources)]
                for d in plan.destinations if d.service == service]
        found.append((service, header, rows))
    return found


def to_json(plan: Plan, results: dict[tuple[Source, Destination], Outcome]) -> list[dict]:
    return [{"service": d.service, "destination": d.kind, "address": d.address, "port": d.port,
             "source": s.label, "result": o.result, "seen": o.seen,
             "seen_as": plan.names.get(o.seen) if o.seen else None, "detail": o.detail}
            for (s, d), o in results.items()]
