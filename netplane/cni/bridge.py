"""netplane-bridge: the CNI bridge plugin's job, on netplane's netlink helpers.

ADD: take addresses from the network's IPAM, ensure the bridge (with the gateway when
``isGateway``) in the namespace the plugin runs in, make a veth pair in the pod's namespace and
move its host end onto the bridge, then give the pod end its addresses and routes. A failed ADD
releases the reservation and removes the veth. DEL releases and removes, and succeeds when either
is already gone. CHECK verifies the pod's interface and addresses against prevResult.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import secrets
import sys
from contextlib import suppress
from dataclasses import dataclass

from netplane import names
from netplane.cni import IFNAME_RE, INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER, Args, CNIError, main
from netplane.cni import ipam
from netplane.kernel import links

TYPE = "netplane-bridge"
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Config:
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    hairpin: bool
    mtu: int | None
    dns: dict


def _flag(conf: dict, key: str) -> bool:
    value = conf.get(key, False)
    if not isinstance(value, bool):
        raise CNIError(INVALID_CONFIG, f"{key} must be true or false")
    return value


def parse_config(conf: dict) -> Config:
    """The bridge plugin's fields of a network configuration, validated (code 7)."""
    if not isinstance(conf.get("name"), str) or not conf["name"]:
        raise CNIError(INVALID_CONFIG, "the network config has no name")
    bridge = conf.get("bridge", names.BRIDGE_IF)
    if not isinstance(bridge, str) or not IFNAME_RE.match(bridge):
        raise CNIError(INVALID_CONFIG, f"bridge {bridge!r} is not an interface name")
    mtu = conf.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise CNIError(INVALID_CONFIG, f"mtu {mtu!r} is not between 68 and 65535")
    dns = conf.get("dns", {})
    if not isinstance(dns, dict):
        raise CNIError(INVALID_CONFIG, "dns must be an object")
    default_gateway = _flag(conf, "isDefaultGateway")  # a default gateway is a gateway, as upstream
    return Config(bridge, _flag(conf, "isGateway") or default_gateway, default_gateway,
                  _flag(conf, "hairpinMode"), mtu, dns)


def _require_netns(path: str) -> None:
    """Refuse a missing pod namespace with the SPEC's code 3 before anything is reserved or made.

    CNI_NETNS is a path (/run/netns/NAME, /proc/PID/ns/net); links.netlink takes it as it is."""
    if not os.path.exists(path):
        raise CNIError(UNKNOWN_CONTAINER, "the container's network namespace does not exist", path)


def _ips(ipam_result: dict) -> list[tuple[Interface, Address]]:
    """The IPAM result's addresses, each with its gateway (the subnet's first address if unset)."""
    found = []
    for ip in ipam_result.get("ips", []):
        address = ipaddress.ip_interface(ip["address"])
        found.append((address, ipaddress.ip_address(ip.get("gateway") or address.network[1])))
    return found


def _routes(cfg: Config, ipam_result: dict, ips: list[tuple[Interface, Address]]) -> list[dict]:
    routes = list(ipam_result.get("routes", []))
    if cfg.is_default_gateway:
        for address, gateway in ips:
            default = "0.0.0.0/0" if address.version == 4 else "::/0"
            if all(route["dst"] != default for route in routes):
                routes.append({"dst": default, "gw": str(gateway)})
    return routes


def _bridge_mac() -> str:
    """A random locally administered MAC for a new bridge.

    A MAC given when the bridge is made stays (addr_assign_type NET_ADDR_SET); without one the
    kernel gives the bridge the lowest MAC among its ports, which changes as pods come and go and
    leaves the gateway's old MAC in every pod's neighbour table."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def _ensure_bridge(host: links.IPRoute, cfg: Config, gateways: list[Interface]) -> int:
    """The bridge's index, made if missing, up, holding the gateway addresses."""
    link = links.get(host, cfg.bridge)
    if link is None:
        with links.tolerate(errno.EEXIST):  # a parallel ADD may make it first
            host.link("add", ifname=cfg.bridge, kind="bridge", address=_bridge_mac(),
                      **({"mtu": cfg.mtu} if cfg.mtu else {}))
        link = links.get(host, cfg.bridge)
    if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
        raise CNIError(INTERNAL, f"{cfg.bridge} exists and is not a bridge")
    host.link("set", index=link["index"], state="up")
    for gateway in gateways:
        host.addr("replace", index=link["index"], address=str(gateway.ip),
                  prefixlen=gateway.network.prefixlen)
    return link["index"]


def _make_veth(pod: links.IPRoute, host: links.IPRoute, ifname: str, host_name: str,
               mtu: int | None) -> tuple[links.ifinfmsg, links.ifinfmsg]:
    """The pod and host ends of a new veth pair, made in the pod's namespace (where ifname cannot
    clash with the node's own eth0) and the host end moved out, then looked up again there."""
    size = {"mtu": mtu} if mtu else {}
    try:
        pod.link("add", ifname=ifname, kind="veth", peer={"ifname": host_name, **size}, **size)
    except Exception as err:
        if links.get(pod, ifname) is not None:
            raise CNIError(INTERNAL, f"container interface {ifname} already exists") from err
        raise
    pod_end = links.get(pod, ifname)
    try:
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            pod.link("set", index=links.get(pod, host_name)["index"], net_ns_fd=own)
        finally:
            os.close(own)
        return pod_end, links.get(host, host_name)
    except BaseException:
        pod.link("del", index=pod_end["index"])
        raise


