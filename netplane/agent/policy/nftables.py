"""A node's NetworkPolicies as the `ip netplane-policy` table: what model.py means, judged in the
kernel, with no packet ever sent to user space.

Two base chains on the forward hook, after kube-proxy's DNAT (so addresses are the pods' own, in
both proxy modes; bridged traffic between a node's pods passes them through br_netfilter):
`egress` judges what this node's pods send, `ingress` what they receive. Each first accepts the
replies and later packets of connections conntrack knows; then one lookup in the verdict map
`egress-groups` / `ingress-groups` (this node's isolated pods: address -> the chain of its group)
sends a packet of an isolated pod to the chain of the policies that select it for that direction,
`group-<hash>-<direction>`, which jumps to each of them and drops what none accepted; a pod no
policy selects is in no map and passes. Pods selected by the same policies share a group chain, so
the first packet's cost is one lookup and the pod's own policies, however many policies there are.
A policy's chain has an accepting rule per peer and port of each of its rules; its pod peers are
sets of addresses (`peers-<hash>`, every matching pod of the cluster, one set for every policy with
the same selectors) and its named ports a set of address . protocol . port
(`<policy>-<in|out><rule>-ports`, the port each destination pod gives the name). So a pod coming, going or relabelled changes set and map elements
(and makes a group chain when it is the first of a new group); a policy changes its own chain (and
the group chains that name it). Traffic the node itself sends to its pods (kubelet probes) takes the
output hook and is never judged.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from netplane import names
from netplane.agent.policy.model import EGRESS, INGRESS, Peer, Pod, Policy, Port, Rule as PolicyRule, selected
from netplane.agent.ruleset import Fragment, NftTable, Rules
from netplane.kernel.nftobjects import (
    ACCEPT, CT_STATE, DROP, IP_DADDR, IP_SADDR, L4PROTO, TH_DPORT, Hook, Lookup, Map, Match, Set, Table, Term,
    VerdictMap, dport, jump)

TABLE = Table("ip", names.NFT_POLICY_TABLE, "NetworkPolicy rules for netplane's node agent")
ADDRESSES = "ipv4_addr"
NAMED_PORTS = "ipv4_addr . inet_proto . inet_service"
DIRECTIONS = {INGRESS: ("ingress", "in", IP_DADDR, IP_SADDR), EGRESS: ("egress", "out", IP_SADDR, IP_DADDR)}
GROUPS = {direction: f"{chain}-groups" for direction, (chain, _, _, _) in DIRECTIONS.items()}
SHARED = {name: Map(name, ADDRESSES) for name in GROUPS.values()}
HOOKS = {"egress": Hook("filter", "forward", "10"), "ingress": Hook("filter", "forward", "20")}
TABLE_OBJECTS = NftTable(TABLE, HOOKS, SHARED)
KNOWN = Match(CT_STATE, "established,related")  # a bit mask test, cheaper than an anonymous set
MAX_NAME = 200  # nft names may be 256 bytes long; the policy's key is kept whole where it fits


def prefix(policy: Policy) -> str:
    """The start of the names of a policy's chains and sets: a hash, then its namespace/name."""
    return f"pol-{names.short_hash(policy.key)}-{policy.key}"[:MAX_NAME]


def policy_chain(policy: Policy, direction: str) -> str:
    return f"{prefix(policy)}-{DIRECTIONS[direction][0]}"


PEERS = "peers-"  # the start of the name of every set of peer pods


def peer_set(policy: Policy, peer: Peer) -> str:
    """The set of the pods a peer selects, shared by every policy with the same peer (the same
    selectors, and the policy's namespace when the peer has no namespace selector)."""
    where = policy.namespace if peer.namespace_selector is None else ""
    return f"{PEERS}{names.short_hash(json.dumps([where, peer.pod_selector, peer.namespace_selector], sort_keys=True))}"


