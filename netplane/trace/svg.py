"""A trace drawn over the lab: the underlay switch, the client host, the nodes with their devices
(eth0, flannel.1, cni0 and the pods' veth ports) and the pods, with the probe's hops numbered on the
interfaces where they were seen and joined by arrows in time order (request blue, reply green).
Arrows on which the packet travels inside VXLAN are dashed orange and say the VNI, the outer
addresses and the UDP port; a hop where NAT rewrote the packet is ringed red with the translation.
Below the picture the hops are listed as in the table. Plain SVG 1.1 text, no scripts or fonts to
load: any browser shows it, and hovering over a hop shows its details.

`topology` takes the lab and its pods from the API; anything the hops name that it does not hold
(a pod made since, a lab unknown) is added from the hops' namespaces, so a report alone can be drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from netplane import names
from netplane.trace.hops import UNDERLAY, Hop
from netplane.trace.nat import endpoint
from netplane.trace.render import Report, table

REQUEST, REPLY, TUNNEL, NAT = "#1f63b4", "#2a9a2a", "#e07b00", "#d62728"
FONT = "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\""
MARGIN, COL_GAP = 20, 40
POD_W, POD_H, POD_GAP, NODE_PAD = 170, 52, 16, 16
NODE_MIN_W, CLIENT_W = 300, 170
Y_LEGEND = 46
Y_BAR, BAR_H = 84, 30
Y_NODE, NODE_H = 170, 210
Y_POD = Y_NODE + NODE_H + 50
BADGE_R, BADGE_STEP, BEND = 9, 21, 22
ROW_H = 15


@dataclass(frozen=True)
class PodBox:
    name: str
    namespace: str
    node: str
    ip: str
    netns: str


@dataclass(frozen=True)
class Topology:
    lab: str
    underlay: str = ""                       # the underlay's CIDR
    nodes: tuple[tuple[str, str], ...] = ()  # (name, underlay address)
    pods: tuple[PodBox, ...] = ()
    client_ip: str = ""                      # the underlay client's address; "" when there is none


def topology(lab, pods: list[dict]) -> Topology:
    """The lab's picture: its nodes and client from the lab, its pods (API objects) on their nodes."""
    prefix = names.lab_prefix(lab.name)
    boxes = []
    for pod in pods:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        boxes.append(PodBox(meta["name"], ns, pod.get("spec", {}).get("nodeName") or "",
                            pod.get("status", {}).get("podIP") or "", names.pod_netns(prefix, ns, meta["name"])))
    return Topology(lab.name, lab.network.underlay, tuple((n, lab.node_ip(n)) for n in lab.nodes),
                    tuple(sorted(boxes, key=lambda b: (b.node, b.namespace, b.name))), lab.client_ip)


def _complete(topo: Topology | None, hops: list[Hop]) -> Topology:
    """The topology with every node, pod and the client the hops name."""
    lab = topo.lab if topo else next((names.lab_of_netns(h.netns) for h in hops if names.lab_of_netns(h.netns)), "")
    topo = topo or Topology(lab or "")
    nodes, pods, client = list(topo.nodes), list(topo.pods), topo.client_ip
    known_pods = {p.netns for p in pods}
    for h in hops:
        short = names.short_netns(h.netns)
        if h.node not in (UNDERLAY, "") and h.node not in {n for n, _ in nodes}:
            nodes.append((h.node, ""))
        if short.startswith("pod.") and h.netns not in known_pods:
            ns, _, name = short[4:].partition(".")
            pods.append(PodBox(name, ns, h.node, "", h.netns))
            known_pods.add(h.netns)
        if short == "client" and not client:
            client = "?"
    for p in pods:
        if p.node and p.node not in {n for n, _ in nodes}:
            nodes.append((p.node, ""))
    return Topology(topo.lab, topo.underlay, tuple(nodes), tuple(pods), client)


class _Canvas:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self, x: float, y: float, body: str, size: int = 12, anchor: str = "start", fill: str = "#222",
             weight: str = "normal", cls: str = "", halo: bool = False) -> None:
        klass = f" class={quoteattr(cls)}" if cls else ""
        extra = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"' if halo else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
                 f'font-weight="{weight}"{klass}{extra}>{escape(body)}</text>')

    def rect(self, x: float, y: float, w: float, h: float, fill: str, stroke: str = "#555", rx: int = 6,
             dash: str = "", cls: str = "") -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        klass = f" class={quoteattr(cls)}" if cls else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" fill="{fill}" '
                 f'stroke="{stroke}"{extra}{klass}/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#888", width: float = 1.5,
             dash: str = "") -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                 f'stroke-width="{width}"{extra}/>')


