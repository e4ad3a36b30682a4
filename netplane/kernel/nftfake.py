"""A strict fake of nf_tables for one table (after knftables' fake): it applies a Transaction as the
kernel would, all or nothing, refusing what the kernel refuses (a rule or element that points at a
missing chain or set, a chain or set deleted while something uses it, a delete or flush of what is
not there, a map key added again with another verdict, a base chain's hook changed), and it counts
the operations it was sent. `dump()` writes the table as sorted `add` commands (a golden file, and
a script the real kernel loads); `walk()` runs a packet through the hooks statically, following
every branch of a random draw, as upstream's proxier tests trace packets.
"""
from __future__ import annotations

import copy
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from netplane.kernel.nftobjects import (
    CT_STATE, CT_STATUS, FIB_DADDR_TYPE, FIB_SADDR_TYPE, IP_DADDR, IP_SADDR, L4PROTO, MARK, TH_DPORT,
    Chain, Dnat, DnatMap, Element, Lookup, Map, Masquerade, Match, Numgen, Object, Rule, Set, SetMark, Table,
    Term, Transaction, Update, Verdict, VerdictMap, kind)


class FakeError(RuntimeError):
    """What the kernel would answer with an error (and no change)."""


@dataclass
class _Chain:
    chain: Chain
    rules: list[Rule] = field(default_factory=list)


@dataclass
class _Set:
    set: Set | Map
    elements: dict[tuple[str, ...], Verdict | tuple[str, ...] | None] = field(default_factory=dict)


@dataclass
class _State:
    table: Table | None = None
    chains: dict[str, _Chain] = field(default_factory=dict)
    sets: dict[str, _Set] = field(default_factory=dict)


class Fake:
    def __init__(self) -> None:
        self.state = _State()
        self.transactions = 0
        self.last: Transaction | None = None  # the last transaction applied
        self.ops: Counter[str] = Counter()  # "add rule", "delete element", ... over every transaction

    def apply(self, tx: Transaction) -> None:
        state = copy.deepcopy(self.state)
        for verb, obj in tx.ops:
            _apply(state, tx.table, verb, obj)
        self.state = state
        self.transactions += 1
        self.ops += tx.counts()
        self.last = tx

    async def transact(self, namespace: str | None, tx: Transaction) -> int:
        """nft.Kernel's call: the namespace is this fake's; its generation is the count of transactions."""
        self.apply(tx)
        return self.transactions

    async def table_objects(self, namespace: str | None, table: Table) -> tuple[set[str], dict[str, int | None]] | None:
        state = self.state
        if state.table is None or state.table.text() != table.text() or not state.chains:
            return None
        return set(state.chains), {n: s.set.timeout for n, s in state.sets.items() if isinstance(s.set, Set)}

    async def touched_by_others(self, namespace: str | None, since: int) -> bool:
        """Every transaction of a fake is its owner's."""
        return since != self.transactions

    def chains(self) -> dict[str, list[Rule]]:
        return {name: list(c.rules) for name, c in self.state.chains.items()}

    def elements(self, name: str) -> dict[tuple[str, ...], Verdict | tuple[str, ...] | None]:
        return dict(self.state.sets[name].elements)

    def dump(self) -> str:
        """The table as `add` commands, objects sorted by name and rules in their order."""
        state = self.state
        if state.table is None:
            return ""
        tx = Transaction(state.table)
        tx.add(state.table)
        for name in sorted(state.chains):
            tx.add(state.chains[name].chain)
        for name in sorted(state.sets):
            tx.add(state.sets[name].set)
        for name in sorted(state.chains):
            for rule in state.chains[name].rules:
                tx.add(rule)
        for name in sorted(state.sets):
            for key, value in sorted(state.sets[name].elements.items()):
                tx.add(Element(name, key, value))
        return tx.commands()

    def walk(self, packet: Packet, local: frozenset[str] = frozenset()) -> list[Outcome]:
        """What becomes of the packet's first packet (conntrack state new) on this table: one Outcome
        per path through its random draws. `local` is the node's own addresses (fib ... type local)."""
        return _Walk(self.state, local).run(packet)


def _apply(state: _State, table: Table, verb: str, obj: Object) -> None:
    what = f"{verb} {kind(obj)}"
    if isinstance(obj, Table):
        if verb == "delete":
            if state.table is None:
                raise FakeError(f"{what} {obj.text()}: no such table")
            state.table, state.chains, state.sets = None, {}, {}
        elif verb == "create" and state.table is not None:
            raise FakeError(f"{what} {obj.text()}: exists")
        elif verb in ("add", "create"):
            state.table = state.table or obj
        else:
            raise FakeError(f"{what}: not supported by this fake")
        return
    if state.table is None:
        raise FakeError(f"{what} in {table.text()}: no such table")
    if isinstance(obj, Chain):
        _apply_chain(state, verb, obj, what)
    elif isinstance(obj, (Set, Map)):
        _apply_set(state, verb, obj, what)
    elif isinstance(obj, Rule):
        _check_references(state, obj.body, f"{what} in {obj.chain}")
        _chain(state, obj.chain, what).rules.append(obj)
    else:
        _apply_element(state, verb, obj, what)


