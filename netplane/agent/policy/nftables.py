"""A node's NetworkPolicies as the `ip netplane-policy` table: what model.py means, judged in the
kernel, with no packet ever sent to user space.

Two base chains on the forward hook, after kube-proxy's DNAT (so addresses are the pods' own, in
both proxy modes; bridged traffic between a node's pods passes them through br_netfilter):
`egress` judges what this node's pods send, `ingress` what they receive. Each first accepts the
replies and later packets of connections conntrack knows, then sends a packet of an isolated pod
(`egress-isolated`, `ingress-isolated`: this node's pods a policy selects for that direction) to
`egress-policies` / `ingress-policies`, which jump to the chain of each policy selecting the pod
(its pods in `<policy>-pods`) and drop what none of them accepted. A policy's chain has a rule per
peer and port of each of its rules, accepting; its pod peers are sets of addresses
(`<policy>-<in|out><rule>-peer<n>`, every matching pod of the cluster) and its named ports a set
of address . protocol . port (`<policy>-<in|out><rule>-ports`, the port each destination pod gives
the name). So a pod coming, going or relabelled changes set elements only; a policy changes its own
chains (and the dispatch chain when it comes or goes). Traffic the node itself sends to its pods
(kubelet probes) takes the output hook and is never judged.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netplane import names
from netplane.agent.policy.model import EGRESS, INGRESS, Peer, Pod, Policy, Port, Rule as PolicyRule
from netplane.agent.ruleset import Fragment, NftTable, Rules
from netplane.kernel.nftobjects import (
    ACCEPT, CT_STATE, DROP, IP_DADDR, IP_SADDR, L4PROTO, TH_DPORT, Hook, Lookup, Match, Set, Table, Term, dport, jump)

TABLE = Table("ip", names.NFT_POLICY_TABLE, "NetworkPolicy rules for netplane's node agent")
ADDRESSES = "ipv4_addr"
NAMED_PORTS = "ipv4_addr . inet_proto . inet_service"
DIRECTIONS = {INGRESS: ("ingress", "in", IP_DADDR, IP_SADDR), EGRESS: ("egress", "out", IP_SADDR, IP_DADDR)}
ISOLATED = {direction: f"{chain}-isolated" for direction, (chain, _, _, _) in DIRECTIONS.items()}
SHARED = {name: Set(name, ADDRESSES) for name in ISOLATED.values()}
HOOKS = {"egress": Hook("filter", "forward", "10"), "ingress": Hook("filter", "forward", "20")}
HELD_BY_SEVERAL = set(ISOLATED.values())  # a pod is isolated by every policy that selects it
TABLE_OBJECTS = NftTable(TABLE, HOOKS, SHARED)
KNOWN = Match(CT_STATE, ("established", "related"))
MAX_NAME = 200  # nft names may be 256 bytes long; the policy's key is kept whole where it fits


def prefix(policy: Policy) -> str:
    """The start of the names of a policy's chains and sets: a hash, then its namespace/name."""
    return f"pol-{names.short_hash(policy.key)}-{policy.key}"[:MAX_NAME]


def policy_chain(policy: Policy, direction: str) -> str:
    return f"{prefix(policy)}-{DIRECTIONS[direction][0]}"


def pods_set(policy: Policy) -> str:
    return f"{prefix(policy)}-pods"


def peer_set(policy: Policy, direction: str, rule: int, peer: int) -> str:
    return f"{prefix(policy)}-{DIRECTIONS[direction][1]}{rule}-peer{peer}"


def ports_set(policy: Policy, direction: str, rule: int) -> str:
    return f"{prefix(policy)}-{DIRECTIONS[direction][1]}{rule}-ports"


def base(policies: list[Policy]) -> Fragment:
    """The base chains and the dispatch to each policy's chains."""
    chains = {}
    for direction, (name, _, own, _) in DIRECTIONS.items():
        chains[name] = ((KNOWN, ACCEPT), (Lookup((own,), ISOLATED[direction]), jump(f"{name}-policies")))
        chains[f"{name}-policies"] = (
            *((Lookup((own,), pods_set(p)), jump(policy_chain(p, direction)))
              for p in policies if p.rules(direction) is not None), (DROP,))
    return Fragment(chains=chains)


Contribution = Callable[[Pod], Iterable[tuple[str, ...]]]  # a pod -> the elements it puts in one set


