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

from netplane import names
from netplane.agent.policy.model import EGRESS, INGRESS, Peer, Pod, Policy, Port, Rule as PolicyRule
from netplane.agent.ruleset import Fragment, NftTable
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


def fragment(policy: Policy, pods: list[Pod], namespaces: dict[str, dict[str, str]], node: str) -> Fragment:
    """A policy's chains, its sets and their elements on one node."""
    mine = [p for p in pods if p.node == node and policy.selects(p)]
    chains: dict = {}
    entries: dict[str, dict] = {pods_set(policy): {(p.ip,): None for p in mine}}
    sets = {pods_set(policy): Set(pods_set(policy), ADDRESSES)}
    for direction in DIRECTIONS:
        rules = policy.rules(direction)
        if rules is None:
            continue
        if mine:
            entries[ISOLATED[direction]] = {(p.ip,): None for p in mine}
        body: list[tuple[Term, ...]] = []
        for i, rule in enumerate(rules):
            body += _rule(policy, direction, i, rule, pods, namespaces, mine, sets, entries)
        chains[policy_chain(policy, direction)] = tuple(body)
    return Fragment(chains, entries, sets)


def _rule(policy: Policy, direction: str, i: int, rule: PolicyRule, pods: list[Pod],
          namespaces: dict[str, dict[str, str]], mine: list[Pod], sets: dict, entries: dict) -> list[tuple[Term, ...]]:
    """The rule's peers times its ports, each an accepting nft rule; the sets they read are added."""
    _, _, _, other = DIRECTIONS[direction]
    peers: list[tuple[Term, ...]] = []
    for j, peer in enumerate(rule.peers):
        if peer.cidr is not None:
            peers.append((Match(other, peer.cidr), *((Match(other, peer.excepts, "!="),) if peer.excepts else ())))
            continue
        name = peer_set(policy, direction, i, j)
        sets[name] = Set(name, ADDRESSES)
        entries[name] = {(p.ip,): None for p in pods if peer.pod_matches(p, policy.namespace, namespaces)}
        peers.append((Lookup((other,), name),))
    ports = [_port(p) for p in rule.ports if not isinstance(p.port, str)]
    named = [p for p in rule.ports if isinstance(p.port, str)]
    if named:
        name = ports_set(policy, direction, i)
        sets[name] = Set(name, NAMED_PORTS)
        destinations = mine if direction == INGRESS else pods
        entries[name] = {(d.ip, p.protocol.lower(), str(number)): None for p in named for d in destinations
                         if (number := d.named_port(p.port, p.protocol)) is not None}
        ports.append((Lookup((IP_DADDR, L4PROTO, TH_DPORT), name),))
    return [(*peer, *port, ACCEPT) for peer in peers or [()] for port in ports or [()]]


def _port(port: Port) -> tuple[Term, ...]:
    protocol = port.protocol.lower()
    if port.port is None:
        return (Match(L4PROTO, protocol),)
    return (Match(dport(protocol), f"{port.port}-{port.end_port}" if port.end_port else port.port),)


def peers_text(peers: tuple[Peer, ...]) -> str:
    return " or ".join(p.text() for p in peers) or "anyone"