def _configure_pod(pod: links.IPRoute, index: int, ips: list[tuple[Interface, Address]],
                   routes: list[dict]) -> None:
    pod.link("set", index=index, state="up")
    for address, _ in ips:
        pod.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    gateways = {address.version: str(gateway) for address, gateway in ips}
    for route in routes:
        gateway = route.get("gw") or gateways.get(ipaddress.ip_network(route["dst"]).version)
        pod.route("add", dst=route["dst"], oif=index, **({"gateway": gateway} if gateway else {}))


def _mac(link: links.ifinfmsg) -> str:
    return link.get_attr("IFLA_ADDRESS")


def _attach(cfg: Config, args: Args, ipam_result: dict) -> dict:
    """Plumb the pod onto the bridge with the IPAM's addresses; return the 1.0.0 result."""
    ips = _ips(ipam_result)
    if not ips:
        raise CNIError(INTERNAL, "the IPAM plugin returned no addresses")
    routes = _routes(cfg, ipam_result, ips)
    host_name = names.host_veth(args.container_id, args.ifname)
    gateways = [ipaddress.ip_interface((gw, a.network.prefixlen)) for a, gw in ips if cfg.is_gateway]
    with links.netlink(None) as host, links.netlink(args.netns) as pod:
        bridge = _ensure_bridge(host, cfg, gateways)
        pod_end, host_end = _make_veth(pod, host, args.ifname, host_name, cfg.mtu)
        try:
            host.link("set", index=host_end["index"], master=bridge, state="up")
            if cfg.hairpin:
                host.brport("set", index=host_end["index"], mode=1)
            _configure_pod(pod, pod_end["index"], ips, routes)
        except BaseException:
            host.link("del", index=host_end["index"])
            raise
        bridge_mac = _mac(host.link("get", index=bridge)[0])
    return {
        "interfaces": [
            {"name": cfg.bridge, "mac": bridge_mac},
            {"name": host_name, "mac": _mac(host_end)},
            {"name": args.ifname, "mac": _mac(pod_end), "sandbox": args.netns},
        ],
        "ips": [{"address": str(a), "gateway": str(gw), "interface": 2} for a, gw in ips],
        "routes": routes,
        "dns": cfg.dns,
    }


def add(args: Args, conf: dict) -> dict:
    cfg = parse_config(conf)
    _require_netns(args.netns)
    ipam_result = ipam.run("ADD", conf, args) or {}
    try:
        return _attach(cfg, args, ipam_result)
    except BaseException:
        with suppress(Exception):  # the error to report is the one that failed the ADD
            ipam.run("DEL", conf, args)
        raise


def delete(args: Args, conf: dict) -> None:
    parse_config(conf)
    ipam.run("DEL", conf, args)
    # Removing the host end removes the pod end; when the pod's namespace is gone, so is the pair.
    with links.netlink(None) as host, links.tolerate(errno.ENODEV):
        host.link("del", ifname=names.host_veth(args.container_id, args.ifname))


def check(args: Args, conf: dict) -> None:
    parse_config(conf)
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CNIError(INVALID_CONFIG, "CHECK needs prevResult")
    ipam.run("CHECK", conf, args)
    _require_netns(args.netns)
    with links.netlink(args.netns) as pod:
        link = links.get(pod, args.ifname)
        if link is None:
            raise CNIError(INTERNAL, f"interface {args.ifname} is missing", args.netns)
        present = {ipaddress.ip_interface((a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
                   for a in pod.get_addr(index=link["index"])}
    interfaces = prev.get("interfaces", [])
    wanted = {ipaddress.ip_interface(ip["address"]) for ip in prev.get("ips", [])
              if ip.get("interface") is not None
              and interfaces[ip["interface"]].get("name") == args.ifname}
    if wanted - present:
        raise CNIError(INTERNAL, f"interface {args.ifname} lacks {sorted(map(str, wanted - present))}")


HOST_VETH_RE = re.compile(r"veth[0-9a-f]{8}")  # names.host_veth's shape: the ports this plugin made


def gc(args: Args, conf: dict) -> None:
    """Remove the bridge's veths and the IPAM reservations of attachments that are not valid."""
    cfg = parse_config(conf)
    keep = {names.host_veth(c, i) for c, i in ipam.valid_attachments(conf)}
    ipam.run("GC", conf, args)
    with links.netlink(None) as host:
        bridge = links.get(host, cfg.bridge)
        if bridge is None:
            return
        for link in host.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if link.get_attr("IFLA_MASTER") == bridge["index"] and HOST_VETH_RE.fullmatch(name) and name not in keep:
                with links.tolerate(errno.ENODEV):
                    host.link("del", index=link["index"])


def status(args: Args, conf: dict) -> None:
    parse_config(conf)
    ipam.run("STATUS", conf, args)


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}

if __name__ == "__main__":
    sys.exit(main(HANDLERS))