class _Layout:
    """Where every namespace's interfaces are drawn."""

    def __init__(self, topo: Topology, hops: list[Hop]) -> None:
        self.topo = topo
        self.columns: list[tuple[str, float, float]] = []  # (node name or "client", x, width)
        x = MARGIN
        if topo.client_ip:
            self.columns.append(("client", x, CLIENT_W))
            x += CLIENT_W + COL_GAP
        self.pods_of: dict[str, list[PodBox]] = {}
        for pod in topo.pods:
            self.pods_of.setdefault(pod.node, []).append(pod)
        for node, _ in topo.nodes:
            n = len(self.pods_of.get(node, []))
            width = max(NODE_MIN_W, n * (POD_W + POD_GAP) - POD_GAP + 2 * NODE_PAD)
            self.columns.append((node, x, width))
            x += width + COL_GAP
        self.width = max(x - COL_GAP + MARGIN, 640)
        self.column = {name: (cx, w) for name, cx, w in self.columns}
        self.pod_at = {}
        for node, _ in topo.nodes:
            x0, w = self.column[node]
            pods = self.pods_of.get(node, [])
            span = len(pods) * (POD_W + POD_GAP) - POD_GAP
            start = x0 + (w - span) / 2
            for i, pod in enumerate(pods):
                self.pod_at[pod.netns] = (start + i * (POD_W + POD_GAP), Y_POD)
        self.lab_prefix = names.lab_prefix(topo.lab) if topo.lab else ""
        self.veth_x = self._veths(hops)
        self.extra: dict[tuple[str, str], tuple[float, float]] = {}

    def _node_of_netns(self, netns: str) -> str | None:
        short = names.short_netns(netns)
        return short if short in self.column and short != "client" else None

    def _veths(self, hops: list[Hop]) -> dict[tuple[str, str], float]:
        """A pod's veth port is drawn above the pod the hop before or after it is in."""
        found: dict[tuple[str, str], float] = {}
        for i, h in enumerate(hops):
            if self._node_of_netns(h.netns) is None or (h.netns, h.interface) in found:
                continue
            if h.interface in (names.UNDERLAY_IF, names.BRIDGE_IF, names.VXLAN_IF, "lo"):
                continue
            for j in (i - 1, i + 1):
                if 0 <= j < len(hops) and hops[j].netns in self.pod_at and hops[j].node == h.node:
                    found[(h.netns, h.interface)] = self.pod_at[hops[j].netns][0] + POD_W / 2
                    break
        return found

    def center(self, column: str) -> float:
        x0, w = self.column[column]
        return x0 + w / 2

    def slot(self, netns: str, interface: str) -> tuple[float, float]:
        """The point where hops on this interface are drawn."""
        short = names.short_netns(netns)
        if short == "underlay":
            port = {names.switch_port(c): c for c, _, _ in self.columns}.get(interface)
            if port is not None:
                return self.center(port), Y_BAR + BAR_H / 2
            return self._spare(netns, interface, self.width - MARGIN - 60, Y_BAR + BAR_H / 2, -40, 0)
        if short == "client" and "client" in self.column:
            x0, w = self.column["client"]
            return (x0 + w / 2, Y_NODE + 16) if interface == names.UNDERLAY_IF else \
                self._spare(netns, interface, x0 + 30, Y_NODE + 50, 30, 0)
        node = self._node_of_netns(netns)
        if node is not None:
            x0, w = self.column[node]
            if interface == names.UNDERLAY_IF:
                return x0 + w / 2, Y_NODE + 16
            if interface == names.VXLAN_IF:
                return x0 + 70, Y_NODE + 92
            if interface == names.BRIDGE_IF:
                return x0 + w / 2 + 40, Y_NODE + 148
            if (netns, interface) in self.veth_x:
                return self.veth_x[(netns, interface)], Y_NODE + NODE_H - 14
            return self._spare(netns, interface, x0 + w - 60, Y_NODE + 60, 0, 24)
        if netns in self.pod_at:
            x, y = self.pod_at[netns]
            if interface == names.POD_IF:
                return x + POD_W / 2, y + 12
            return self._spare(netns, interface, x + POD_W - 20, y + 30, -30, 0)
        return self._spare(netns, interface, MARGIN + 40, Y_NODE - 20, 40, 0)

    def _spare(self, netns: str, interface: str, x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
        key = (netns, interface)
        if key not in self.extra:
            k = sum(1 for (n, _) in self.extra if n == netns)
            self.extra[key] = (x + k * dx, y + k * dy)
        return self.extra[key]


def _encap_text(h: Hop) -> str:
    e = h.encap
    return "" if e is None else f"VXLAN VNI {e.vni}, UDP {e.port}: {e.outer_src} \u2192 {e.outer_dst}"


def _hop_text(n: int, h: Hop) -> str:
    text = (f"hop {n}: {h.node} {names.short_netns(h.netns)} {h.interface}"
            + (f" ({h.bridge} port)" if h.bridge else "")
            + f" {h.io}, {h.direction} {h.what}, {endpoint(h.src, h.sport)} \u2192 {endpoint(h.dst, h.dport)}")
    return text + (f", in {_encap_text(h)}" if h.encap else "")


def _draw_lab(c: _Canvas, lay: _Layout, topo: Topology) -> None:
    underlay = f"underlay switch {names.UNDERLAY_SWITCH_IF}" + (f"  {topo.underlay}" if topo.underlay else "")
    c.rect(MARGIN, Y_BAR, lay.width - 2 * MARGIN, BAR_H, "#eceff3", "#607080", cls="underlay")
    c.text(MARGIN + 8, Y_BAR - 6, f"{underlay}   ({lay.lab_prefix}underlay)", 12, weight="bold")
    for column, x0, w in lay.columns:
        cx = x0 + w / 2
        c.line(cx, Y_BAR + BAR_H, cx, Y_NODE, "#607080", 2)
        c.text(cx + 6, Y_BAR + BAR_H + 14, names.switch_port(column), 10, fill="#607080")
        if column == "client":
            c.rect(x0, Y_NODE, w, 70, "#fff8e8", "#a08040", cls="client")
            c.rect(cx - 28, Y_NODE + 4, 56, 22, "#ffffff", "#a08040", rx=4)
            c.text(cx, Y_NODE + 44, "underlay/client", 12, "middle", weight="bold")
            c.text(cx, Y_NODE + 60, topo.client_ip if topo.client_ip != "?" else "", 11, "middle")
            continue
        ip = dict(topo.nodes).get(column, "")
        c.rect(x0, Y_NODE, w, NODE_H, "#f4f7fb", "#4a6a90", cls="node")
        c.text(x0 + 8, Y_NODE + 46, column, 13, weight="bold")
        c.text(x0 + 8, Y_NODE + 60, ip, 11)
        c.text(x0 + 8, Y_NODE + NODE_H - 34, f"{lay.lab_prefix}{column}", 9, fill="#667")
        c.rect(cx - 28, Y_NODE + 4, 56, 22, "#ffffff", "#4a6a90", rx=4)          # eth0
        c.text(cx + 32, Y_NODE + 19, names.UNDERLAY_IF, 10, fill="#4a6a90")
        c.rect(x0 + 40, Y_NODE + 80, 60, 24, "#fff4e5", TUNNEL, rx=4)            # flannel.1
        c.text(x0 + 70, Y_NODE + 120, f"{names.VXLAN_IF} (vni {names.VXLAN_VNI})", 10, "middle", fill=TUNNEL)
        c.line(x0 + 70, Y_NODE + 80, cx - 20, Y_NODE + 26, TUNNEL, 1, "3,3")
        bx, bw = x0 + NODE_PAD, w - 2 * NODE_PAD                                 # cni0
        c.rect(bx, Y_NODE + 138, bw, 20, "#e8f1e8", "#4a8a4a", rx=4)
        c.text(bx + bw - 4, Y_NODE + 172, names.BRIDGE_IF, 10, "end", fill="#4a8a4a")
        for pod in lay.pods_of.get(column, []):
            px, py = lay.pod_at[pod.netns]
            pcx = px + POD_W / 2
            c.line(pcx, Y_NODE + 158, pcx, Y_NODE + NODE_H, "#4a8a4a", 1.5)
            c.line(pcx, Y_NODE + NODE_H, pcx, py, "#4a8a4a", 1.5)
            c.rect(px, py, POD_W, POD_H, "#ffffff", "#4a8a4a", cls="pod")
            label = pod.name if pod.namespace == "default" else f"{pod.namespace}/{pod.name}"
            c.text(pcx, py + 34, label, 12, "middle", weight="bold")
            c.text(pcx, py + 47, pod.ip, 10, "middle")
    for (netns, interface), x in lay.veth_x.items():
        c.text(x + 2 * BADGE_STEP + 4, Y_NODE + NODE_H - 10, interface, 9, fill="#4a8a4a")


def _legend(c: _Canvas, hops: list[Hop]) -> None:
    """What the colours mean, with the tunnels' outer headers (one per direction)."""
    x = MARGIN
    for color, dash, text in ((REQUEST, "", "request"), (REPLY, "", "reply")):
        c.line(x, Y_LEGEND - 4, x + 24, Y_LEGEND - 4, color, 2, dash)
        c.text(x + 30, Y_LEGEND, text, 11)
        x += 30 + 8 * len(text) + 16
    tunnels = []
    for h in hops:
        e = h.encap
        if e is not None and (h.direction, e.outer_src, e.outer_dst) not in [t[:3] for t in tunnels]:
            tunnels.append((h.direction, e.outer_src, e.outer_dst, e.vni, e.port))
    if tunnels:
        _, _, _, vni, port = tunnels[0]
        text = f"VXLAN VNI {vni}, UDP {port}: " + ", ".join(f"{d} {s} \u2192 {t}" for d, s, t, _, _ in tunnels)
        c.line(x, Y_LEGEND - 4, x + 24, Y_LEGEND - 4, TUNNEL, 3, "7,4")
        c.text(x + 30, Y_LEGEND, text, 11, fill=TUNNEL, weight="bold", cls="vxlan")
        x += 30 + 7 * len(text) + 16
    c.add(f'<circle cx="{x + 8}" cy="{Y_LEGEND - 4}" r="7" fill="none" stroke="{NAT}" stroke-width="2.5"/>')
    c.text(x + 22, Y_LEGEND, "NAT", 11, fill=NAT, weight="bold")


def _badges(hops: list[Hop], lay: _Layout) -> list[tuple[float, float]]:
    """Each hop's position: its interface's slot, hops on one slot side by side."""
    slots = [lay.slot(h.netns, h.interface) for h in hops]
    by_slot: dict[tuple[float, float], list[int]] = {}
    for i, s in enumerate(slots):
        by_slot.setdefault(s, []).append(i)
    where = [(0.0, 0.0)] * len(hops)
    for (x, y), indexes in by_slot.items():
        for k, i in enumerate(indexes):
            where[i] = (x + (k - (len(indexes) - 1) / 2) * BADGE_STEP, y)
    return where


def _arrow(c: _Canvas, a: tuple[float, float], b: tuple[float, float], color: str, marker: str, tunnel: bool,
           cls: str) -> tuple[float, float]:
    (x1, y1), (x2, y2) = a, b
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    bend = min(BEND, length / 3)
    mx, my = (x1 + x2) / 2 - uy * bend, (y1 + y2) / 2 + ux * bend  # to the right of the way travelled
    sx, sy = x1 + ux * (BADGE_R + 1), y1 + uy * (BADGE_R + 1)
    ex, ey = x2 - ux * (BADGE_R + 3), y2 - uy * (BADGE_R + 3)
    style = f'stroke="{TUNNEL if tunnel else color}" stroke-width="{3 if tunnel else 2}"'
    if tunnel:
        style += ' stroke-dasharray="7,4"'
    c.add(f'<path class={quoteattr(cls)} d="M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}" fill="none" '
          f'{style} marker-end="url(#{marker})"/>')
    return mx, my


def _nat_hops(report: Report) -> dict[int, str]:
    """hop index -> the translation first seen on it."""
    found: dict[int, str] = {}
    for n in report.nat:
        for i, h in enumerate(report.hops):
            seen = endpoint(h.dst, h.dport) if n.type == "DNAT" else endpoint(h.src, h.sport)
            if h.direction == "request" and h.node == n.node and seen == n.to:
                check = {True: ", conntrack agrees", False: ", not in conntrack", None: ""}[n.confirmed]
                found.setdefault(i, f"{n.type} on {n.node}: {n.from_} \u2192 {n.to}{check}")
                break
    return found


def render(report: Report, topo: Topology | None = None) -> str:
    """The SVG document of a trace."""
    hops = report.hops
    topo = _complete(topo, hops)
    lay = _Layout(topo, hops)
    c = _Canvas()
    _draw_lab(c, lay, topo)
    where = _badges(hops, lay)
    nat_at = _nat_hops(report)
    _legend(c, hops)
    wire: dict[str, tuple[float, float, float, Hop]] = {}  # direction -> the longest segment on the wire
    for i in range(1, len(hops)):
        a, b = hops[i - 1], hops[i]
        color, marker = (REQUEST, "request") if b.direction == "request" else (REPLY, "reply")
        tunnel = a.encap is not None or b.encap is not None
        mx, my = _arrow(c, where[i - 1], where[i], color, "tunnel" if tunnel else marker, tunnel,
                        f"step {b.direction}" + (" vxlan" if tunnel else ""))
        if a.encap is not None and b.encap is not None:
            length = math.dist(where[i - 1], where[i])
            if length > wire.get(b.direction, (-1.0,))[0]:
                wire[b.direction] = (length, mx, my, b)
    for direction, (_, mx, my, b) in wire.items():
        c.text(mx, my + (14 if direction == "request" else -6), f"VNI {b.encap.vni}", 10, "middle", TUNNEL, "bold",
               "vxlan", halo=True)
    for i, (h, (x, y)) in enumerate(zip(hops, where)):
        color = REQUEST if h.direction == "request" else REPLY
        ring = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{BADGE_R + 4}" fill="none" stroke="{NAT}" stroke-width="2.5"/>' \
            if i in nat_at else ""
        stroke = TUNNEL if h.encap else "#ffffff"
        c.add(f'<g class={quoteattr(f"hop {h.direction}")} data-hop="{i + 1}"><title>{escape(_hop_text(i + 1, h))}'
              f'</title>{ring}<circle cx="{x:.1f}" cy="{y:.1f}" r="{BADGE_R}" fill="{color}" stroke="{stroke}" '
              f'stroke-width="2"/><text x="{x:.1f}" y="{y + 4:.1f}" font-size="10" text-anchor="middle" '
              f'fill="#ffffff" font-weight="bold">{i + 1}</text></g>')
    for i, label in nat_at.items():
        x, y = where[i]
        c.text(x + BADGE_R + 8, y - BADGE_R - 6, label, 11, fill=NAT, weight="bold", cls="nat", halo=True)
    # the list of hops, the translations and the verdict, as the table says them
    y = Y_POD + POD_H + 36
    c.text(MARGIN, y, "hops", 12, weight="bold")
    rows = [(REQUEST if h.direction == "request" else REPLY, _hop_text(i, h), "hop-row")
            for i, h in enumerate(hops, 1)] or [("#222", "the probe was not seen anywhere", "hop-row")]
    rows += [(NAT, f"{n.type} on {n.node}: {n.from_} \u2192 {n.to}", "nat-row") for n in report.nat]
    rows += [("#222", line, "verdict") for line in table(report).splitlines()
             if line.startswith(("delivered:", "replied:"))]
    for color, text, cls in rows:
        y += ROW_H
        c.text(MARGIN, y, text, 11, fill=color, cls=cls)
    width = max(lay.width, MARGIN * 2 + 7 * max(len(t) for _, t, _ in rows))
    height = y + MARGIN
    markers = "".join(
        f'<marker id="{name}" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" markerHeight="6" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        for name, color in (("request", REQUEST), ("reply", REPLY), ("tunnel", TUNNEL)))
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>\n'
            f'<title>{escape("trace " + report.title)}</title>\n<defs>{markers}</defs>\n'
            f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>\n')
    title = (f'<text x="{MARGIN}" y="24" font-size="14" font-weight="bold" fill="#222">'
             f'{escape("trace " + report.title)}</text>\n')
    return head + title + "\n".join(c.parts) + "\n</svg>\n"


def write(path, report: Report, topo: Topology | None = None) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(render(report, topo))
