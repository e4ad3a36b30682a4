"""What a trace leaves for other tools and for people: pcapng files that tshark reads (the writer alone,
on frames built with scapy), the SVG picture (parsed as XML), the one-line summaries of `capture`;
then, in one default lab, the real CLI: `trace --pcap --svg` across the overlay, and `capture` live.
"""
from __future__ import annotations

import json
import select
import shutil
import signal
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RS, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from conftest import on_labs
from labtools import NETPLANE, cli, http, pod_ip
from netplane.trace import live, nat, pcap, render, svg
from netplane.trace.capture import Frame
from netplane.trace.hops import Hop
from netplane.trace.match import Encap
from netplane.trace.resolve import Place

CLIENT, WEB1, WEB2, VIP = "10.244.0.3", "10.244.0.4", "10.244.1.2", "10.96.0.2"
NODE1, NODE2 = "172.30.0.11", "172.30.0.12"
MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_000_123_456_789  # a kernel timestamp, ns


def syn(dst=WEB2, dport=8080) -> IP:
    return IP(src=CLIENT, dst=dst, id=4242) / TCP(sport=40000, dport=dport, seq=123456, flags="S")


def wrapped(inner: IP, outer_src=NODE1, outer_dst=NODE2) -> bytes:
    return bytes(Ether(**MAC) / IP(src=outer_src, dst=outer_dst) / UDP(sport=51000, dport=8472)
                 / VXLAN(vni=1, flags=0x08) / Ether(**MAC) / inner)