def _chain(state: _State, name: str, what: str) -> _Chain:
    if name not in state.chains:
        raise FakeError(f"{what}: no chain {name}")
    return state.chains[name]


def _set(state: _State, name: str, what: str) -> _Set:
    if name not in state.sets:
        raise FakeError(f"{what}: no set or map {name}")
    return state.sets[name]


def _apply_chain(state: _State, verb: str, chain: Chain, what: str) -> None:
    found = state.chains.get(chain.name)
    if verb in ("add", "create"):
        if found is not None and verb == "create":
            raise FakeError(f"{what} {chain.name}: exists")
        if found is not None and found.chain.hook != chain.hook:
            raise FakeError(f"{what} {chain.name}: its hook cannot change (delete it first)")
        if found is None:
            state.chains[chain.name] = _Chain(chain)
        return
    found = _chain(state, chain.name, what)
    if verb == "flush":
        found.rules.clear()
        return
    found.rules.clear()  # the kernel deletes a chain's rules with it
    users = _users(state, lambda term: isinstance(term, Verdict) and term.chain == chain.name)
    if users:
        raise FakeError(f"{what} {chain.name}: in use by {users[0]}")
    del state.chains[chain.name]


def _apply_set(state: _State, verb: str, obj: Set | Map, what: str) -> None:
    found = state.sets.get(obj.name)
    if verb in ("add", "create"):
        if found is not None and (verb == "create" or found.set != obj):
            raise FakeError(f"{what} {obj.name}: exists" + ("" if verb == "create" else " with another declaration"))
        if found is None:
            state.sets[obj.name] = _Set(obj)
        return
    found = _set(state, obj.name, what)
    if kind(found.set) != kind(obj):
        raise FakeError(f"{what} {obj.name}: it is a {kind(found.set)}")
    if verb == "flush":
        found.elements.clear()
        return
    users = _users(state, lambda term: isinstance(term, (Lookup, VerdictMap, DnatMap, Update)) and _target(term) == obj.name)
    if users:
        raise FakeError(f"{what} {obj.name}: in use by {users[0]}")
    del state.sets[obj.name]


def _apply_element(state: _State, verb: str, element: Element, what: str) -> None:
    found = _set(state, element.owner, what)
    arity = len(found.set.type.split(" . "))
    if len(element.key) != arity:
        raise FakeError(f"{what} {element.text()} in {element.owner}: the key has {arity} parts")
    if verb == "delete":
        if element.key not in found.elements:
            raise FakeError(f"{what} {element.text()} in {element.owner}: no such element")
        del found.elements[element.key]
        return
    if verb == "flush":
        raise FakeError(f"{what}: elements are deleted, not flushed")
    _check_value(state, found.set, element, what)
    if element.key in found.elements:
        if verb == "create" or found.elements[element.key] != element.value:
            raise FakeError(f"{what} {element.text()} in {element.owner}: the key exists"
                            + ("" if verb == "create" else f" with {found.elements[element.key].text()}"))
    found.elements[element.key] = element.value


def _check_value(state: _State, owner: Set | Map, element: Element, what: str) -> None:
    """A set element has no value, a verdict map's a verdict (to a chain that exists), a data map's
    as many parts as its value type."""
    where = f"{what} {element.text()} in {element.owner}"
    if isinstance(owner, Set):
        if element.value is not None:
            raise FakeError(f"{where}: a set element has no value")
    elif owner.verdicts:
        if not isinstance(element.value, Verdict):
            raise FakeError(f"{where}: a verdict map's element needs a verdict")
        _check_references(state, (element.value,), f"{what} in {element.owner}")
    elif not isinstance(element.value, tuple) or len(element.value) != len(owner.value.split(" . ")):
        raise FakeError(f"{where}: the value has {len(owner.value.split(' . '))} parts ({owner.value})")


def _target(term: Term) -> str:
    if isinstance(term, Lookup) or isinstance(term, Update):
        return term.set
    if isinstance(term, (VerdictMap, DnatMap)):
        return term.map
    return term.chain if isinstance(term, Verdict) else ""