@dataclass(frozen=True)
class Plan:
    """A policy's objects on one node: its chains and sets, which depend on the policy (and the
    namespaces' labels) alone, and per set what each pod contributes to it, so that a pod's change
    is applied by looking at that pod only."""

    chains: dict[str, Rules]
    sets: dict[str, Set]
    contributions: dict[str, Contribution]  # set name -> what a pod puts in it

    def render(self, pods: Iterable[Pod]) -> Fragment:
        """The fragment for these pods (every pod of the cluster)."""
        entries: dict[str, dict] = {name: {} for name in self.contributions}
        for pod in pods:
            for name, contribute in self.contributions.items():
                for key in contribute(pod):
                    entries[name][key] = None
        return Fragment(self.chains, {n: e for n, e in entries.items() if e or n in self.sets}, self.sets)

    def changed(self, fragment: Fragment, gone: Iterable[Pod], come: Iterable[Pod]) -> Fragment:
        """The fragment after these pods went (their old selves) and came (their new ones); the same
        object when nothing of it changed."""
        edits: dict[str, dict] = {}
        for pods, adding in ((gone, False), (come, True)):
            for pod in pods:
                for name, contribute in self.contributions.items():
                    for key in contribute(pod):
                        current = edits.get(name)
                        if current is None:
                            current = edits[name] = dict(fragment.entries.get(name, {}))
                        if adding:
                            current[key] = None
                        else:
                            current.pop(key, None)
        edits = {n: e for n, e in edits.items() if e != fragment.entries.get(n, {})}
        if not edits:
            return fragment
        entries = {**fragment.entries, **edits}
        return Fragment(self.chains, {n: e for n, e in entries.items() if e or n in self.sets}, self.sets)


def plan(policy: Policy, namespaces: dict[str, dict[str, str]], node: str) -> Plan:
    """What a policy holds on one node."""
    def mine(pod: Pod) -> bool:
        return pod.node == node and policy.selects(pod)

    def address_if(test: Callable[[Pod], bool]) -> Contribution:
        return lambda pod: ((pod.ip,),) if test(pod) else ()

    chains: dict[str, Rules] = {}
    sets = {pods_set(policy): Set(pods_set(policy), ADDRESSES)}
    contributions: dict[str, Contribution] = {pods_set(policy): address_if(mine)}
    for direction in DIRECTIONS:
        rules = policy.rules(direction)
        if rules is None:
            continue
        contributions[ISOLATED[direction]] = address_if(mine)
        body: list[tuple[Term, ...]] = []
        for i, rule in enumerate(rules):
            body += _rule(policy, direction, i, rule, namespaces, mine, sets, contributions)
        chains[policy_chain(policy, direction)] = tuple(body)
    return Plan(chains, sets, contributions)


def fragment(policy: Policy, pods: list[Pod], namespaces: dict[str, dict[str, str]], node: str) -> Fragment:
    """A policy's chains, its sets and their elements on one node."""
    return plan(policy, namespaces, node).render(pods)


def _rule(policy: Policy, direction: str, i: int, rule: PolicyRule, namespaces: dict[str, dict[str, str]],
          mine: Callable[[Pod], bool], sets: dict, contributions: dict) -> list[tuple[Term, ...]]:
    """The rule's peers times its ports, each an accepting nft rule; the sets they read are added."""
    _, _, _, other = DIRECTIONS[direction]
    peers: list[tuple[Term, ...]] = []
    for j, peer in enumerate(rule.peers):
        if peer.cidr is not None:
            peers.append((Match(other, peer.cidr), *((Match(other, peer.excepts, "!="),) if peer.excepts else ())))
            continue
        name = peer_set(policy, direction, i, j)
        sets[name] = Set(name, ADDRESSES)
        contributions[name] = lambda pod, peer=peer: ((pod.ip,),) if peer.pod_matches(pod, policy.namespace,
                                                                                       namespaces) else ()
        peers.append((Lookup((other,), name),))
    ports = [_port(p) for p in rule.ports if not isinstance(p.port, str)]
    named = [p for p in rule.ports if isinstance(p.port, str)]
    if named:
        name = ports_set(policy, direction, i)
        sets[name] = Set(name, NAMED_PORTS)
        destination = mine if direction == INGRESS else (lambda pod: True)
        contributions[name] = lambda pod, named=named, destination=destination: (
            (pod.ip, p.protocol.lower(), str(number)) for p in named
            if (number := pod.named_port(p.port, p.protocol)) is not None and destination(pod))
        ports.append((Lookup((IP_DADDR, L4PROTO, TH_DPORT), name),))
    return [(*peer, *port, ACCEPT) for peer in peers or [()] for port in ports or [()]]


def _port(port: Port) -> tuple[Term, ...]:
    protocol = port.protocol.lower()
    if port.port is None:
        return (Match(L4PROTO, protocol),)
    return (Match(dport(protocol), f"{port.port}-{port.end_port}" if port.end_port else port.port),)


def peers_text(peers: tuple[Peer, ...]) -> str:
    return " or ".join(p.text() for p in peers) or "anyone"