def tshark(path: Path | str, *fields: str) -> list[list[str]]:
    """tshark's fields of every frame of a file, UDP 8472 decoded as VXLAN."""
    argv = ["tshark", "-r", str(path), "-d", "udp.port==8472,vxlan", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def test_tshark_is_installed():
    assert shutil.which("tshark"), "tshark is missing: scripts/install installs it"


# --- the pcapng writer -------------------------------------------------------------------------

def test_the_pcapng_writer_makes_a_file_tshark_decodes_down_to_the_vni(tmp_path):
    node = Place("np.l.node-1", "node-1")
    pod = Place("np.l.pod.default.client", "node-1")
    frames = [(Frame(pod, "eth0", True, T0, 1, bytes(Ether(**MAC) / syn())), "hop 1"),
              (Frame(node, "eth0", True, T0 + 1_500, 2, wrapped(syn())), "hop 2: in vxlan")]
    path = tmp_path / "f.pcapng"
    assert pcap.write(path, frames) == 2
    rows = tshark(path, "frame.interface_name", "frame.time_epoch", "frame.packet_flags_direction", "vxlan.vni",
                  "udp.dstport", "ip.dst", "tcp.dstport", "frame.comment")
    assert len(rows) == 2
    plain, outer = rows
    assert plain[0] == "node-1/pod.default.client/eth0" and plain[3] == ""
    assert outer[0] == "node-1/node-1/eth0"
    assert (outer[3], outer[4]) == ("1", "8472")                   # VXLAN, VNI 1, UDP 8472
    assert outer[5] == f"{NODE2},{WEB2}" and outer[6] == "8080"    # the outer and the inner header
    assert plain[1] == "1700000000.123456789" and outer[1] == "1700000000.123458289"  # nanoseconds kept
    assert int(plain[2], 16) & 3 == pcap.EPB_OUTBOUND
    assert outer[7] == "hop 2: in vxlan"


def test_pcapng_blocks_are_well_formed_and_interfaces_declared_once(tmp_path):
    import io
    out = io.BytesIO()
    w = pcap.Writer(out)
    a, b = w.interface("n/x/eth0"), w.interface("n/x/cni0")
    assert (a, b, w.interface("n/x/eth0")) == (0, 1, 0)
    w.packet(b, T0, b"\x01" * 61, outgoing=False)  # odd length: padded
    data = out.getvalue()
    kinds, offset = [], 0
    while offset < len(data):
        kind, length = struct.unpack_from("<II", data, offset)
        assert length % 4 == 0 and struct.unpack_from("<I", data, offset + length - 4)[0] == length
        kinds.append(kind)
        offset += length
    assert offset == len(data) and kinds == [pcap.SHB, pcap.IDB, pcap.IDB, pcap.EPB]
    assert struct.unpack_from("<I", data, 8)[0] == pcap.BYTE_ORDER_MAGIC


def hop(t, order, node, netns, ifname, direction="request", dst=VIP, dport=80, src=CLIENT, sport=40000, encap=None,
        io="in") -> Hop:
    return Hop(t, order, node, netns, ifname, io, direction, src, dst, sport, dport, encap,
               "SYN" if direction == "request" else "SYN-ACK")


def svc_report() -> render.Report:
    """client -> svc/web, DNAT on node-1 to web-2, VXLAN to node-2, and the reply; with its frames."""
    enc, back = Encap(1, NODE1, NODE2, 8472), Encap(1, NODE2, NODE1, 8472)
    hops = [
        hop(T0, 1, "node-1", "np.l.pod.default.client", "eth0", io="out"),
        hop(T0 + 10, 2, "node-1", "np.l.node-1", "vethaaaa"),
        hop(T0 + 20, 3, "node-1", "np.l.node-1", "cni0", dst=WEB2, dport=8080),
        hop(T0 + 30, 4, "node-1", "np.l.node-1", "flannel.1", dst=WEB2, dport=8080, io="out"),
        hop(T0 + 40, 5, "node-1", "np.l.node-1", "eth0", dst=WEB2, dport=8080, encap=enc, io="out"),
        hop(T0 + 50, 6, "underlay", "np.l.underlay", "to-node-1", dst=WEB2, dport=8080, encap=enc),
        hop(T0 + 60, 7, "node-2", "np.l.node-2", "eth0", dst=WEB2, dport=8080, encap=enc),
        hop(T0 + 70, 8, "node-2", "np.l.pod.default.web-2", "eth0", dst=WEB2, dport=8080),
        hop(T0 + 80, 9, "node-2", "np.l.pod.default.web-2", "eth0", "reply", CLIENT, 40000, WEB2, 8080, io="out"),
        hop(T0 + 90, 10, "node-2", "np.l.node-2", "eth0", "reply", CLIENT, 40000, WEB2, 8080, back, io="out"),
        hop(T0 + 99, 11, "node-1", "np.l.pod.default.client", "eth0", "reply", CLIENT, 40000, VIP, 80),
    ]
    frames = []
    for h in hops:
        inner = IP(src=h.src, dst=h.dst, id=4242) / TCP(sport=h.sport, dport=h.dport, flags="S")
        data = wrapped(inner, h.encap.outer_src, h.encap.outer_dst) if h.encap else bytes(Ether(**MAC) / inner)
        frames.append(Frame(Place(h.netns, h.node), h.interface, h.io == "out", h.time_ns, h.order, data))
    noise = Frame(Place("np.l.node-1", "node-1"), "eth0", False, T0 + 5, 99, bytes(Ether(**MAC) / ARP()))
    return render.Report("default/client -> svc/web", True, True, hops, nat.infer(hops),
                         delivered_to="np.l.pod.default.web-2", frames=[noise, *frames])


def test_a_trace_becomes_one_file_per_place_and_a_merged_file_of_the_probes_copies(tmp_path):
    report = svc_report()
    written = pcap.write_trace(report, tmp_path / "out")
    assert [p.name for p in written] == [
        "01-node-1-pod.default.client-eth0.pcapng", "02-node-1-node-1-vethaaaa.pcapng",
        "03-node-1-node-1-cni0.pcapng", "04-node-1-node-1-flannel.1.pcapng", "05-node-1-node-1-eth0.pcapng",
        "06-underlay-underlay-to-node-1.pcapng", "07-node-2-node-2-eth0.pcapng",
        "08-node-2-pod.default.web-2-eth0.pcapng", "all.pcapng"]
    merged = tshark(written[-1], "frame.interface_name", "vxlan.vni", "frame.comment")
    assert len(merged) == len(report.hops)  # the probe's copies only: the ARP frame is left out
    assert merged[0][0] == "node-1/pod.default.client/eth0" and merged[0][2].startswith("hop 1: request SYN")
    assert [r[1] for r in merged].count("1") == 4
    assert len(tshark(written[0], "frame.number")) == 2  # the request out and the reply in, on client's eth0


# --- the SVG -----------------------------------------------------------------------------------

def topology() -> svg.Topology:
    pods = [svg.PodBox(n, "default", node, ip, f"np.l.pod.default.{n}") for n, node, ip in
            (("client", "node-1", CLIENT), ("web-1", "node-1", WEB1), ("web-2", "node-2", WEB2))]
    return svg.Topology("l", "172.30.0.0/24", (("node-1", NODE1), ("node-2", NODE2)), tuple(pods), "172.30.0.2")


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_the_svg_draws_the_lab_and_every_hop_in_order():
    report = svc_report()
    root = ET.fromstring(svg.render(report, topology()))
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == "trace default/client -> svc/web"
    hops = [g for g in root.iter(f"{SVG}g") if "hop" in g.get("class", "").split()]
    assert [int(g.get("data-hop")) for g in hops] == list(range(1, len(report.hops) + 1))
    assert [g.get("class").split()[1] for g in hops] == [h.direction for h in report.hops]
    assert hops[4].find(f"{SVG}title").text.startswith("hop 5: node-1 node-1 eth0 out, request SYN")
    words = texts(root)
    for shown in ("node-1", "node-2", "client", "web-1", "web-2", "underlay/client", "flannel.1 (vni 1)", "cni0"):
        assert shown in words
    assert any("underlay switch br0" in w for w in words)
    # the NAT at the hop that first carries the endpoint, the tunnel with its VNI, outer addresses and port
    assert f"DNAT on node-1: {VIP}:80 \u2192 {WEB2}:8080" in [t.text for t in root.iter(f"{SVG}text")
                                                           if t.get("class") == "nat"]
    vxlan = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "vxlan"]
    assert any(f"VXLAN VNI 1, UDP 8472: request {NODE1} \u2192 {NODE2}" in v for v in vxlan)
    arrows = [p for p in root.iter(f"{SVG}path") if p.get("class", "").startswith("step")]
    assert len(arrows) == len(report.hops) - 1
    # request: into, along (2) and out of the tunnel; reply: into and out of it
    assert [i for i, p in enumerate(arrows, 2) if "vxlan" in p.get("class")] == [5, 6, 7, 8, 10, 11]
    rows = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "hop-row"]
    assert len(rows) == len(report.hops) and rows[0].startswith("hop 1: node-1 pod.default.client eth0 out")