def _check_references(state: _State, body: tuple[Term, ...], what: str) -> None:
    for term in body:
        if isinstance(term, Verdict) and term.chain:
            target = _chain(state, term.chain, what)
            if target.chain.hook is not None:
                raise FakeError(f"{what}: {term.text()}: a base chain cannot be jumped to")
        elif isinstance(term, (Lookup, VerdictMap, DnatMap, Update)):
            found = _set(state, _target(term), what).set
            wanted = {VerdictMap: "a verdict map", DnatMap: "a data map"}.get(type(term), "a set")
            have = "a set" if isinstance(found, Set) else "a verdict map" if found.verdicts else "a data map"
            if have != wanted:
                raise FakeError(f"{what}: {term.text()}: {found.name} is {have}, not {wanted}")


def _users(state: _State, uses) -> list[str]:
    """Where a rule or map element uses what `uses` picks out."""
    found = [f"a rule in {c.chain.name}" for c in state.chains.values() for r in c.rules if any(map(uses, r.body))]
    return found + [f"an element of {s.set.name}" for s in state.sets.values()
                    for v in s.elements.values() if v is not None and uses(v)]


@dataclass(frozen=True)
class Packet:
    saddr: str
    daddr: str
    protocol: str
    dport: int
    local_origin: bool = False  # sent by the node itself (output hooks) instead of arriving


@dataclass(frozen=True)
class Outcome:
    """One path of a packet: the final verdict, where DNAT sent it, whether it was masqueraded."""

    verdict: str  # accept, drop or reject
    dnat: str | None = None  # "ip:port"
    masquerade: bool = False


NUMGEN = "numgen random mod "
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}


@dataclass
class Flow:
    """A packet on one path of a walk: where DNAT sent it, whether it was masqueraded, its mark."""

    packet: Packet
    dnat: str | None = None
    masquerade: bool = False
    mark: int = 0

    @property
    def daddr(self) -> str:
        return self.dnat.rsplit(":", 1)[0] if self.dnat else self.packet.daddr

    @property
    def dport(self) -> int:
        return int(self.dnat.rsplit(":", 1)[1]) if self.dnat else self.packet.dport


