"""The trace's I/O: packet sockets in the lab's namespaces, the probe's raw socket, the bridge ports.

Sockets are made inside each namespace by kernel.netns.socket_in (a short-lived thread that
enters the namespace, opens the socket and ends; see there why); a socket stays in the namespace it
was made in, and a namespace that has gone is an error, never made again.

One AF_PACKET/ETH_P_ALL socket per namespace sees every interface in it, in both directions
(PACKET_OUTGOING marks a copy being sent), and names the interface in each frame's address
(Python resolves the index with an ioctl on the socket itself, so in its namespace).
Frames carry SO_TIMESTAMPNS stamps: one clock for all namespaces, so hops seen in different
namespaces can be put in order.

Bridges are NOT made promiscuous, although that is how tcpdump shows, on cni0, the frames the
bridge forwards between two ports: a promiscuous bridge also passes every forwarded frame up to its
own device (br_handle_frame_finish, local_rcv), and with br_netfilter a Service packet DNATed to a
pod on the same bridge then reaches that pod twice (once bridged, once routed), which we saw:
the trace would change what it measures. A forwarded frame shows on the two bridge ports instead
(the pods' host-side veths, the underlay's to-<node> ports), and `bridge_ports` names their bridge.
"""
from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netplane.kernel import links, netns
from netplane.trace.resolve import Place

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
RCVBUF = 4 << 20
SNAPLEN = 65536


@dataclass(frozen=True)
class Frame:
    place: Place
    interface: str
    outgoing: bool
    time_ns: int
    order: int
    data: bytes


class Capture:
    """Packet sockets in every given namespace, open from __enter__ to __exit__."""

    def __init__(self, places: tuple[Place, ...]) -> None:
        self.places = places
        self.sockets: dict[int, tuple[socket.socket, Place]] = {}
        self._order = 0

    def __enter__(self) -> Capture:
        try:
            for place in self.places:
                if not netns.exists(place.netns):  # a pod deleted since it was resolved
                    continue
                sock = netns.socket_in(place.netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                self.sockets[sock.fileno()] = (sock, place)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        # Closing a packet socket waits for an RCU grace period (packet_release -> synchronize_net),
        # ~15 ms each; closed together, the sockets share one.
        socks = [sock for sock, _ in self.sockets.values()]
        self.sockets.clear()
        if len(socks) > 1:
            with ThreadPoolExecutor(len(socks)) as pool:
                list(pool.map(socket.socket.close, socks))
        for sock in socks:
            sock.close()  # a no-op for the closed ones; closes the rest if a thread failed

    def _read(self, sock: socket.socket, place: Place) -> Iterator[Frame]:
        while True:
            try:
                data, ancdata, _, address = sock.recvmsg(SNAPLEN, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            stamp = time.time_ns()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    stamp = seconds * 1_000_000_000 + nanoseconds
            self._order += 1
            yield Frame(place, address[0], address[2] == PACKET_OUTGOING, stamp, self._order, data)

    def frames(self, deadline: float) -> Iterator[Frame]:
        """Frames as they come, until time.monotonic() passes the deadline (or the caller stops)."""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(self.sockets), [], [], left)
            for fd in ready:
                yield from self._read(*self.sockets[fd])

    def drain(self) -> Iterator[Frame]:
        """Whatever is already queued on every socket."""
        for sock, place in list(self.sockets.values()):
            yield from self._read(sock, place)


def bridge_ports(places: tuple[Place, ...]) -> dict[str, dict[str, str]]:
    """netns -> {port: bridge} for the bridge ports (IFLA_MASTER) in each namespace."""
    found = {}
    for place in places:
        if not netns.exists(place.netns):
            continue
        found[place.netns] = {port: bridge for port, bridge in links.masters(place.netns).items() if bridge}
    return found


class Sender:
    """A raw IPv4 socket in the source pod's namespace (IPPROTO_RAW: the probe brings its own
    header, so its IP ID is ours; the pod's kernel routes it and resolves the next hop)."""

    def __init__(self, place: Place) -> None:
        self.sock = netns.socket_in(place.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, packet: bytes, dst: str) -> int:
        """Send, and return the time it left (time.time_ns())."""
        sent_at = time.time_ns()
        self.sock.sendto(packet, (dst, 0))
        return sent_at

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
