"""NetworkPolicy: what the policies mean (model.py), the nftables table a node writes for them, walked
on the strict fake without root for upstream's netpol cases (tests/support/netpol.py), and the API's
validation and defaulting of the objects."""
from __future__ import annotations

import asyncio
import itertools
import json

import pytest
import yaml

from support.api import Cluster
from support.netpol import CASES, EVERY, PORTS, Case, namespace, policy, port_name
from netplane.agent.policy import enforcer, model, nftables
from netplane.agent.policy.state import NodePolicies
from netplane.kernel.nftfake import Fake, Packet

NODES = ("node-1", "node-2")


def pod_object(key: str, i: int, extra: dict[str, str] | None = None) -> dict:
    """The model's pod `ns/name`, on node-1 or node-2 in turn, every port of the model named."""
    ns, name = key.split("/")
    node = NODES[i % 2]
    ports = [{"name": port_name(p, proto), "containerPort": p, "protocol": proto} for p, proto in PORTS]
    return {"metadata": {"name": name, "namespace": ns, "labels": {"pod": name, **(extra or {})}},
            "spec": {"nodeName": node, "containers": [{"name": f"cont-{name}", "image": "netplane/echo",
                                                      "ports": ports}]},
            "status": {"phase": "Running", "podIP": f"10.244.{i % 2 + 1}.{10 + i}"}}


def objects(case: Case) -> tuple[list[dict], list[dict], list[dict]]:
    pods = [pod_object(key, i, case.pod_labels.get(key)) for i, key in enumerate(EVERY)]
    spaces = [namespace(ns) for ns in ("x", "y", "z")]
    for space in spaces:
        space["metadata"]["labels"].update(case.namespace_labels.get(space["metadata"]["name"], {}))
    return pods, spaces, case.objects({f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"]
                                       for p in pods})



def tables(pods: list[dict], spaces: list[dict], policies: list[dict]) -> dict[str, Fake]:
    """Each node's policy table as its agent writes it, on a fake."""
    out = {}
    for node in NODES:
        out[node] = Fake()
        asyncio.run(enforcer.PolicyTable(None, out[node]).write(NodePolicies(node).update(pods, spaces, policies)))
    return out


def walked(tables_of: dict[str, Fake], pods: list[dict], protocol: str, port: int) -> dict[tuple[str, str], bool]:
    """Whether each pod's new connection to each other pod passes the source node's table (egress)
    and the destination node's (ingress); on one node, one walk passes both."""
    where = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": (p["spec"]["nodeName"], p["status"]["podIP"])
             for p in pods}
    out = {}
    for source, destination in itertools.permutations(EVERY, 2):
        (src_node, src_ip), (dst_node, dst_ip) = where[source], where[destination]
        packet = Packet(src_ip, dst_ip, protocol.lower(), port)
        out[(source, destination)] = all(o.verdict == "accept" for node in {src_node, dst_node}
                                         for o in tables_of[node].walk(packet))
    return out


def judged(pods: list[dict], spaces: list[dict], policies: list[dict], protocol: str, port: int
           ) -> dict[tuple[str, str], bool]:
    """The same by model.connection, from the objects alone (what `netplane policy explain` answers)."""
    found = enforcer.cluster(pods, spaces, policies)
    ips = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"] for p in pods}
    return {(s, d): model.connection(found, ips[s], ips[d], protocol, port).allowed
            for s, d in itertools.permutations(EVERY, 2)}


def differences(found: dict, expected: dict) -> list[str]:
    return [f"{s} -> {d}: {'allowed' if v else 'blocked'}, expected {'allowed' if expected[(s, d)] else 'blocked'}"
            for (s, d), v in sorted(found.items()) if v != expected[(s, d)]]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_node_table_gives_upstreams_truth_table(case):
    pods, spaces, policies = objects(case)
    written = tables(pods, spaces, policies)
    for protocol, port, expected in case.probes:
        assert differences(walked(written, pods, protocol, port), expected.allowed) == [], f"{protocol} {port}"
        assert differences(judged(pods, spaces, policies, protocol, port), expected.allowed) == [], f"{protocol} {port}"


class Node:
    """node-1's agent: its policy state and its table on a fake."""

    def __init__(self) -> None:
        self.state, self.fake = NodePolicies("node-1"), Fake()
        self.table = enforcer.PolicyTable(None, self.fake)

    def write(self, pods: list[dict], spaces: list[dict], *policies: dict) -> bool:
        return asyncio.run(self.table.write(self.state.update(pods, spaces, list(policies)), self.state))


def write(node: Node, pods: list[dict], spaces: list[dict], *policies: dict) -> bool:
    return node.write(pods, spaces, *policies)


def test_a_pod_coming_or_relabelled_changes_set_elements_not_rules():
    case = next(c for c in CASES if c.name == "a pod of another namespace by podSelector and namespaceSelector")
    pods, spaces, policies = objects(case)
    table = Node()
    fake = table.fake
    write(table, pods, spaces, *policies)
    y_b = pods[4]
    relabelled = [*pods[:4], {**y_b, "metadata": {**y_b["metadata"], "labels": {"pod": "a"}}}, *pods[5:]]
    assert write(table, relabelled, spaces, *policies)
    assert fake.last.counts() == {"add element": 1}  # y/b joins the peers
    newcomer = pod_object("y/d", 20, {"pod": "a"})
    assert write(table, [*relabelled, newcomer], spaces, *policies)
    assert fake.last.counts() == {"add element": 1}
    assert write(table, pods, spaces, *policies)
    assert fake.last.counts() == {"delete element": 2}