class SharedPeers:
    """The names of the sets several policies' fragments may hold elements of: the peer sets."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.startswith(PEERS)


def ports_set(policy: Policy, direction: str, rule: int) -> str:
    return f"{prefix(policy)}-{DIRECTIONS[direction][1]}{rule}-ports"


def group_chain(policies: tuple[Policy, ...], direction: str) -> str:
    """The chain of the pods these policies (and no other) select for the direction."""
    return f"group-{names.short_hash(','.join(p.key for p in policies))}-{DIRECTIONS[direction][0]}"


def direction_of(chain: str) -> str | None:
    """The direction a base or group chain judges (None for a policy's own chain)."""
    for direction, (name, _, _, _) in DIRECTIONS.items():
        if chain == name or (chain.startswith("group-") and chain.endswith(f"-{name}")):
            return direction
    return None


Groups = dict[str, dict[str, tuple[Policy, ...]]]  # a node's isolated pod's address -> direction -> its policies


def base(groups: Groups, peer_sets: Iterable[str] = ()) -> Fragment:
    """The base chains, a chain per group of policies, each isolated pod's group, and the peer sets
    the policies read (declared here, as several policies may hold their elements)."""
    chains: dict[str, Rules] = {}
    entries: dict[str, dict] = {name: {} for name in GROUPS.values()}
    for direction, (name, _, own, _) in DIRECTIONS.items():
        chains[name] = ((KNOWN, ACCEPT), (VerdictMap((own,), GROUPS[direction]),))
    for address, by_direction in sorted(groups.items()):
        for direction, policies in by_direction.items():
            chain = group_chain(policies, direction)
            chains.setdefault(chain, (*((jump(policy_chain(p, direction)),) for p in policies), (DROP,)))
            entries[GROUPS[direction]][(address,)] = jump(chain)
    return Fragment(chains, {n: e for n, e in entries.items() if e}, {n: Set(n, ADDRESSES) for n in sorted(peer_sets)})


Contribute = Callable[[Pod], Iterable[tuple[str, ...]]]  # a pod -> the elements it puts in one set


@dataclass(frozen=True)
class Contribution:
    """What a pod puts in one set, and the namespaces whose pods may put anything (None: every one)."""

    scope: frozenset[str] | None
    elements: Contribute

    def applies(self, pod: Pod) -> bool:
        return self.scope is None or pod.namespace in self.scope


@dataclass(frozen=True)
class Plan:
    """A policy's objects on one node: its chains and sets, which depend on the policy (and the
    namespaces' labels) alone, and per set what each pod contributes to it, so that a pod's change
    is applied by looking at that pod only."""

    chains: dict[str, Rules]
    sets: dict[str, Set]
    contributions: dict[str, Contribution]  # set name -> what a pod puts in it

    def render(self, pods: Mapping[str, list[Pod]]) -> Fragment:
        """The fragment for these pods (every pod of the cluster, by namespace)."""
        entries: dict[str, dict] = {}
        for name, contribution in self.contributions.items():
            found = entries[name] = {}
            for namespace in (pods if contribution.scope is None else contribution.scope):
                for pod in pods.get(namespace, ()):
                    for key in contribution.elements(pod):
                        found[key] = None
        return Fragment(self.chains, {n: e for n, e in entries.items() if e or n in self.sets}, self.sets)

    def changed(self, fragment: Fragment, gone: Iterable[Pod], come: Iterable[Pod]) -> Fragment:
        """The fragment after these pods went (their old selves) and came (their new ones); the same
        object when nothing of it changed."""
        edits: dict[str, dict] = {}
        for pods, adding in ((gone, False), (come, True)):
            for pod in pods:
                for name, contribution in self.contributions.items():
                    if not contribution.applies(pod):
                        continue
                    for key in contribution.elements(pod):
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

    chains: dict[str, Rules] = {}
    sets: dict[str, Set] = {}
    contributions: dict[str, Contribution] = {}
    for direction in DIRECTIONS:
        rules = policy.rules(direction)
        if rules is None:
            continue
        body: list[tuple[Term, ...]] = []
        for i, rule in enumerate(rules):
            body += _rule(policy, direction, i, rule, namespaces, mine, sets, contributions)
        chains[policy_chain(policy, direction)] = tuple(body)
    return Plan(chains, sets, contributions)


def by_namespace(pods: Iterable[Pod]) -> dict[str, list[Pod]]:
    found: dict[str, list[Pod]] = {}
    for pod in pods:
        found.setdefault(pod.namespace, []).append(pod)
    return found


def _rule(policy: Policy, direction: str, i: int, rule: PolicyRule, namespaces: dict[str, dict[str, str]],
          mine: Callable[[Pod], bool], sets: dict, contributions: dict) -> list[tuple[Term, ...]]:
    """The rule's peers times its ports, each an accepting nft rule; the sets they read are added."""
    _, _, _, other = DIRECTIONS[direction]
    peers: list[tuple[Term, ...]] = []
    for peer in rule.peers:
        if peer.cidr is not None:
            if ipaddress.ip_network(peer.cidr, strict=False).version != 4:
                continue  # an IPv6 block matches no packet of this IPv4 table (and nft would refuse it here)
            v4 = tuple(e for e in peer.excepts if ipaddress.ip_network(e, strict=False).version == 4)
            peers.append((Match(other, peer.cidr), *((Match(other, v4, "!="),) if v4 else ())))
            continue
        name = peer_set(policy, peer)
        scope = frozenset({policy.namespace}) if peer.namespace_selector is None else frozenset(
            n for n, labels in namespaces.items() if selected(peer.namespace_selector, labels))
        contributions[name] = Contribution(scope, lambda pod, peer=peer: ((pod.ip,),) if peer.pod_matches(
            pod, policy.namespace, namespaces) else ())
        peers.append((Lookup((other,), name),))
    ports = [_port(p) for p in rule.ports if not isinstance(p.port, str)]
    named = [p for p in rule.ports if isinstance(p.port, str)]
    if named:
        name = ports_set(policy, direction, i)
        sets[name] = Set(name, NAMED_PORTS)
        destination = mine if direction == INGRESS else (lambda pod: True)
        contributions[name] = Contribution(frozenset({policy.namespace}) if direction == INGRESS else None,
                                           lambda pod, named=named, destination=destination: (
            (pod.ip, p.protocol.lower(), str(number)) for p in named
            if (number := pod.named_port(p.port, p.protocol)) is not None and destination(pod)))
        ports.append((Lookup((IP_DADDR, L4PROTO, TH_DPORT), name),))
    if rule.peers and not peers:
        return []  # only IPv6 blocks: nothing this table sees is allowed by the rule
    return [(*peer, *port, ACCEPT) for peer in peers or [()] for port in ports or [()]]


def _port(port: Port) -> tuple[Term, ...]:
    protocol = port.protocol.lower()
    if port.port is None:
        return (Match(L4PROTO, protocol),)
    return (Match(dport(protocol), f"{port.port}-{port.end_port}" if port.end_port else port.port),)