def test_the_svg_needs_no_topology_and_escapes_text():
    report = render.Report("a <b> & 'c'", False, False, svc_report().hops[:3], [])
    root = ET.fromstring(svg.render(report))
    assert root.find(f"{SVG}title").text == "trace a <b> & 'c'"
    assert {"client", "node-1"} <= set(texts(root))
    assert "delivered: no; last seen in node-1 on cni0 (in)" in texts(root)
    empty = ET.fromstring(svg.render(render.Report("t", False, False)))
    assert "the probe was not seen anywhere" in texts(empty)


# --- capture's one-line summaries --------------------------------------------------------------

def test_a_summary_spells_out_what_vxlan_carries():
    line = live.ether(wrapped(syn()))
    assert line == (f"{NODE1}:51000 > {NODE2}:8472 udp vxlan vni 1: {CLIENT}:40000 > {WEB2}:8080 tcp SYN "
                    f"seq 123456, length 0")
    assert live.ether(bytes(Ether(**MAC) / ARP(op=1, psrc=NODE1, pdst=NODE2))) == f"arp who-has {NODE2} tell {NODE1}"
    assert live.ether(b"\x01\x02") == "short frame, length 2"
    rs = Ether(**MAC) / IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS()
    assert live.ether(bytes(rs)) == "fe80::1 > ff02::2 ipv6 ICMPv6 Neighbor Discovery - Router Solicitation, length 8"
    f = Frame(Place("np.l.node-1", "node-1"), "flannel.1", True, T0, 1, bytes(Ether(**MAC) / syn()))
    assert live.line(f).split()[1:4] == ["flannel.1", "out", f"{CLIENT}:40000"]


# --- in a lab, through the CLI -----------------------------------------------------------------

@on_labs("nftables")
def test_trace_across_nodes_writes_pcapng_tshark_decodes_and_an_svg(lab, tmp_path):
    run = cli(lab, "trace", "client", "web-2", "--pcap", str(tmp_path / "pcap"), "--svg", str(tmp_path / "t.svg"),
              "-o", "json", timeout=60)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["delivered"] and data["replied"]
    merged = tmp_path / "pcap" / "all.pcapng"
    rows = tshark(merged, "frame.interface_name", "vxlan.vni", "udp.dstport", "ip.src", "ip.dst")
    assert len(rows) == len(data["hops"])
    assert [r[0] for r in rows] == [pcap.interface_name(h["node"], h["netns"], h["interface"]) for h in data["hops"]]
    wrapped_rows = [r for r in rows if r[1]]
    assert wrapped_rows and all((r[1], r[2]) == ("1", "8472") for r in wrapped_rows)
    client = pod_ip(lab, "client")
    assert ("node-1/node-1/eth0", "1", "8472", f"{NODE1},{client}") in [tuple(r[:4]) for r in wrapped_rows]
    files = sorted(p.name for p in (tmp_path / "pcap").iterdir())
    assert files[0] == "01-node-1-pod.default.client-eth0.pcapng" and "all.pcapng" in files
    assert any(f.endswith("-node-2-node-2-flannel.1.pcapng") for f in files)
    places = {(h["netns"], h["interface"]) for h in data["hops"]}
    assert len(files) == len(places) + 1
    root = ET.parse(tmp_path / "t.svg").getroot()
    hops = [g for g in root.iter(f"{SVG}g") if "hop" in g.get("class", "").split()]
    assert len(hops) == len(data["hops"])
    assert any(p.get("class", "").endswith("vxlan") for p in root.iter(f"{SVG}path"))
    assert {"web-1", "web-2", "duo", "client"} <= set(texts(root))  # every pod of the lab, not only the path's


