"""netplane's CNI plugins and runtime on the real kernel. Conventions for tests:

- one "node" namespace ``np.<lab>.node`` where the plugins run (``Runtime(exec_netns=node)``), and
  pods ``np.<lab>.pod-<n>``; the node's podCIDR is 10.244.1.0/24, cni0 holds the gateway
  10.244.1.1, the first pod gets 10.244.1.2; MTU 1450 (a VXLAN underlay's 1500 - 50);
- the IPAM's dataDir and the runtime's cache live under ``tmp_path``, never in /var/lib/cni;
- plugin calls that must fail before touching the kernel run in-process through the skel (``main``)
  with a netns path that is a plain file, so a mistake cannot plumb the test's own namespace.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netplane import names
from netplane.cni import bridge, ipam
from netplane.cni.runtime import Attachment, CNIError, Runtime, plugin_dir
from netplane.kernel import links, netns, sysctl

POD_CIDR = "10.244.1.0/24"
GATEWAY = "10.244.1.1"
MTU = 1450
REFERENCE_PLUGINS = "/usr/lib/cni"


def network(tmp_path: Path, version: str = "1.0.0", plugin: str = bridge.TYPE,
            ipam_type: str = ipam.TYPE) -> dict:
    """The conflist a kubelet passes for this node (see the module docstring)."""
    return {
        "cniVersion": version, "name": "netplane",
        "plugins": [{
            "type": plugin, "bridge": names.BRIDGE_IF, "isGateway": True, "isDefaultGateway": True,
            "hairpinMode": True, "mtu": MTU,
            "ipam": {"type": ipam_type, "ranges": [[{"subnet": POD_CIDR}]],
                     "dataDir": str(tmp_path / "ipam")},
        }],
    }


@pytest.fixture
def node(make_netns) -> str:
    return make_netns("node")


@pytest.fixture
def runtime(node: str, tmp_path: Path) -> Runtime:
    return Runtime([plugin_dir()], str(tmp_path / "cache"), exec_netns=node)


@pytest.fixture
def pod(make_netns, lab_name: str):
    """pod(n) makes namespace pod-<n> and returns its attachment (container id ``<lab>-pod<n>``)."""
    def make(n: int) -> Attachment:
        return Attachment(f"{lab_name}-pod{n}", netns.path(make_netns(f"pod-{n}")))
    return make


def reservations(tmp_path: Path) -> dict[str, bytes]:
    directory = tmp_path / "ipam" / "netplane"
    return {p.name: p.read_bytes() for p in directory.iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved_ip.")}


def addresses(ipr, ifname: str) -> set[tuple[str, int]]:
    found = ipr.get_addr(index=links.get(ipr, ifname)["index"])
    return {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in found}


def kind(link) -> str:
    return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")


def node_link(node: str, ifname: str):
    with links.netlink(node) as ipr:
        return links.get(ipr, ifname)


def call(handlers: dict, env: dict, stdin: str) -> tuple[int, dict]:
    """One in-process plugin call through the skel: exit status and the JSON it printed."""
    out = io.StringIO()
    status = bridge.main(handlers, env=env, stdin=io.StringIO(stdin), stdout=out)
    return status, json.loads(out.getvalue())


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_plumbs_the_pod_and_returns_the_spec_result(node, runtime, pod, tmp_path, version):
    conf, att = network(tmp_path, version), pod(1)
    result = asyncio.run(runtime.add(conf, att))

    host_veth = names.host_veth(att.container_id, "eth0")
    assert [i["name"] for i in result["interfaces"]] == ["cni0", host_veth, "eth0"]
    assert result["interfaces"][2]["sandbox"] == att.netns_path
    ip = {"address": "10.244.1.2/24", "gateway": GATEWAY, "interface": 2}
    assert result["ips"] == [ip | ({"version": "4"} if version < "1.0.0" else {})]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
    assert result["cniVersion"] == version and result["dns"] == {}

    with links.netlink(node) as ipr:
        cni0, veth = links.get(ipr, "cni0"), links.get(ipr, host_veth)
        assert kind(cni0) == "bridge"
        assert cni0.get_attr("IFLA_OPERSTATE") == "UP"
        assert cni0.get_attr("IFLA_ADDRESS") == result["interfaces"][0]["mac"]
        assert (GATEWAY, 24) in addresses(ipr, "cni0")
        assert veth.get_attr("IFLA_MASTER") == cni0["index"] and veth.get_attr("IFLA_MTU") == MTU
        assert veth.get_attr("IFLA_ADDRESS") == result["interfaces"][1]["mac"]
        port = ipr.brport("show", index=veth["index"])[0].get_attr("IFLA_PROTINFO")
        assert port.get_attr("IFLA_BRPORT_MODE") == 1  # hairpin
    with links.netlink(att.netns_path) as ipr:
        eth0 = links.get(ipr, "eth0")
        assert eth0.get_attr("IFLA_ADDRESS") == result["interfaces"][2]["mac"]
        assert eth0.get_attr("IFLA_MTU") == MTU and eth0.get_attr("IFLA_OPERSTATE") == "UP"
        assert ("10.244.1.2", 24) in addresses(ipr, "eth0")
        defaults = [r for r in ipr.get_routes(family=2, table=254) if r["dst_len"] == 0]
        assert [r.get_attr("RTA_GATEWAY") for r in defaults] == [GATEWAY]

    if version == "0.3.1":
        with pytest.raises(CNIError) as refused:
            asyncio.run(runtime.check(conf, att))
        assert refused.value.code == 1
    else:
        asyncio.run(runtime.check(conf, att))
        with links.netlink(att.netns_path) as ipr:
            ipr.addr("del", index=links.get(ipr, "eth0")["index"], address="10.244.1.2", prefixlen=24)
        with pytest.raises(CNIError, match="lacks"):
            asyncio.run(runtime.check(conf, att))


def test_two_pods_on_the_bridge_ping_each_other_and_the_gateway(node, runtime, pod, tmp_path):
    conf = network(tmp_path)
    first, second = pod(1), pod(2)
    r1 = asyncio.run(runtime.add(conf, first))
    r2 = asyncio.run(runtime.add(conf, second))
    ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (r1, r2))
    assert ip1 != ip2
    # The bridge keeps the MAC it was made with, whatever MACs its ports have.
    bridge_macs = {r1["interfaces"][0]["mac"], r2["interfaces"][0]["mac"]}
    assert bridge_macs == {node_link(node, "cni0").get_attr("IFLA_ADDRESS")}
    for att, target in ((first, ip2), (second, ip1), (first, GATEWAY)):
        ping = subprocess.run(["nsenter", f"--net={att.netns_path}", "ping", "-c1", "-W2", target],
                              capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr


def test_ipam_never_hands_out_network_broadcast_or_gateway(tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "netplane", "ipam": {
        "type": ipam.TYPE, "dataDir": str(tmp_path / "ipam"),
        "ranges": [[{"subnet": "10.9.0.0/29", "rangeStart": "10.9.0.0", "rangeEnd": "10.9.0.7",
                     "gateway": "10.9.0.3"}]],
    }}
    env = {"CNI_COMMAND": "ADD", "CNI_NETNS": "/unused", "CNI_IFNAME": "eth0", "CNI_PATH": "/unused"}
    handed = []
    for n in range(5):
        status, reply = call(ipam.HANDLERS, env | {"CNI_CONTAINERID": f"c{n}"}, json.dumps(conf))
        assert status == 0, reply
        assert reply["ips"][0]["gateway"] == "10.9.0.3"
        handed.append(reply["ips"][0]["address"])
    assert handed == ["10.9.0.1/29", "10.9.0.2/29", "10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]
    status, reply = call(ipam.HANDLERS, env | {"CNI_CONTAINERID": "c5"}, json.dumps(conf))
    assert status == 1 and reply["code"] == 999 and "no IP addresses available" in reply["msg"]
    assert reservations(tmp_path)["10.9.0.1"] == b"c0\r\neth0"  # host-local's format
    status, reply = call(ipam.HANDLERS, env | {"CNI_CONTAINERID": "c0"}, json.dumps(conf))
    assert status == 1 and "duplicate" in reply["msg"]


def test_parallel_adds_get_distinct_addresses(node, runtime, pod, tmp_path):
    conf, atts = network(tmp_path), [pod(n) for n in range(20)]

    async def add_all() -> list[dict]:
        return await asyncio.gather(*(runtime.add(conf, att) for att in atts))

    addresses = [r["ips"][0]["address"] for r in asyncio.run(add_all())]
    assert len(set(addresses)) == 20
    assert sorted(reservations(tmp_path)) == sorted(a.split("/")[0] for a in addresses)


def test_del_removes_veth_reservation_and_cache_and_is_idempotent(node, runtime, pod, tmp_path):
    conf, att = network(tmp_path), pod(1)
    asyncio.run(runtime.add(conf, att))
    assert reservations(tmp_path) and os.listdir(tmp_path / "cache")
    asyncio.run(runtime.delete(conf, att))
    assert node_link(node, names.host_veth(att.container_id)) is None
    assert reservations(tmp_path) == {} and os.listdir(tmp_path / "cache") == []
    asyncio.run(runtime.delete(conf, att))  # again: nothing left to do is fine

    gone = pod(2)
    asyncio.run(runtime.add(conf, gone))
    netns.delete(os.path.basename(gone.netns_path))
    asyncio.run(runtime.delete(conf, gone))
    assert reservations(tmp_path) == {}
    assert node_link(node, names.host_veth(gone.container_id)) is None


def test_failed_add_reports_the_spec_error_and_leaves_nothing(node, runtime, pod, tmp_path):
    conf, first = network(tmp_path), pod(1)
    asyncio.run(runtime.add(conf, first))
    before = reservations(tmp_path)

    same_ifname = Attachment("second", first.netns_path)  # eth0 already exists in that pod
    with pytest.raises(CNIError) as failed:
        asyncio.run(runtime.add(conf, same_ifname))
    assert (failed.value.plugin, failed.value.code) == ("netplane-bridge", 999)
    assert "already exists" in failed.value.msg and "netplane-bridge" in str(failed.value)
    assert node_link(node, names.host_veth("second")) is None

    # A host-end name taken on the node makes the move fail after the pair exists in the pod.
    blocked = pod(2)
    with links.netlink(node) as ipr:
        ipr.link("add", ifname=names.host_veth(blocked.container_id), kind="bridge")
    with pytest.raises(CNIError):
        asyncio.run(runtime.add(conf, blocked))
    with links.netlink(blocked.netns_path) as ipr:
        assert links.get(ipr, "eth0") is None
    assert kind(node_link(node, names.host_veth(blocked.container_id))) == "bridge"  # untouched
    assert reservations(tmp_path) == before
    assert os.listdir(tmp_path / "cache") == [f"netplane-{first.container_id}-eth0"]


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": plugin_dir()}
GOOD = {"cniVersion": "1.0.0", "name": "netplane", "type": bridge.TYPE,
        "ipam": {"type": ipam.TYPE, "subnet": POD_CIDR}}


@pytest.mark.parametrize("env, stdin, code", [
    ({}, GOOD, 4),
    ({"CNI_COMMAND": "FROB"}, GOOD, 4),
    ({"CNI_COMMAND": "ADD"}, GOOD, 4),
    (ADD_ENV | {"CNI_CONTAINERID": "../etc"}, GOOD, 4),
    (ADD_ENV | {"CNI_IFNAME": "a-name-longer-than-15"}, GOOD, 4),
    (ADD_ENV, "{not json", 6),
    (ADD_ENV, GOOD | {"cniVersion": "0.2.0"}, 1),
    (ADD_ENV, {k: v for k, v in GOOD.items() if k != "cniVersion"}, 1),
    (ADD_ENV | {"CNI_COMMAND": "CHECK"}, GOOD | {"cniVersion": "0.3.1"}, 1),
    (ADD_ENV, {k: v for k, v in GOOD.items() if k != "name"}, 7),
    (ADD_ENV, GOOD | {"mtu": "big"}, 7),
    (ADD_ENV, GOOD | {"isGateway": "yes"}, 7),
    (ADD_ENV, {k: v for k, v in GOOD.items() if k != "ipam"}, 7),
    (ADD_ENV, GOOD | {"ipam": {"type": ipam.TYPE, "subnet": "10.244.1.1/24"}}, 7),
    (ADD_ENV, GOOD | {"ipam": {"type": ipam.TYPE, "subnet": POD_CIDR, "rangeEnd": "10.9.0.9"}}, 7),
    (ADD_ENV | {"CNI_NETNS": "/run/netns/np.no-such-pod"}, GOOD, 3),
])
def test_errors_carry_the_spec_codes(tmp_path, env, stdin, code):
    plain_file = tmp_path / "not-a-netns"
    plain_file.touch()
    env = {"CNI_NETNS": str(plain_file)} | env if env.get("CNI_COMMAND") else env
    if isinstance(stdin, dict) and "ipam" in stdin:  # nothing may land in /var/lib/cni, even by mistake
        stdin = stdin | {"ipam": stdin["ipam"] | {"dataDir": str(tmp_path)}}
    stdin = stdin if isinstance(stdin, str) else json.dumps(stdin)
    status, reply = call(bridge.HANDLERS, env, stdin)
    assert status != 0 and reply["code"] == code and reply["msg"], reply
    assert reply["cniVersion"] in ("0.3.1", "1.0.0", "1.1.0")


@pytest.mark.parametrize("launcher", ["netplane-bridge", "netplane-host-local"])
def test_version_lists_the_supported_versions(launcher):
    done = subprocess.run([os.path.join(plugin_dir(), launcher)], input=b'{"cniVersion": "1.0.0"}',
                          env=dict(os.environ, CNI_COMMAND="VERSION"), capture_output=True, check=True)
    assert json.loads(done.stdout) == {"cniVersion": "1.1.0",
                                       "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


SPY = """#!{python}
# Records what the runtime handed it; ADD adds its tag to the prevResult's dns.search and prints it.
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(os.path.join(os.path.dirname(__file__), "log"), "a") as log:
    log.write(json.dumps({{"conf": conf, "env": env, "netns": os.stat("/proc/self/ns/net").st_ino}}) + "\\n")
