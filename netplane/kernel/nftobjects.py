"""nftables objects as typed values, and a transaction of them (after knftables): the code that owns a
table builds Chains, Rules, Sets, Maps and Elements, never rule strings, and sends one Transaction a
sync; `text()` is the nft script libnftables runs, and nftfake.Fake applies the same transaction as
the kernel would, without root.

A rule's body is a tuple of terms: matches (a packet field compared with a value, a lookup in a set,
a random draw), statements (DNAT, masquerade, a mark, a dynamic set update) and one verdict, which
may come from a verdict map. Every reference a rule or a map element makes (a chain it jumps to, a
set or map it reads) is a field, so a checker needs no parser.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

# the packet fields a Match reads, as nft writes them
IP_SADDR, IP_DADDR = "ip saddr", "ip daddr"
L4PROTO, TH_DPORT = "meta l4proto", "th dport"
FIB_DADDR_TYPE, FIB_SADDR_TYPE = "fib daddr type", "fib saddr type"
CT_STATE, CT_STATUS, MARK = "ct state", "ct status", "meta mark"


def dport(protocol: str) -> str:
    """`tcp dport`, `udp dport`, `sctp dport`: the port match that also checks the protocol."""
    return f"{protocol} dport"


@dataclass(frozen=True)
class Match:
    """`<what> [op] <value>`; a tuple value is an anonymous set (`{ a, b }`); `mask` ANDs the field first."""

    what: str
    value: str | int | tuple[str, ...]
    op: str = ""  # "", "==" or "!="
    mask: int | None = None

    def text(self) -> str:
        what = self.what if self.mask is None else f"{self.what} & 0x{self.mask:x}"
        value = f"{{ {', '.join(self.value)} }}" if isinstance(self.value, tuple) else str(self.value)
        return " ".join(p for p in (what, self.op, value) if p)


@dataclass(frozen=True)
class Lookup:
    """`<keys joined by .> @<set>`: the packet's key is an element of the named set."""

    keys: tuple[str, ...]
    set: str

    def text(self) -> str:
        return f"{' . '.join(self.keys)} @{self.set}"


@dataclass(frozen=True)
class Numgen:
    """`numgen random mod <mod> == 0`: true for one packet in `mod`, at random."""

    mod: int

    def text(self) -> str:
        return f"numgen random mod {self.mod} == 0"


@dataclass(frozen=True)
class Dnat:
    """`meta l4proto <protocol> dnat to <ip>:<port>` (the protocol match lets nft translate the port)."""

    protocol: str
    ip: str
    port: int

    def text(self) -> str:
        return f"meta l4proto {self.protocol} dnat to {self.ip}:{self.port}"


@dataclass(frozen=True)
class Masquerade:
    fully_random: bool = True

    def text(self) -> str:
        return "masquerade fully-random" if self.fully_random else "masquerade"


@dataclass(frozen=True)
class SetMark:
    """`meta mark set meta mark <op> <bits>` with op `|` (set the bits) or `^` (flip them)."""

    op: str
    bits: int

    def text(self) -> str:
        return f"meta mark set meta mark {self.op} 0x{self.bits:x}"


@dataclass(frozen=True)
class Update:
    """`update @<set> { <keys> }`: add the packet's key to a dynamic set (or refresh its timeout)."""

    set: str
    keys: tuple[str, ...]

    def text(self) -> str:
        return f"update @{self.set} {{ {' . '.join(self.keys)} }}"


VERDICTS = ("accept", "drop", "reject", "return", "jump", "goto")


@dataclass(frozen=True)
class Verdict:
    """accept, drop, reject, return, or jump/goto a chain."""

    kind: str
    chain: str = ""

    def __post_init__(self) -> None:
        if self.kind not in VERDICTS or bool(self.chain) != (self.kind in ("jump", "goto")):
            raise ValueError(f"verdict {self.kind} {self.chain}".strip())

    def text(self) -> str:
        return f"{self.kind} {self.chain}" if self.chain else self.kind


