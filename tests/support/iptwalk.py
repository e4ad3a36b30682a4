"""A first packet walked through an iptables-restore input, as upstream's proxier tests trace packets
through the iptables rules they wrote: the rules are read, not loaded, so no root is needed.

The walk knows what kube-proxy's rules use: addresses (`-s`, `-d`, with `!`), `-p` and `--dport`,
addrtype LOCAL, marks, conntrack state (a first packet is NEW), `recent` (a first packet finds no
client remembered), `statistic` (both ways: the rule taken and not) and the targets ACCEPT, DROP,
REJECT, RETURN, DNAT, MARK, MASQUERADE and jumps. It follows the hooks as nftfake.Fake.walk does:
nat PREROUTING, then filter INPUT (to the node) or filter FORWARD and nat POSTROUTING; from the
node itself nat OUTPUT, filter OUTPUT, nat POSTROUTING (and filter INPUT when it is for the node).
"""
from __future__ import annotations

import copy
import ipaddress
import shlex

from netplane.kernel.nftfake import Flow, Outcome, Packet

Tables = dict[str, dict[str, list[list[str]]]]  # table -> chain -> rules, each its words after the chain
STOPS = ("drop", "reject")


def parse(text: str) -> Tables:
    """The chains of an iptables-restore input; `-I` puts a rule first, as restore does."""
    tables: Tables = {}
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            chains = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith(("-A ", "-I ")):
            verb, chain, *words = shlex.split(line)
            rules = chains.setdefault(chain, [])
            rules.insert(0, words) if verb == "-I" else rules.append(words)
    return tables


def _within(address: str, network: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)


class Walk:
    def __init__(self, text: str, local: frozenset[str]) -> None:
        self.tables, self.local = parse(text), local

    def run(self, packet: Packet) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if packet.local_origin:
            flows = self._hooks([("nat", "OUTPUT"), ("filter", "OUTPUT"), ("nat", "POSTROUTING")], [Flow(packet)],
                                outcomes)
            mine = [f for f in flows if f.daddr in self.local]
            flows = [f for f in flows if f.daddr not in self.local] + self._hooks([("filter", "INPUT")], mine, outcomes)
        else:
            flows = self._hooks([("nat", "PREROUTING")], [Flow(packet)], outcomes)
            mine = [f for f in flows if f.daddr in self.local]
            passing = [f for f in flows if f.daddr not in self.local]
            flows = self._hooks([("filter", "INPUT")], mine, outcomes) + \
                self._hooks([("filter", "FORWARD"), ("nat", "POSTROUTING")], passing, outcomes)
        return outcomes + [Outcome("accept", f.dnat, f.masquerade) for f in flows]

    def _hooks(self, hooks: list[tuple[str, str]], flows: list[Flow], outcomes: list[Outcome]) -> list[Flow]:
        """The flows every built-in chain lets on (policy ACCEPT); what one stops goes to outcomes."""
        for table, chain in hooks:
            going = []
            for flow in flows:
                for done, verdict in self._chain(table, chain, flow):
                    if verdict in STOPS:
                        outcomes.append(Outcome(verdict, done.dnat, done.masquerade))
                    else:
                        going.append(done)
            flows = going
        return flows

    def _chain(self, table: str, chain: str, flow: Flow, start: int = 0) -> list[tuple[Flow, str]]:
        """Per path the flow and how the chain ended: "" (its end or RETURN) or a verdict."""
        rules = self.tables.get(table, {}).get(chain, [])
        for i in range(start, len(rules)):
            paths = self._rule(table, rules[i], flow)
            if paths is None:
                continue
            out = []
            for f, verdict in paths:
                out += self._chain(table, chain, f, i + 1) if verdict == "continue" else [(f, verdict)]
            return out
        return [(flow, "")]

    def _rule(self, table: str, words: list[str], flow: Flow) -> list[tuple[Flow, str]] | None:
        """None when the rule does not match; else per path the flow and "continue" or a verdict."""
        flow, i, negate, random = copy.copy(flow), 0, False, False
        packet = flow.packet
        while i < len(words):
            word = words[i]
            if word == "!":
                negate, i = True, i + 1
                continue
            if word == "-j":  # a random rule both jumps (with a copy) and lets the packet on
                paths = self._target(table, words[i + 1], words[i + 2:], copy.copy(flow))
                return paths + [(flow, "continue")] if random else paths
            value = words[i + 1] if i + 1 < len(words) else ""
            i += 2
            if word in ("-m", "--comment", "--name", "--seconds", "--mode"):
                continue
            if word in ("--reap", "--set"):
                i -= 1  # options without a value
                continue
            if word == "--rcheck":
                return None  # a first packet: no client remembered yet
            if word == "--probability":
                random = True
                continue
            found = {
                "-s": lambda: _within(packet.saddr, value),
                "-d": lambda: _within(flow.daddr, value),
                "-p": lambda: packet.protocol == value,
                "--dport": lambda: flow.dport == int(value),
                "--dst-type": lambda: value == "LOCAL" and flow.daddr in self.local,
                "--src-type": lambda: value == "LOCAL" and (packet.saddr in self.local or packet.local_origin),
                "--mark": lambda: flow.mark & int(value.split("/")[1], 0) == int(value.split("/")[0], 0),
                "--ctstate": lambda: "NEW" in value.split(","),
            }.get(word)
            if found is None:
                raise ValueError(f"the walk cannot read {word} in {' '.join(words)}")
            if found() == negate:
                return None
            negate = False
        return [(flow, "continue")]

    def _target(self, table: str, target: str, options: list[str], flow: Flow) -> list[tuple[Flow, str]]:
        option = dict(zip(options[::2], options[1::2]))
        if target in ("ACCEPT", "DROP", "REJECT"):
            return [(flow, target.lower())]
        if target == "RETURN":
            return [(flow, "")]
        if target == "DNAT":
            flow.dnat = option["--to-destination"]
            return [(flow, "accept")]
        if target == "MASQUERADE":
            flow.masquerade = True
            return [(flow, "accept")]
        if target == "MARK":
            flow.mark = flow.mark | int(option["--or-mark"], 0) if "--or-mark" in option \
                else flow.mark ^ int(option["--xor-mark"], 0)
            return [(flow, "continue")]
        return [(f, "continue" if verdict == "" else verdict) for f, verdict in self._chain(table, target, flow)]