@on_labs("nftables")
def test_trace_count_sends_several_probes(lab):
    run = cli(lab, "trace", "client", "web-1", "--count", "2", timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("delivered: yes") == 2 and "2 probes: 2 delivered, 2 replied" in run.stdout


def start_capture(lab: str, *args: str) -> subprocess.Popen:
    """`netplane capture` running, once it says its socket is open."""
    proc = subprocess.Popen([NETPLANE, "--lab", lab, "capture", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stderr], [], [], 30)
    line = proc.stderr.readline() if ready else ""
    if not line.startswith("capturing in"):
        proc.kill()
        raise AssertionError(f"capture did not start: {line}{proc.communicate()}")
    return proc


def traffic_until_done(lab: str, proc: subprocess.Popen, url: str, timeout: float = 30) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        http(lab, "client", url)
        time.sleep(0.2)  # a request every 0.2 s is traffic enough, and few frames to print
    out, err = proc.communicate(timeout=10)
    return out, err


@on_labs("nftables")
def test_capture_on_flannel_writes_pcapng_while_curl_runs(lab, tmp_path):
    # -c 1 keeps whatever frame comes first: on a lab's young links that may be an IPv6 router
    # solicitation (the kernel sends them after link-up), so a few captures may be needed for the curl's
    web2 = pod_ip(lab, "web-2")
    found = []
    for attempt in range(5):
        out = tmp_path / f"f{attempt}.pcapng"
        proc = start_capture(lab, "node/node-1", "flannel.1", "-c", "1", "-w", str(out), "--seconds", "30")
        _, err = traffic_until_done(lab, proc, f"http://{web2}:8080/hostname")
        assert proc.returncode == 0 and "1 frame captured" in err
        [row] = tshark(out, "frame.interface_name", "ip.src", "ip.dst", "tcp.port")
        assert row[0] == "node-1/node-1/flannel.1"
        found.append(row)
        if web2 in (row[1], row[2]):
            break
    assert web2 in (found[-1][1], found[-1][2]) and "8080" in found[-1][3].split(","), found


@on_labs("nftables")
def test_capture_prints_vxlan_with_its_inner_header(lab):
    web2 = pod_ip(lab, "web-2")
    proc = start_capture(lab, "node/node-1", "eth0", "--seconds", "3")
    out, err = traffic_until_done(lab, proc, f"http://{web2}:8080/hostname")
    assert proc.returncode == 0 and "frames captured" in err
    assert any(" eth0 out " in line and f"udp vxlan vni 1: {pod_ip(lab, 'client')}:" in line
               and f"> {web2}:8080 tcp" in line for line in out.splitlines()), out


@on_labs("nftables")
def test_capture_stops_on_ctrl_c_with_a_complete_file(lab, tmp_path):
    out = tmp_path / "u.pcapng"
    proc = start_capture(lab, "underlay", "-w", str(out))
    http(lab, "client", f"http://{pod_ip(lab, 'web-2')}:8080/hostname")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "captured, written to" in err
    rows = tshark(out, "frame.interface_name", "vxlan.vni")
    assert rows and all(r[0].startswith("underlay/underlay/") for r in rows)
    assert any(r[1] == "1" for r in rows)


@on_labs("nftables")
def test_capture_says_what_is_wrong(lab):
    bad = cli(lab, "capture", "node/node-1", "nosuch0", "-c", "1")
    assert bad.returncode != 0 and "no interface 'nosuch0'" in bad.stderr and "flannel.1" in bad.stderr
    assert "no node 'node-9'" in cli(lab, "capture", "node/node-9").stderr
