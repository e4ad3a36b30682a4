"""`netplane bench policy`: what NetworkPolicy enforcement costs, driven through the node agent's
own code (agent/policy: NodePolicies and the policy table, libnftables in process), no lab, no API
server, with its peer in the same run: the same node and traffic without any policy.

The cluster is made up: PODS pods (10 namespaces; labels app=a<i mod 50>, tier=t<i mod 3>; half of
them on the node, every one with a named port http 8080) and POLICIES policies (each in one of the
namespaces, selecting app=a<k>, allowing TCP http from tier=t<k mod 3> in its namespace and from
every pod of the next namespace). Two of the pods are real: a client and a server, both on the node,
in the proxy benchmark's namespaces (client, node, backend; nothing leaves them, all removed at the
end); the server is selected by POLICIES / 50 of the policies, the last ones of the dispatch chain,
which allow the client's namespace. Measured:

- full sync: the node agent's first write of every policy over every pod;
- one changed policy: a policy's allowed tier changed, then a sync; the median of CHANGES;
- one new pod: a pod added (matching many policies' peers), then a sync; the median of CHANGES;
- first packet: CONNECTS sequential TCP connects from the client to the server's port, each from
  its own source port (a new flow judged by the egress and ingress chains), timed as the proxy
  benchmark times them; with the policies, in a second topology whose node agent has no policy
  (its table holds only the base chains and empty maps), and in a third without any policy table
  (what the base chains cost every forwarded packet), interleaved in chunks.

Targets (issue 23's): one change under 20 ms, first-packet p50 with 1,000 policies within 1.2x of none.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field

from netplane.agent.policy.enforcer import PolicyTable
from netplane.agent.policy.state import NodePolicies
from netplane.bench import percentile
from netplane.bench.proxy import (BACKENDS, CLIENT_IP, FIRST_SOURCE_PORT, NODE, TARGET_PORT, Listeners, connect_times,
                                  timed, topology)

NAMESPACES = 10
LABELS = 50
SERVER_LABEL = f"a{NAMESPACES - 1}"  # selected by the policies k with k = 9 (mod 10) and (mod 50)


@dataclass(frozen=True)
class Options:
    pods: int = 1000
    policies: int = 1000
    connects: int = 300
    changes: int = 10
    warmup: int = 20
    tag: str = "policy"


@dataclass
class Result:
    options: Options
    full_sync_s: float = 0.0
    policy_change_s: list[float] = field(default_factory=list)
    pod_change_s: list[float] = field(default_factory=list)
    connect_s: dict[str, list[float]] = field(default_factory=lambda: {"bare": [], "none": [], "policies": []})
    elements: int = 0

    def to_json(self) -> dict:
        o = self.options
        return {"pods": o.pods, "policies": o.policies, "elements": self.elements, "full_sync_s": self.full_sync_s,
                "policy_change_median_s": statistics.median(self.policy_change_s),
                "pod_change_median_s": statistics.median(self.pod_change_s),
                "first_packet_p50_s": {k: percentile(v, 50) for k, v in self.connect_s.items()},
                "first_packet_p99_s": {k: percentile(v, 99) for k, v in self.connect_s.items()}}


def pod(i: int, name: str = "", ip: str = "", labels: dict[str, str] | None = None, node: str = "") -> dict:
    return {"metadata": {"name": name or f"p{i}", "namespace": f"ns{i % NAMESPACES}",
                         "labels": labels or {"app": f"a{i % LABELS}", "tier": f"t{i % 3}"}},
            "spec": {"nodeName": node or (NODE if i % 2 else "node-2"),
                     "containers": [{"name": "c", "image": "netplane/echo", "ports": [{"name": "http",
                                                                                      "containerPort": TARGET_PORT}]}]},
            "status": {"phase": "Running", "podIP": ip or f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 2}"}}


def policy(k: int, tier: int | None = None) -> dict:
    namespace = f"ns{k % NAMESPACES}"
    peers = [{"podSelector": {"matchLabels": {"tier": f"t{k % 3 if tier is None else tier}"}}},
             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"ns{(k + 1) % NAMESPACES}"}}}]
    return {"metadata": {"name": f"pol{k}", "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": {"app": f"a{k % LABELS}"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": "http"}]}]}}


def cluster(opts: Options) -> tuple[list[dict], list[dict], list[dict]]:
    """The made-up pods (the real client and server first), namespaces and policies. The server is
    in the last namespace, whose policies come last in the dispatch chain; the client in the first,
    which they allow."""
    client = pod(0, "client", CLIENT_IP, {"app": "client", "tier": "t9"}, NODE)
    server = pod(NAMESPACES - 1, "server", BACKENDS[0], {"app": SERVER_LABEL, "tier": "t0"}, NODE)
    pods = [client, server, *(pod(i) for i in range(2, opts.pods))]
    spaces = [{"metadata": {"name": f"ns{n}", "labels": {"kubernetes.io/metadata.name": f"ns{n}"}}}
              for n in range(NAMESPACES)]
    policies = [policy(k) for k in range(opts.policies)]
    return pods, spaces, policies


def _sync(runner: asyncio.Runner, table: PolicyTable, state: NodePolicies, pods: list[dict], spaces: list[dict],
          policies: list[dict]) -> float:
    return timed(runner, table.write(state.update(pods, spaces, policies), state))


def run(opts: Options, progress=lambda line: None) -> Result:
    result = Result(opts)
    with ExitStack() as stack, asyncio.Runner() as runner:
        guarded = stack.enter_context(topology(f"{opts.tag}.policies"))
        open_ = stack.enter_context(topology(f"{opts.tag}.none"))
        bare = stack.enter_context(topology(f"{opts.tag}.bare"))
        pods, spaces, policies = cluster(opts)
        table, state = PolicyTable(guarded.node), NodePolicies(NODE)
        _sync(runner, PolicyTable(open_.node), NodePolicies(NODE), pods, spaces, [])  # the same agent, no policy
        result.full_sync_s = _sync(runner, table, state, pods, spaces, policies)
        held: dict[str, set] = {}
        for fragment in state.fragments.values():
            for name, items in fragment.entries.items():
                held.setdefault(name, set()).update(items)
        result.elements = sum(len(items) for items in held.values())
        progress(f"full sync of {opts.policies:,} policies over {opts.pods:,} pods ({result.elements:,} elements): "
                 f"{result.full_sync_s * 1000:.0f} ms")
        for c in range(opts.changes):
            k = 1 + (c * 97) % (opts.policies - 1)
            policies = [*policies[:k], policy(k, tier=(k + c + 1) % 3), *policies[k + 1:]]
            result.policy_change_s.append(_sync(runner, table, state, pods, spaces, policies))
            pods = [*pods, pod(opts.pods + c)]
            result.pod_change_s.append(_sync(runner, table, state, pods, spaces, policies))
        progress(f"one changed policy {statistics.median(result.policy_change_s) * 1000:.1f} ms, one new pod "
                 f"{statistics.median(result.pod_change_s) * 1000:.1f} ms (medians of {opts.changes})")
        topologies = {"policies": guarded, "none": open_, "bare": bare}
        listeners = {name: stack.enter_context(closing(Listeners(topo.backend))) for name, topo in topologies.items()}
        for name, topo in topologies.items():
            connect_times(topo.client, BACKENDS[0], TARGET_PORT, opts.warmup, FIRST_SOURCE_PORT, listeners[name])
        done, chunk = 0, max(1, opts.connects // 10)
        while done < opts.connects:
            count = min(chunk, opts.connects - done)
            for name, topo in topologies.items():
                result.connect_s[name] += connect_times(topo.client, BACKENDS[0], TARGET_PORT, count,
                                                        FIRST_SOURCE_PORT + opts.warmup + done, listeners[name])
            done += count
        time.sleep(0.05)
    return result


def table(result: Result) -> list[str]:
    data = result.to_json()
    p50, p99 = data["first_packet_p50_s"], data["first_packet_p99_s"]
    ratio = p50["policies"] / p50["none"] if p50["none"] else float("nan")
    change = max(data["policy_change_median_s"], data["pod_change_median_s"])
    sized = f"{data['policies']:,} policies over {data['pods']:,} pods"
    rows = [
        ("measure", "value", "target"),
        (f"full sync, {sized}", f"{data['full_sync_s'] * 1000:.0f} ms", ""),
        ("one changed policy (median)", f"{data['policy_change_median_s'] * 1000:.1f} ms", "< 20 ms"),
        ("one new pod (median)", f"{data['pod_change_median_s'] * 1000:.1f} ms", "< 20 ms"),
        ("first packet p50 / p99, no policy table at all", f"{p50['bare'] * 1e6:.0f} / {p99['bare'] * 1e6:.0f} us", ""),
        ("first packet p50 / p99, no policy", f"{p50['none'] * 1e6:.0f} / {p99['none'] * 1e6:.0f} us", ""),
        (f"first packet p50 / p99, {data['policies']:,} policies",
         f"{p50['policies'] * 1e6:.0f} / {p99['policies'] * 1e6:.0f} us", ""),
        ("first packet p50, policies over none", f"{ratio:.2f}x", "<= 1.2x"),
    ]
    lines = [f"{a:<48}{b:>16}  {c}".rstrip() for a, b, c in rows]
    return lines + [f"target one change < 20 ms: {change * 1000:.1f} ms, {'met' if change < 0.020 else 'MISSED'}",
                    f"target first packet within 1.2x: {ratio:.2f}x, {'met' if ratio <= 1.2 else 'MISSED'}"]