@dataclass(frozen=True)
class DnatMap:
    """`dnat ip to <keys joined by .> map @<map>`: DNAT to the address and port the packet's key maps
    to (a key may draw at random: `numgen random mod N`); no element, no match."""

    keys: tuple[str, ...]
    map: str

    def text(self) -> str:
        return f"dnat ip to {' . '.join(self.keys)} map @{self.map}"


@dataclass(frozen=True)
class VerdictMap:
    """`<keys joined by .> vmap @<map>`: the verdict the packet's key maps to, if any."""

    keys: tuple[str, ...]
    map: str

    def text(self) -> str:
        return f"{' . '.join(self.keys)} vmap @{self.map}"


ACCEPT, DROP, REJECT, RETURN = Verdict("accept"), Verdict("drop"), Verdict("reject"), Verdict("return")


def jump(chain: str) -> Verdict:
    return Verdict("jump", chain)


def goto(chain: str) -> Verdict:
    return Verdict("goto", chain)


Term = Union[Match, Lookup, Numgen, Dnat, DnatMap, Masquerade, SetMark, Update, Verdict, VerdictMap]


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    comment: str = ""

    def text(self) -> str:
        return f"{self.family} {self.name}"


@dataclass(frozen=True)
class Hook:
    """What makes a chain a base chain: its type, hook, priority (a number or nft's name) and policy."""

    type: str
    hook: str
    priority: str
    policy: str = "accept"

    def text(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy {self.policy};"


@dataclass(frozen=True)
class Chain:
    name: str
    hook: Hook | None = None


@dataclass(frozen=True)
class Rule:
    chain: str
    body: tuple[Term, ...]

    def text(self) -> str:
        return " ".join(term.text() for term in self.body)


@dataclass(frozen=True)
class Set:
    """A named set of keys of `type` (`ipv4_addr . ipv4_addr`); dynamic sets with a timeout forget."""

    name: str
    type: str
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds

    def declaration(self) -> str:
        parts = [f"type {self.type};"]
        if self.flags:
            parts.append(f"flags {','.join(self.flags)};")
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout}s;")
        return " ".join(parts)


@dataclass(frozen=True)
class Map:
    """A named map from keys of `type` to verdicts, or to data of type `value`. With `typeof`, both
    are given as the expressions whose values they hold (`ip daddr . numgen random mod 3`)."""

    name: str
    type: str
    value: str = "verdict"
    typeof: bool = False

    @property
    def verdicts(self) -> bool:
        return self.value == "verdict"

    def declaration(self) -> str:
        return f"{'typeof' if self.typeof else 'type'} {self.type} : {self.value};"


@dataclass(frozen=True)
class Element:
    """A key of a set, or a key and its verdict or data in a map; a comment may say whose it is."""

    owner: str  # the set or map
    key: tuple[str, ...]
    value: Verdict | tuple[str, ...] | None = None
    comment: str = ""

    def text(self) -> str:
        key = " . ".join(self.key) + (f' comment "{self.comment}"' if self.comment else "")
        if self.value is None:
            return key
        return f"{key} : {' . '.join(self.value) if isinstance(self.value, tuple) else self.value.text()}"


Object = Union[Table, Chain, Rule, Set, Map, Element]
VERBS = ("add", "create", "flush", "delete")


def kind(obj: Object) -> str:
    return type(obj).__name__.lower()