class _Walk:
    def __init__(self, state: _State, local: frozenset[str]) -> None:
        self.state, self.local = state, local

    def run(self, packet: Packet) -> list[Outcome]:
        """Arriving: prerouting, then input (to a local address) or forward and postrouting. Sent by
        the node: output, postrouting, and input when it is for the node itself."""
        outcomes: list[Outcome] = []
        flows = self._pass("output" if packet.local_origin else "prerouting", [Flow(packet)], outcomes)
        if packet.local_origin:
            flows = self._pass("postrouting", flows, outcomes)
            mine = [f for f in flows if f.daddr in self.local]
            flows = [f for f in flows if f.daddr not in self.local] + self._pass("input", mine, outcomes)
        else:
            mine = [f for f in flows if f.daddr in self.local]
            passing = self._pass("forward", [f for f in flows if f.daddr not in self.local], outcomes)
            flows = self._pass("input", mine, outcomes) + self._pass("postrouting", passing, outcomes)
        return outcomes + [Outcome("accept", f.dnat, f.masquerade) for f in flows]

    def _pass(self, hook: str, flows: list[Flow], outcomes: list[Outcome]) -> list[Flow]:
        """The flows the hook lets on; what it drops or rejects goes to outcomes."""
        going = []
        for flow in flows:
            for done, verdict in self._hook(hook, flow):
                if verdict in ("drop", "reject"):
                    outcomes.append(Outcome(verdict, done.dnat, done.masquerade))
                else:
                    going.append(done)
        return going

    def _hook(self, hook: str, flow: Flow) -> list[tuple[Flow, str]]:
        """Every base chain of the hook by priority; per path the flow and the hook's verdict."""
        chains = sorted((c.chain for c in self.state.chains.values() if c.chain.hook and c.chain.hook.hook == hook),
                        key=lambda c: int(PRIORITIES.get(c.hook.priority, c.hook.priority)))
        paths = [(flow, "accept")]
        for chain in chains:
            after = []
            for f, verdict in paths:
                if verdict != "accept":
                    after.append((f, verdict))
                    continue
                for g, v in self._chain(chain.name, f):
                    after.append((g, "accept" if v in ("return", "", "dnat", "masquerade") else v))
            paths = after
        return paths

    def _chain(self, name: str, flow: Flow) -> list[tuple[Flow, str]]:
        """Run a chain: per path the flow and how it ended ("" fell off the end, or a verdict)."""
        return self._rules(self.state.chains[name].rules, 0, flow)

    def _rules(self, rules: list[Rule], start: int, flow: Flow) -> list[tuple[Flow, str]]:
        for i in range(start, len(rules)):
            results = self._body(rules[i].body, flow)
            if results is None:
                continue  # no match: next rule
            out = []
            for f, verdict in results:
                if verdict == "continue":
                    out += self._rules(rules, i + 1, f)
                else:
                    out.append((f, verdict))
            return out
        return [(flow, "")]

    def _body(self, body: tuple[Term, ...], flow: Flow) -> list[tuple[Flow, str]] | None:
        """None when the rule does not match; else per path the flow and "continue" or a verdict."""
        flow = copy.copy(flow)
        for i, term in enumerate(body):
            if isinstance(term, Numgen):
                rest = self._body(body[i + 1:], flow)
                return [*(rest if rest is not None else []), (flow, "continue")]
            if isinstance(term, (Match, Lookup)):
                if not self._matches(term, flow):
                    return None
            elif isinstance(term, VerdictMap):
                value = self.state.sets[term.map].elements.get(tuple(self._field(k, flow) for k in term.keys))
                if value is None:
                    return None
                return self._verdict(value, flow)
            elif isinstance(term, DnatMap):
                return self._dnat_map(term, flow)
            elif isinstance(term, Verdict):
                return self._verdict(term, flow)
            elif isinstance(term, Dnat):
                flow.dnat = f"{term.ip}:{term.port}"
                return [(flow, "dnat")]
            elif isinstance(term, Masquerade):
                flow.masquerade = True
                return [(flow, "masquerade")]
            elif isinstance(term, SetMark):
                flow.mark = flow.mark | term.bits if term.op == "|" else flow.mark ^ term.bits
            # Update: the dynamic set is not followed (a first packet finds every affinity set empty)
        return [(flow, "continue")]

    def _dnat_map(self, term: DnatMap, flow: Flow) -> list[tuple[Flow, str]] | None:
        """Every draw of the key's `numgen random mod N` part that finds an element: a path each."""
        draws: list[tuple[str, ...]] = [()]
        for key in term.keys:
            if key.startswith(NUMGEN):
                draws = [(*d, str(i)) for d in draws for i in range(int(key.removeprefix(NUMGEN)))]
            else:
                draws = [(*d, self._field(key, flow)) for d in draws]
        elements = self.state.sets[term.map].elements
        found = [elements[d] for d in draws if d in elements]
        if not found:
            return None
        paths = []
        for ip, port in found:
            taken = copy.copy(flow)
            taken.dnat = f"{ip}:{port}"
            paths.append((taken, "dnat"))
        return paths

    def _verdict(self, verdict: Verdict, flow: Flow) -> list[tuple[Flow, str]]:
        if verdict.kind not in ("jump", "goto"):
            return [(flow, verdict.kind)]
        out = []
        for f, v in self._chain(verdict.chain, flow):
            if verdict.kind == "jump" and v in ("", "return"):
                out.append((f, "continue"))
            else:
                out.append((f, "return" if v == "" else v))
        return out

    def _field(self, what: str, flow: Flow) -> str:
        packet = flow.packet
        values = {IP_SADDR: packet.saddr, IP_DADDR: flow.daddr, L4PROTO: packet.protocol,
                  TH_DPORT: str(flow.dport), f"{packet.protocol} dport": str(flow.dport),
                  FIB_DADDR_TYPE: "local" if flow.daddr in self.local else "unicast",
                  FIB_SADDR_TYPE: "local" if packet.saddr in self.local or packet.local_origin else "unicast",
                  CT_STATE: "new", CT_STATUS: "dnat" if flow.dnat else "", MARK: str(flow.mark)}
        if what not in values:
            raise FakeError(f"the walk cannot read {what}")
        return values[what]

    def _matches(self, term: Match | Lookup, flow: Flow) -> bool:
        if isinstance(term, Lookup):
            return tuple(self._field(k, flow) for k in term.keys) in self.state.sets[term.set].elements
        if term.what.endswith(" dport") and term.what != TH_DPORT and not term.what.startswith(flow.packet.protocol):
            return False  # tcp dport on a udp packet
        value = self._field(term.what, flow)
        if term.mask is not None:
            value = str(int(value) & term.mask)
        wanted = term.value if isinstance(term.value, tuple) else (str(term.value),)
        found = any(_equal(term.what, value, w) for w in wanted)
        return not found if term.op == "!=" else found


def _equal(what: str, value: str, wanted: str) -> bool:
    if what in (IP_SADDR, IP_DADDR):
        return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
    if what == MARK:
        return int(value) == int(wanted, 0)
    if what == CT_STATUS:
        return wanted in value.split(",")
    if what.endswith(" dport") and "-" in wanted:  # a port range: `tcp dport 80-81`
        low, high = wanted.split("-")
        return int(low) <= int(value) <= int(high)
    return value == wanted
