"""What the proxy modes and the policy enforcement share between rendering and applying: the rules of one Service port as a
Fragment, and the difference between two syncs' fragments, so a sync sends only what changed.

A Fragment holds the chains a Service port owns (rewritten whole when they change, deleted when the
port goes) and what it puts in objects every port shares. Each mode says what those are: nftables
rules are tuples of typed terms and its shared objects are maps and sets (key -> verdict, or None in
a set); iptables rules are iptables-restore text and its shared objects are chains such as
KUBE-SERVICES, whose rules are keys with no value. The diff only compares them. Fragments are cached
per ServicePort, so an unchanged port costs one identity check per sync.
"""
from __future__ import annotations

import functools
import gc
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, Protocol, TypeVar

from netplane.agent.proxy.model import ServicePort
from netplane.kernel.nftobjects import Chain, Element, Hook, Map, Rule, Set, Table, Transaction

P = ParamSpec("P")
T = TypeVar("T")
Rules = tuple[Hashable, ...]  # a chain's rules in order, each as its mode writes one
Entries = dict[str, dict[Hashable, Hashable]]  # shared object -> key -> value


@dataclass(frozen=True)
class Fragment:
    chains: dict[str, Rules] = field(default_factory=dict)
    entries: Entries = field(default_factory=dict)
    sets: dict[str, Hashable] = field(default_factory=dict)  # set of its own -> its declaration (affinity)


@dataclass
class Diff:
    """The changes from one set of fragments to the next, grouped as a transaction needs them."""

    write_chains: dict[str, Rules] = field(default_factory=dict)
    delete_chains: set[str] = field(default_factory=set)
    add_entries: Entries = field(default_factory=dict)
    delete_entries: Entries = field(default_factory=dict)  # with the old value
    add_sets: dict[str, Hashable] = field(default_factory=dict)
    delete_sets: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any((self.write_chains, self.delete_chains, self.add_entries, self.delete_entries,
                    self.add_sets, self.delete_sets))


def merge(fragments: Iterable[Fragment]) -> Fragment:
    """All fragments as one (what a full sync writes)."""
    chains: dict[str, Rules] = {}
    entries: Entries = {}
    sets: dict[str, Hashable] = {}
    for f in fragments:
        chains.update(f.chains)
        sets.update(f.sets)
        for name, items in f.entries.items():
            entries.setdefault(name, {}).update(items)
    return Fragment(chains, entries, sets)


class Tracked(Protocol):
    """What made the new fragments and knows what it changed (FragmentCache, the policies' NodePolicies)."""

    changed: set[str]  # the keys rendered anew or gone
    holders: Counter[tuple[str, Hashable, Hashable]]  # of the fragments it handed out last
    shared: Collection[str] | None  # the objects whose entries several keys may hold (None: any)


def diff(old: dict[str, Fragment], new: dict[str, Fragment], cache: Tracked | None = None) -> Diff:
    """What turns the rules of `old` into those of `new` (both keyed by ServicePort id).

    Chain and set names derive from the port's id, so they never move between ports; a shared
    entry may (a Service deleted and another created on its address), hence deletes go first, and
    some are held by several ports at once. With the cache that rendered `new` from `old`, only the
    ports it rendered anew are compared."""
    d = Diff()
    for key in old.keys() | new.keys() if cache is None else cache.changed:
        before, after = old.get(key, EMPTY), new.get(key, EMPTY)
        if before is after:
            continue
        for chain, rules in after.chains.items():
            if before.chains.get(chain) != rules:
                d.write_chains[chain] = rules
        d.delete_chains |= before.chains.keys() - after.chains.keys()
        for name in before.entries.keys() | after.entries.keys():
            was, now = before.entries.get(name, {}), after.entries.get(name, {})
            for k, v in was.items():
                if now.get(k, _ABSENT) != v:
                    d.delete_entries.setdefault(name, {})[k] = v
            for k, v in now.items():
                if was.get(k, _ABSENT) != v:
                    d.add_entries.setdefault(name, {})[k] = v
        for name, declaration in after.sets.items():
            if before.sets.get(name) != declaration:
                d.add_sets[name] = declaration
                if name in before.sets:  # replaced (a new timeout): the rules using it are rewritten
                    d.delete_sets.add(name)
                    d.write_chains.update(after.chains)
        d.delete_sets |= before.sets.keys() - after.sets.keys()
    if d.delete_entries:  # an entry several ports share (a hairpin pair) stays while one holds it
        holders = cache.holders if cache is not None else holders_of(new.values())
        shared = cache.shared if cache is not None else None
        d.delete_entries = {name: kept for name, going in d.delete_entries.items()
                            if (kept := going if shared is not None and name not in shared else
                                {k: v for k, v in going.items() if not holders[(name, k, v)]})}
    return d


def holders_of(fragments: Iterable[Fragment], shared: Collection[str] | None = None
             ) -> Counter[tuple[str, Hashable, Hashable]]:
    """How many fragments hold each (shared object, key, value), of the objects named (all when None)."""
    return Counter((name, k, v) for f in fragments for name, items in f.entries.items()
                   if shared is None or name in shared for k, v in items.items())


