"""What both proxy modes share between rendering and applying: the rules of one Service port as a
Fragment, and the difference between two syncs' fragments, so a sync sends only what changed.

A Fragment holds the chains a Service port owns (rewritten whole when they change, deleted when the
port goes) and its entries in shared objects: elements of the nftables verdict maps, or rules in
iptables' shared chains such as KUBE-SERVICES. Fragments are cached per ServicePort, so an unchanged
port costs one identity check per sync.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netplane.agent.proxy.model import ServicePort

Rules = tuple[str, ...]


@dataclass(frozen=True)
class Fragment:
    chains: dict[str, Rules] = field(default_factory=dict)  # chain -> its rules, in order
    entries: dict[str, dict[str, str]] = field(default_factory=dict)  # shared object -> key -> value
    sets: dict[str, str] = field(default_factory=dict)  # set of its own -> declaration (affinity)


@dataclass
class Diff:
    """The changes from one set of fragments to the next, grouped as a transaction needs them."""

    write_chains: dict[str, Rules] = field(default_factory=dict)
    delete_chains: set[str] = field(default_factory=set)
    add_entries: dict[str, dict[str, str]] = field(default_factory=dict)
    delete_entries: dict[str, dict[str, str]] = field(default_factory=dict)  # with the old value
    add_sets: dict[str, str] = field(default_factory=dict)
    delete_sets: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any((self.write_chains, self.delete_chains, self.add_entries, self.delete_entries,
                    self.add_sets, self.delete_sets))


def merge(fragments: Iterable[Fragment]) -> Fragment:
    """All fragments as one (what a full sync writes)."""
    chains: dict[str, Rules] = {}
    entries: dict[str, dict[str, str]] = {}
    sets: dict[str, str] = {}
    for f in fragments:
        chains.update(f.chains)
        sets.update(f.sets)
        for name, items in f.entries.items():
            entries.setdefault(name, {}).update(items)
    return Fragment(chains, entries, sets)


def diff(old: dict[str, Fragment], new: dict[str, Fragment]) -> Diff:
    """What turns the rules of `old` into those of `new` (both keyed by ServicePort id).

    Chain and set names derive from the port's id, so they never move between ports; a shared
    entry may (a Service deleted and another created on its address), hence deletes go first, and
    some are held by several ports at once."""
    d = Diff()
    for key in old.keys() | new.keys():
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
                if now.get(k) != v:
                    d.delete_entries.setdefault(name, {})[k] = v
            for k, v in now.items():
                if was.get(k) != v:
                    d.add_entries.setdefault(name, {})[k] = v
        for name, declaration in after.sets.items():
            if before.sets.get(name) != declaration:
                d.add_sets[name] = declaration
                if name in before.sets:  # replaced (a new timeout): the rules using it are rewritten
                    d.delete_sets.add(name)
                    d.write_chains.update(after.chains)
        d.delete_sets |= before.sets.keys() - after.sets.keys()
    if d.delete_entries:  # an entry several ports share (a hairpin pair) stays while one holds it
        for f in new.values():
            for name, going in d.delete_entries.items():
                held = f.entries.get(name)
                if held:
                    for k in [k for k in going if held.get(k) == going[k]]:
                        del going[k]
        d.delete_entries = {name: going for name, going in d.delete_entries.items() if going}
    return d


EMPTY = Fragment()


class FragmentCache:
    """Renders each ServicePort once and hands back the same Fragment while the port is unchanged."""

    def __init__(self, render: Callable[[ServicePort], Fragment]) -> None:
        self._render = render
        self._by_id: dict[str, tuple[ServicePort, Fragment]] = {}

    def fragments(self, ports: Iterable[ServicePort]) -> dict[str, Fragment]:
        found: dict[str, tuple[ServicePort, Fragment]] = {}
        for sp in ports:
            cached = self._by_id.get(sp.id)
            if cached is None or (cached[0] is not sp and cached[0] != sp):
                cached = (sp, self._render(sp))
            found[sp.id] = cached
        self._by_id = found
        return {key: fragment for key, (_, fragment) in found.items()}
