"""Hops: the probe's sightings placed on the lab's map (node, namespace, interface) and in time order.

A bridge's forwarding shows on its ports (see capture.py for why the bridge device itself does not
see it), so a hop records the bridge its interface belongs to.

Order comes from the kernel's receive/transmit timestamps (SO_TIMESTAMPNS), which every namespace
takes from the same clock. Two copies of one skb can carry the same stamp: the kernel stamps a
frame once when it is received, and a bridge that passes it on to its own device (cni0, br0)
keeps that stamp. Such copies are always read from the same socket (one socket per namespace),
in the order the kernel queued them, so the read order breaks the tie.
"""
from __future__ import annotations

from dataclasses import dataclass

from netplane.trace.match import Encap, Sighting

UNDERLAY = "underlay"


@dataclass(frozen=True)
class Hop:
    time_ns: int       # kernel timestamp of the copy (CLOCK_REALTIME)
    order: int         # read order within its namespace's socket
    node: str          # the node the namespace belongs to, or "underlay"
    netns: str
    interface: str
    io: str            # in | out: received on, or sent from, the interface
    direction: str     # request | reply
    src: str
    dst: str
    sport: int | None
    dport: int | None
    encap: Encap | None
    what: str
    bridge: str | None = None  # the bridge the interface is a port of (cni0 for a pod's veth)

    @classmethod
    def of(cls, sighting: Sighting, *, time_ns: int, order: int, node: str, netns: str, interface: str,
           io: str, bridge: str | None = None) -> Hop:
        s = sighting
        return cls(time_ns, order, node, netns, interface, io, s.direction, s.src, s.dst, s.sport, s.dport,
                   s.encap, s.what, bridge)

    @property
    def destination(self) -> tuple[str, int | None]:
        return self.dst, self.dport

    @property
    def source(self) -> tuple[str, int | None]:
        return self.src, self.sport


def ordered(hops: list[Hop]) -> list[Hop]:
    """Hops in the order the packet met them."""
    return sorted(hops, key=lambda h: (h.time_ns, h.order))


def delivered(hops: list[Hop], destinations: set[str]) -> bool:
    """Whether the request reached one of the destination namespaces."""
    return any(h.direction == "request" and h.netns in destinations for h in hops)


def replied(hops: list[Hop], source: str) -> bool:
    """Whether a reply (a real answer or an ICMP error) came back into the source namespace."""
    return any(h.direction == "reply" and h.netns == source for h in hops)


def answered(hops: list[Hop], source: str) -> bool:
    """Whether the destination itself answered: a reply at the source that is not an ICMP error."""
    return any(h.direction == "reply" and h.netns == source and "/" not in h.what for h in hops)