EMPTY = Fragment()
_ABSENT = object()  # a key not there (a set's elements have the value None)


class FragmentCache:
    """Renders each ServicePort once and hands back the same Fragment while the port is unchanged.
    `shared` names the objects whose entries several ports may hold at once (None: any), the ones
    whose holders it counts."""

    def __init__(self, render: Callable[[ServicePort], Fragment], shared: Collection[str] | None = None) -> None:
        self._render, self.shared = render, shared
        self._by_id: dict[str, tuple[ServicePort, Fragment]] = {}
        self.changed: set[str] = set()  # the ports rendered anew or gone at the last call
        self.holders: Counter[tuple[str, Hashable, Hashable]] = Counter()  # of the fragments of the last call

    def fragments(self, ports: Iterable[ServicePort]) -> dict[str, Fragment]:
        found: dict[str, tuple[ServicePort, Fragment]] = {}
        fragments: dict[str, Fragment] = {}
        changed = set()
        known = self._by_id
        for sp in ports:
            key = sp.id
            cached = known.get(key)
            if cached is None or (cached[0] is not sp and cached[0] != sp):
                cached = (sp, self._render(sp))
                changed.add(key)
            found[key] = cached
            fragments[key] = cached[1]
        self.changed = changed | (known.keys() - found.keys())
        self.holders -= holders_of((known[key][1] for key in self.changed if key in known), self.shared)
        self.holders += holders_of((fragments[key] for key in self.changed if key in fragments), self.shared)
        self._by_id = found
        return fragments


def collector_held(sync: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The sync with Python's cyclic garbage collector held off while it runs: every tuple a sync
    makes counts towards a collection, and each collection walks every cached fragment again, which
    at 10,000 Services was more than half a full sync's Python time. A sync makes no cycles."""

    @functools.wraps(sync)
    async def held(*args: P.args, **kwargs: P.kwargs) -> T:
        was = gc.isenabled()
        gc.disable()
        try:
            return await sync(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return held


class NftTable:
    """An nftables table whose objects fragments hold: its base chains' hooks and the sets and maps
    every fragment puts elements in; the transactions that declare it or apply a Diff to it."""

    def __init__(self, table: Table, hooks: Mapping[str, Hook], shared: Mapping[str, Set | Map]) -> None:
        self.table, self.hooks, self.shared = table, hooks, shared

    def chain(self, name: str) -> Chain:
        return Chain(name, self.hooks.get(name))

    def declare(self, everything: Fragment) -> Transaction:
        """A whole new table, for a table that does not exist."""
        tx = Transaction(self.table)
        tx.add(self.table)
        tx.add_all(self.chain(name) for name in everything.chains)
        tx.add_all((*everything.sets.values(), *self.shared.values()))
        _write(tx, everything.chains, _elements(everything.entries))
        return tx

    def removal(self) -> Transaction:
        """The table deleted, if it is there."""
        tx = Transaction(self.table)
        tx.add(self.table)
        tx.delete(self.table)
        return tx

    def anew(self, everything: Fragment) -> Transaction:
        """The table made anew in one transaction, whatever an earlier owner left in it."""
        tx = self.removal()
        tx.ops += self.declare(everything).ops
        return tx

    def update(self, d: Diff) -> Transaction:
        """The incremental transaction for one sync's changes."""
        tx = Transaction(self.table)
        self.changes(tx, d.write_chains, d.delete_chains, d.add_entries, d.delete_entries,
                     d.add_sets, d.delete_sets - d.add_sets.keys(), d.delete_sets & d.add_sets.keys())
        return tx

    def changes(self, tx: Transaction, write_chains: dict[str, Rules], delete_chains: set[str],
                add_entries: Entries, delete_entries: Entries, add_sets: dict[str, Hashable],
                delete_sets: set[str], replace_sets: set[str]) -> None:
        """In the order the kernel needs: references go before what they point to is deleted, and
        what a rule points to exists before the rule."""
        for element in _elements(delete_entries):
            tx.delete(element)
        for name in write_chains:
            tx.add(self.chain(name))
            tx.flush(Chain(name))
        for name in delete_chains:
            tx.flush(Chain(name))
        for name in replace_sets:
            tx.delete(Set(name, "ipv4_addr"))
        for obj in add_sets.values():
            tx.add(obj)
        _write(tx, write_chains, _elements(add_entries))
        for name in delete_chains:
            tx.delete(Chain(name))
        for name in delete_sets:
            tx.delete(Set(name, "ipv4_addr"))


def _elements(entries: Entries) -> list[Element]:
    return [Element(name, key, value) for name, items in entries.items() for key, value in items.items()]


def _write(tx: Transaction, chains: dict[str, Rules], elements: Iterable[Element]) -> None:
    tx.add_all(Rule(name, body) for name, rules in chains.items() for body in rules)
    tx.add_all(elements)