if conf.get("fail"):
    sys.exit("told to fail")
if env["CNI_COMMAND"] == "ADD":
    prev = conf.get("prevResult", {{"cniVersion": conf["cniVersion"], "ips": [], "dns": {{"search": []}}}})
    json.dump(prev | {{"dns": {{"search": prev["dns"]["search"] + [conf["tag"]]}}}}, sys.stdout)
"""


def test_runtime_chains_a_plugin_list_in_the_exec_namespace(node, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "spy").write_text(SPY.format(python=sys.executable))
    (plugins / "spy").chmod(0o755)
    runtime = Runtime([str(plugins)], str(tmp_path / "cache"), exec_netns=node)
    conf = {"cniVersion": "1.0.0", "name": "chain",
            "plugins": [{"type": "spy", "tag": "a"}, {"type": "spy", "tag": "b"}]}
    att = Attachment("c1", "/run/netns/some-pod", "net1")

    result = asyncio.run(runtime.add(conf, att))
    asyncio.run(runtime.delete(conf, att))
    calls = [json.loads(line) for line in (plugins / "log").read_text().splitlines()]

    assert result["dns"]["search"] == ["a", "b"]
    order = [(c["env"]["CNI_COMMAND"], c["conf"]["tag"]) for c in calls]
    assert order == [("ADD", "a"), ("ADD", "b"), ("DEL", "b"), ("DEL", "a")]
    assert "prevResult" not in calls[0]["conf"] and calls[1]["conf"]["prevResult"]["dns"]["search"] == ["a"]
    assert calls[2]["conf"]["prevResult"] == calls[3]["conf"]["prevResult"] == result
    assert all(c["conf"]["name"] == "chain" and c["conf"]["cniVersion"] == "1.0.0" for c in calls)
    assert calls[0]["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "net1",
                               "CNI_NETNS": "/run/netns/some-pod", "CNI_PATH": str(plugins), "CNI_ARGS": ""}
    assert {c["netns"] for c in calls} == {netns.inode(node)}
    assert os.listdir(tmp_path / "cache") == []

    with pytest.raises(CNIError) as failed:
        asyncio.run(runtime.add(conf | {"plugins": [{"type": "spy", "tag": "a", "fail": True}]}, att))
    assert (failed.value.plugin, failed.value.code) == ("spy", 0) and "told to fail" in failed.value.details
    with pytest.raises(CNIError, match="not found"):
        asyncio.run(runtime.add(conf | {"plugins": [{"type": "no-such-plugin"}]}, att))


@pytest.mark.parametrize("plugin, ipam_type", [(bridge.TYPE, "host-local"), ("bridge", ipam.TYPE)])
def test_interoperates_with_the_reference_plugins(node, pod, tmp_path, plugin, ipam_type):
    runtime = Runtime([plugin_dir(), REFERENCE_PLUGINS], str(tmp_path / "cache"), exec_netns=node)
    conf, att = network(tmp_path, plugin=plugin, ipam_type=ipam_type), pod(1)
    result = asyncio.run(runtime.add(conf, att))
    assert result["ips"][0]["address"] == "10.244.1.2/24"
    assert reservations(tmp_path) == {"10.244.1.2": f"{att.container_id}\r\neth0".encode()}
    with links.netlink(att.netns_path) as ipr:
        assert ("10.244.1.2", 24) in addresses(ipr, "eth0")
    asyncio.run(runtime.delete(conf, att))
    assert reservations(tmp_path) == {}
    assert node_link(node, result["interfaces"][1]["name"]) is None


def test_gc_keeps_the_valid_attachments_and_drops_the_rest(node, runtime, pod, tmp_path):
    """CNI 1.1 GC through the runtime: the stale attachment's veth, reservation and cache go; the
    valid one keeps all three. A reservation nobody's cache knows of goes too (the plugins' GC)."""
    conf = network(tmp_path, "1.1.0")
    keep, stale, lost = pod(1), pod(2), pod(3)
    for att in (keep, stale, lost):
        asyncio.run(runtime.add(conf, att))
    (tmp_path / "cache" / f"netplane-{lost.container_id}-eth0").unlink()  # only the plugins can find it now
    orphan = tmp_path / "ipam" / "netplane" / "10.244.1.200"
    orphan.write_bytes(b"gone-long-ago\r\neth0")
    asyncio.run(runtime.gc(conf, [keep]))
    assert node_link(node, names.host_veth(keep.container_id)) is not None
    assert node_link(node, names.host_veth(stale.container_id)) is None
    assert node_link(node, names.host_veth(lost.container_id)) is None
    assert set(reservations(tmp_path).values()) == {f"{keep.container_id}\r\neth0".encode()}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"netplane-{keep.container_id}-eth0"]
    with pytest.raises(CNIError) as refused:
        asyncio.run(runtime.gc(network(tmp_path, "1.0.0"), [keep]))
    assert refused.value.code == 1  # GC came with 1.1.0


def test_status_is_fine_until_the_range_is_full(node, runtime, tmp_path):
    conf = network(tmp_path, "1.1.0")
    asyncio.run(runtime.status(conf))
    directory = tmp_path / "ipam" / "netplane"
    directory.mkdir(parents=True, exist_ok=True)
    for host in range(2, 255):  # every usable address of 10.244.1.0/24 but the gateway
        (directory / f"10.244.1.{host}").write_bytes(b"someone\r\neth0")
    with pytest.raises(CNIError) as unavailable:
        asyncio.run(runtime.status(conf))
    assert unavailable.value.code == 50 and unavailable.value.plugin == bridge.TYPE


def test_the_cli_attaches_checks_and_detaches_a_namespace_as_cnitool_does(node, pod, tmp_path):
    from labtools import NETPLANE
    conf = tmp_path / "net.conflist"
    conf.write_text(json.dumps(network(tmp_path)))
    att = pod(1)
    space = os.path.basename(att.netns_path)

    def cni(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([NETPLANE, "cni", command, space, "--conf", str(conf), "--host-netns", node],
                              capture_output=True, text=True, timeout=30)

    added = cni("add")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["ips"][0]["address"] == "10.244.1.2/24"
    assert cni("check").returncode == 0
    assert cni("del").returncode == 0 and reservations(tmp_path) == {}
    assert not [link for link in links_of(node) if link.startswith("veth")]
    refused = subprocess.run([NETPLANE, "cni", "add", "np.no-such-ns", "--conf", str(conf)], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode != 0 and "no network namespace 'np.no-such-ns'" in refused.stderr


def links_of(space: str) -> list[str]:
    with links.netlink(space) as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


def peer_seen_by(server_ns: str, client_ns: str, address: str) -> str | None:
    """The source address a TCP server in server_ns sees when client_ns connects to address:80;
    None when the connection cannot be made (no way back without masquerading)."""
    listener = netns.socket_in(server_ns, socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, 80))
        listener.listen(1)
        listener.settimeout(3)
        client = netns.socket_in(client_ns, socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.settimeout(2)
            try:
                client.connect((address, 80))
            except OSError:
                return None
            conn, peer = listener.accept()
            conn.close()
            return peer[0]


def test_ip_masq_masquerades_what_leaves_the_pod_subnet_until_del(node, runtime, pod, make_netns, tmp_path):
    conf = network(tmp_path)
    conf["plugins"][0] |= {"ipMasq": True, "promiscMode": True}
    outside = make_netns("outside")  # a host beyond the node, on 10.99.0.0/24
    with links.netlink(node) as ipr:
        ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns.path(outside)})
        ipr.addr("add", index=links.index(ipr, "up0"), address="10.99.0.1", prefixlen=24)
        ipr.link("set", index=links.index(ipr, "up0"), state="up")
    with links.netlink(outside) as ipr:
        ipr.addr("add", index=links.index(ipr, "eth0"), address="10.99.0.2", prefixlen=24)
        ipr.link("set", index=links.index(ipr, "eth0"), state="up")
    sysctl.write(node, {"net.ipv4.ip_forward": "1"})
    first, second = pod(1), pod(2)
    asyncio.run(runtime.add(conf, first))
    r2 = asyncio.run(runtime.add(conf, second))

    assert node_link(node, "cni0")["flags"] & links.IFF_PROMISC  # promiscMode
    assert peer_seen_by(os.path.basename(outside), os.path.basename(first.netns_path), "10.99.0.2") == "10.99.0.1"
    ip2 = r2["ips"][0]["address"].split("/")[0]
    inside = peer_seen_by(os.path.basename(second.netns_path), os.path.basename(first.netns_path), ip2)
    assert inside == "10.244.1.2"  # within the pod subnet the source stays the pod's

    asyncio.run(runtime.delete(conf, first))
    table = subprocess.run(["nsenter", f"--net={netns.path(node)}", "nft", "list", "table", "ip", "netplane-ipmasq"],
                           capture_output=True, text=True, check=True).stdout
    assert ip2 in table and "10.244.1.2" not in table and first.container_id not in table


def test_add_passes_on_the_chain_s_prev_result(node, pod, tmp_path):
    """SPEC "Success": a plugin given a prevResult outputs it, with its own changes."""
    att = pod(1)
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "foo0", "mac": "02:00:00:00:00:01", "sandbox": att.netns_path}],
            "ips": [{"address": "10.50.0.5/24", "interface": 0}], "routes": [{"dst": "10.50.0.0/16"}],
            "dns": {"nameservers": ["10.50.0.53"]}}
    conf = network(tmp_path)["plugins"][0] | {"cniVersion": "1.0.0", "name": "netplane", "prevResult": prev}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": plugin_dir()}
    status, result = netns.run_in(node, lambda: call(bridge.HANDLERS, env, json.dumps(conf)))
    assert status == 0, result
    assert [i["name"] for i in result["interfaces"]] == ["foo0", "cni0", names.host_veth(att.container_id), "eth0"]
    assert result["ips"] == [{"address": "10.50.0.5/24", "interface": 0},
                             {"address": "10.244.1.2/24", "gateway": GATEWAY, "interface": 3}]
    assert result["routes"] == [{"dst": "10.50.0.0/16"}, {"dst": "0.0.0.0/0", "gw": GATEWAY}]
    assert result["dns"] == prev["dns"]


@pytest.mark.parametrize("plugin, ipam_type", [(bridge.TYPE, ipam.TYPE), ("bridge", "host-local")])
def test_check_fails_once_the_pod_is_off_the_bridge_and_add_takes_the_ip_and_mac_asked_for(
        node, pod, tmp_path, plugin, ipam_type):
    """What the kubelet's repair stands on, the same with netplane's plugins and the reference ones:
    CHECK sees a veth taken off the bridge and a deleted bridge; ADD honours CNI_ARGS IP and MAC."""
    runtime = Runtime([plugin_dir(), REFERENCE_PLUGINS], str(tmp_path / "cache"), exec_netns=node)
    conf, att = network(tmp_path, plugin=plugin, ipam_type=ipam_type), pod(1)
    host_veth = asyncio.run(runtime.add(conf, att))["interfaces"][1]["name"]
    asyncio.run(runtime.check(conf, att))
    for damage in (["link", "set", host_veth, "nomaster"], ["link", "del", names.BRIDGE_IF]):
        subprocess.run(netns.command(node, ["ip", *damage]), check=True)
        with pytest.raises(CNIError):
            asyncio.run(runtime.check(conf, att))
    asyncio.run(runtime.delete(conf, att))
    again = Attachment(att.container_id, att.netns_path, args="IgnoreUnknown=1;IP=10.244.1.7;MAC=02:42:0a:f4:01:07")
    result = asyncio.run(runtime.add(conf, again))
    assert result["ips"][0]["address"] == "10.244.1.7/24"
    with links.netlink(att.netns_path) as ipr:
        assert links.get(ipr, "eth0").get_attr("IFLA_ADDRESS") == "02:42:0a:f4:01:07"
    asyncio.run(runtime.check(conf, att))
    other = pod(2)
    with pytest.raises(CNIError):  # another pod asking for a held address
        asyncio.run(runtime.add(conf, Attachment(other.container_id, other.netns_path,
                                                 args="IgnoreUnknown=1;IP=10.244.1.7")))


def test_cni_args_with_a_key_the_plugin_does_not_know_is_refused_unless_ignore_unknown(tmp_path):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": str(tmp_path / "ns"), "CNI_IFNAME": "eth0",
           "CNI_PATH": plugin_dir(), "CNI_ARGS": "K8S_POD_NAME=web"}
    (tmp_path / "ns").write_text("")
    conf = json.dumps(network(tmp_path)["plugins"][0] | {"name": "netplane", "cniVersion": "1.0.0"})
    status, reply = call(ipam.HANDLERS, env, conf)
    assert status != 0 and reply["code"] == 4 and "K8S_POD_NAME" in reply["msg"]
    status, reply = call(ipam.HANDLERS, env | {"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.244.1.9"}, conf)
    assert status == 0 and reply["ips"][0]["address"] == "10.244.1.9/24"