@dataclass
class Transaction:
    """Operations on one table, applied all or nothing, in the order given."""

    table: Table
    ops: list[tuple[str, Object]] = field(default_factory=list)

    def add(self, obj: Object) -> None:
        self.ops.append(("add", obj))

    def add_all(self, objs: Iterable[Object]) -> None:
        self.ops.extend(("add", obj) for obj in objs)

    def create(self, obj: Object) -> None:
        """Like add, but an object that exists already is an error."""
        self.ops.append(("create", obj))

    def flush(self, obj: Chain | Set | Map) -> None:
        self.ops.append(("flush", obj))

    def delete(self, obj: Object) -> None:
        self.ops.append(("delete", obj))

    def __bool__(self) -> bool:
        return bool(self.ops)

    def counts(self) -> Counter[str]:
        """How many operations of each verb and kind: `add rule`, `delete element`, ..."""
        return Counter(f"{verb} {kind(obj)}" for verb, obj in self.ops)

    def text(self) -> str:
        """The nft script: a transaction that only adds is one `table { ... }` block (what a new
        table is; a third less to parse than a command per object), any other a command per
        operation, consecutive element operations on one set as one command."""
        if all(verb == "add" for verb, _ in self.ops):
            return self._block()
        return self.commands()

    def _block(self) -> str:
        objects: dict[str, Set | Map] = {}
        chains: dict[str, Chain] = {}
        rules: dict[str, list[str]] = {}
        elements: dict[str, list[str]] = {}
        comment = ""
        for _, obj in self.ops:
            if isinstance(obj, Table):
                comment = obj.comment or comment
            elif isinstance(obj, Chain):
                chains.setdefault(obj.name, obj)
            elif isinstance(obj, (Set, Map)):
                objects.setdefault(obj.name, obj)
            elif isinstance(obj, Rule):
                rules.setdefault(obj.chain, []).append(obj.text())
            else:
                elements.setdefault(obj.owner, []).append(obj.text())
        lines = [f"table {self.table.text()} {{"] + ([f'\tcomment "{comment}"'] if comment else [])
        for name, obj in objects.items():
            found = elements.pop(name, None)
            listed = f" elements = {{ {', '.join(found)} }}" if found else ""
            lines.append(f"\t{kind(obj)} {name} {{ {obj.declaration()}{listed} }}")
        for name in [*chains, *(n for n in rules if n not in chains)]:
            hook = chains[name].hook if name in chains else None
            lines.append(f"\tchain {name} {{" + (f" {hook.text()}" if hook else "")
                         + "".join(f"\n\t\t{rule}" for rule in rules.get(name, ())) + "\n\t}")
        # elements of sets this transaction did not declare go after the block
        after = [f"add element {self.table.text()} {owner} {{ {', '.join(found)} }}" for owner, found in elements.items()]
        return "\n".join(lines + ["}", *after, ""])

    def commands(self) -> str:
        """The nft script as a command per operation (consecutive element operations on one set in one)."""
        lines: list[str] = []
        batch: list[str] = []  # the element keys of the command being gathered
        previous: tuple[str, str] | None = None
        for verb, obj in self.ops:
            if isinstance(obj, Element):
                if previous != (verb, obj.owner):
                    self._flush_elements(lines, batch, previous)
                    previous = (verb, obj.owner)
                batch.append(_element_key(verb, obj))
                continue
            self._flush_elements(lines, batch, previous)
            previous = None
            lines.append(self._command(verb, obj))
        self._flush_elements(lines, batch, previous)
        return "".join(f"{line}\n" for line in lines)

    def _flush_elements(self, lines: list[str], batch: list[str], gathered: tuple[str, str] | None) -> None:
        if batch and gathered is not None:
            verb, owner = gathered
            lines.append(f"{verb} element {self.table.text()} {owner} {{ {', '.join(batch)} }}")
        batch.clear()

    def _command(self, verb: str, obj: Object) -> str:
        table = self.table.text()
        if isinstance(obj, Table):
            comment = f' {{ comment "{obj.comment}"; }}' if obj.comment and verb in ("add", "create") else ""
            return f"{verb} table {table}{comment}"
        if isinstance(obj, Chain):
            hook = f" {{ {obj.hook.text()} }}" if obj.hook is not None and verb in ("add", "create") else ""
            return f"{verb} chain {table} {obj.name}{hook}"
        if isinstance(obj, Rule):
            if verb != "add":
                raise ValueError(f"{verb} rule: rules are only added (flush or delete their chain)")
            return f"add rule {table} {obj.chain} {obj.text()}"
        if isinstance(obj, (Set, Map)):
            declaration = f" {{ {obj.declaration()} }}" if verb in ("add", "create") else ""
            return f"{verb} {kind(obj)} {table} {obj.name}{declaration}"
        raise ValueError(f"{verb} {kind(obj)}: elements are written in batches")


def _element_key(verb: str, element: Element) -> str:
    return " . ".join(element.key) if verb == "delete" else element.text()
