"""What both proxy modes share between rendering and applying: the rules of one Service port as a
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
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from netplane.agent.proxy.model import ServicePort

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


def diff(old: dict[str, Fragment], new: dict[str, Fragment], cache: FragmentCache | None = None) -> Diff:
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
        holders = cache.holders if cache is not None else _holders(new.values())
        shared = cache.shared if cache is not None else None
        d.delete_entries = {name: kept for name, going in d.delete_entries.items()
                            if (kept := going if shared is not None and name not in shared else
                                {k: v for k, v in going.items() if not holders[(name, k, v)]})}
    return d


def _holders(fragments: Iterable[Fragment], shared: Collection[str] | None = None
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
        self.holders -= _holders((known[key][1] for key in self.changed if key in known), self.shared)
        self.holders += _holders((fragments[key] for key in self.changed if key in fragments), self.shared)
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