def test_a_changed_policy_rewrites_its_own_chain_and_a_new_one_the_groups():
    pods, spaces, _ = objects(CASES[0])
    table = Node()
    fake = table.fake
    write(table, pods, spaces, policy("x", "allow", types=["Ingress"], ingress=[{"ports": [{"port": 80}]}]))
    changed = policy("x", "allow", types=["Ingress"], ingress=[{"ports": [{"port": 81}]}])
    write(table, pods, spaces, changed)
    rules = {obj.chain for verb, obj in fake.last.ops if type(obj).__name__ == "Rule"}
    assert rules == {nftables.policy_chain(model.policy_of(changed), model.INGRESS)}
    deny = policy("x", "deny-egress", types=["Egress"], egress=[])
    write(table, pods, spaces, changed, deny)
    groups = {obj.chain for verb, obj in fake.last.ops if type(obj).__name__ == "Rule" and obj.chain.startswith("group-")}
    assert groups and all(g.endswith("-egress") for g in groups)  # x's pods now isolated for egress too
    assert not write(table, pods, spaces, changed, deny)  # nothing changed: nothing sent


def test_kubectl_applies_a_policy_the_server_defaults_and_lists_with_its_pod_selector(tmp_path):
    egress = policy("default", "web-out", {"matchLabels": {"app": "web"}},
                    egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 53}]}])
    with Cluster(tmp_path) as cluster:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([egress, policy("default", "deny-all")]))
        stored = json.loads(cluster.kubectl("get", "networkpolicy", "web-out", "-o", "json").stdout)
        assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]  # egress rules: Egress as well
        assert stored["spec"]["egress"][0]["ports"] == [{"port": 53, "protocol": "TCP"}]
        listed = cluster.kubectl("get", "netpol").stdout.splitlines()
        assert listed[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
        assert [line.split()[:2] for line in listed[1:]] == [["deny-all", "<none>"], ["web-out", "app=web"]]
        done = cluster.kubectl("apply", "-f", "-", ok=False, stdin=yaml.safe_dump(
            policy("default", "bad", ingress=[{"from": [{}]}])))
        assert 'The NetworkPolicy "bad" is invalid: spec.ingress[0].from[0]: Required value: must specify a peer' \
            in done.stderr


def test_changes_applied_one_by_one_leave_the_table_a_fresh_agent_writes():
    """Pods relabelled, readdressed, gone and new, namespace labels and policies changed, one sync
    after another: each time the table equals what an agent starting on those objects writes."""
    case = next(c for c in CASES if c.name == "egress denied on the client although the server allows")
    pods, spaces, policies = objects(case)
    relabel = lambda obj, **labels: {**obj, "metadata": {**obj["metadata"], "labels": labels}}  # noqa: E731
    moved = lambda obj, ip: {**obj, "status": {**obj["status"], "podIP": ip}}  # noqa: E731
    steps = [
        (pods, spaces, policies),
        ([relabel(pods[0], pod="b"), *pods[1:]], spaces, policies),
        ([relabel(pods[0], pod="b"), moved(pods[1], "10.244.2.99"), *pods[2:4], *pods[5:]], spaces, policies),
        ([*pods, pod_object("y/d", 30, {"pod": "a"})], spaces, policies),
        ([*pods, pod_object("y/d", 30, {"pod": "a"})], [*spaces[:2], {**spaces[2], "metadata": {
            **spaces[2]["metadata"], "labels": {"kubernetes.io/metadata.name": "x"}}}], policies),
        (pods, spaces, [policies[0], {**policies[1], "spec": {**policies[1]["spec"], "ingress": [{}]}}]),
        (pods, spaces, []),
        (pods, spaces, policies),
    ]
    node = Node()
    for i, (p, n, pol) in enumerate(steps):
        node.write(p, n, *pol)
        fresh = Node()
        fresh.write(p, n, *pol)
        assert node.fake.dump() == fresh.fake.dump(), f"step {i}"


def test_an_ipv6_block_allows_nothing_in_the_ipv4_table_and_breaks_nothing_else():
    """The lab is IPv4: a rule whose only peer is an IPv6 block admits no packet (it does not become
    a rule without peers, which would admit every one), and the table still loads with it."""
    case = CASES[0]
    pods, spaces, _ = objects(case)
    v6_only = policy("x", "v6-only", {"matchLabels": {"pod": "a"}}, ["Ingress"],
                     [{"from": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::1/128"]}}]}])
    mixed = policy("x", "mixed", {"matchLabels": {"pod": "b"}}, ["Ingress"],
                   [{"from": [{"ipBlock": {"cidr": "fd00::/64"}}, {"ipBlock": {"cidr": "10.244.0.0/16",
                                                                               "except": ["fd00::1/128"]}}]}])
    written = tables(pods, spaces, [v6_only, mixed])
    found = walked(written, pods, "TCP", 80)
    assert not any(ok for (s, d), ok in found.items() if d == "x/a")
    assert all(ok for (s, d), ok in found.items() if d == "x/b")
