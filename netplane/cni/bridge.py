"""netplane-bridge: the CNI bridge plugin's job, on netplane's netlink helpers.

ADD: take addresses from the network's IPAM, ensure the bridge (with the gateway when
``isGateway``) in the namespace the plugin runs in, make a veth pair in the pod's namespace and
move its host end onto the bridge, then give the pod end its addresses and routes. A failed ADD
releases the reservation and removes the veth. DEL releases and removes, and succeeds when either
is already gone. CHECK verifies, as the reference plugin does, that the bridge is up with the pod's
host veth as a port, and the pod's interface and addresses against prevResult.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import sys
from contextlib import suppress
from dataclasses import dataclass

from netplane import names
from netplane.cni import (IFNAME_RE, INTERNAL, INVALID_CONFIG, INVALID_ENVIRONMENT, UNKNOWN_CONTAINER, Args, CNIError,
                          cni_args, main)
from netplane.cni import ipam, masquerade
from netplane.kernel import links

TYPE = "netplane-bridge"
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Config:
    network: str
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    hairpin: bool
    promisc: bool
    ip_masq: bool
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
    return Config(conf["name"], bridge, _flag(conf, "isGateway") or default_gateway, default_gateway,
                  _flag(conf, "hairpinMode"), _flag(conf, "promiscMode"), _flag(conf, "ipMasq"), mtu, dns)


def _require_netns(path: str) -> None:
    """Refuse a missing pod namespace with the SPEC's code 3 before anything is reserved or made.

    CNI_NETNS is a path (/run/netns/NAME, /proc/PID/ns/net); links.opened takes it as it is."""
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


def _random_mac() -> str:
    """A random locally administered unicast MAC, as the kernel gives a veth end by itself.

    For a bridge it matters that the MAC is given: one given when the bridge is made stays
    (addr_assign_type NET_ADDR_SET); without one the kernel gives the bridge the lowest MAC among
    its ports, which changes as pods come and go and leaves the gateway's old MAC in every pod's
    neighbour table. For a veth, choosing it here saves asking the kernel for it afterwards."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def _ensure_bridge(host: links.Netlink, cfg: Config, gateways: list[Interface]) -> links.Link:
    """The bridge, made if missing (a parallel ADD may make it first), up (and promiscuous with
    promiscMode), holding the gateway addresses."""
    link = host.link(cfg.bridge) or host.add_bridge(cfg.bridge, _random_mac(), cfg.mtu)
    if link.kind != "bridge":
        raise CNIError(INTERNAL, f"{cfg.bridge} exists and is not a bridge")
    if not link.up or (cfg.promisc and not link.promiscuous):
        host.set_up(cfg.bridge, cfg.promisc)
    for gateway in gateways:
        host.add_address(cfg.bridge, gateway, replace=True)
    return link


MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def requested_mac(args: Args) -> str | None:
    """The pod interface's MAC asked for by ``MAC=`` in CNI_ARGS, as the reference bridge reads it."""
    mac = cni_args(args, ("MAC", "IP")).get("MAC")  # IP is the IPAM's
    if mac is not None and not MAC_RE.fullmatch(mac):
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS MAC {mac!r} is not a MAC address")
    return mac


def _make_veth(pod: links.Netlink, ifname: str, host_name: str, mtu: int | None,
               pod_mac: str | None = None) -> tuple[str, str]:
    """The MACs of a new veth pair's pod and host ends, the pod end made up in the pod's namespace
    (where ifname cannot clash with the node's own eth0), the peer in this thread's (a server
    thread enters the caller's)."""
    pod_mac, host_mac = pod_mac or _random_mac(), _random_mac()
    try:
        pod.add_veth(ifname, pod_mac, host_name, host_mac, mtu)
    except links.LinkExists as err:
        raise CNIError(INTERNAL, f"container interface {ifname} already exists") from err
    return pod_mac, host_mac


def _configure_pod(pod: links.Netlink, ifname: str, ips: list[tuple[Interface, Address]],
                   routes: list[dict]) -> None:
    for address, _ in ips:
        pod.add_address(ifname, address)
    gateways = {address.version: str(gateway) for address, gateway in ips}
    for route in routes:
        pod.add_route(route["dst"], ifname, route.get("gw") or gateways.get(ipaddress.ip_network(route["dst"]).version))


def _attach(cfg: Config, args: Args, ipam_result: dict) -> dict:
    """Plumb the pod onto the bridge with the IPAM's addresses; return the 1.0.0 result."""
    ips = _ips(ipam_result)
    if not ips:
        raise CNIError(INTERNAL, "the IPAM plugin returned no addresses")
    routes = _routes(cfg, ipam_result, ips)
    host_name = names.host_veth(args.container_id, args.ifname)
    gateways = [ipaddress.ip_interface((gw, a.network.prefixlen)) for a, gw in ips if cfg.is_gateway]
    with links.opened(None) as host, links.opened(args.netns) as pod:
        bridge = _ensure_bridge(host, cfg, gateways)
        pod_mac, host_mac = _make_veth(pod, args.ifname, host_name, cfg.mtu, requested_mac(args))
        try:
            host.set_port(host_name, bridge, cfg.hairpin)
            _configure_pod(pod, args.ifname, ips, routes)
            if cfg.ip_masq:
                masquerade.add(masquerade.Owner(cfg.network, args.container_id, args.ifname), [a for a, _ in ips])
        except BaseException:
            host.delete(host_name)
            raise
    return {
        "interfaces": [
            {"name": cfg.bridge, "mac": bridge.mac},
            {"name": host_name, "mac": host_mac},
            {"name": args.ifname, "mac": pod_mac, "sandbox": args.netns},
        ],
        "ips": [{"address": str(a), "gateway": str(gw), "interface": 2} for a, gw in ips],
        "routes": routes,
        "dns": cfg.dns,
    }


def _after(prev: object, own: dict) -> dict:
    """own appended to a chain's prevResult, which the SPEC says a plugin passes on: the earlier
    plugins' interfaces, addresses (whose interface indexes stay valid) and routes come first."""
    if not isinstance(prev, dict):
        return own
    earlier = list(prev.get("interfaces", []))
    ips = [ip | {"interface": ip["interface"] + len(earlier)} for ip in own["ips"]]
    return own | {"interfaces": earlier + own["interfaces"], "ips": list(prev.get("ips", [])) + ips,
                  "routes": list(prev.get("routes", [])) + own["routes"], "dns": own["dns"] or prev.get("dns", {})}


def add(args: Args, conf: dict) -> dict:
    cfg = parse_config(conf)
    _require_netns(args.netns)
    ipam_result = ipam.run("ADD", conf, args) or {}
    try:
        return _after(conf.get("prevResult"), _attach(cfg, args, ipam_result))
    except BaseException:
        with suppress(Exception):  # the error to report is the one that failed the ADD
            ipam.run("DEL", conf, args)
        raise


def delete(args: Args, conf: dict) -> None:
    cfg = parse_config(conf)
    ipam.run("DEL", conf, args)
    if cfg.ip_masq:
        masquerade.delete(masquerade.Owner(cfg.network, args.container_id, args.ifname))
    # Removing the host end removes the pod end; when the pod's namespace is gone, so is the pair.
    with links.opened(None) as host:
        host.delete(names.host_veth(args.container_id, args.ifname))


def _check_host_end(cfg: Config, args: Args) -> None:
    """The bridge is there and up, and the pod's host veth is one of its ports, as ADD left them."""
    host_name = names.host_veth(args.container_id, args.ifname)
    with links.opened(None) as host:
        bridge, veth = host.link(cfg.bridge), host.link(host_name)
    if bridge is None or bridge.kind != "bridge":
        raise CNIError(INTERNAL, f"bridge {cfg.bridge} is missing")
    if not bridge.up:
        raise CNIError(INTERNAL, f"bridge {cfg.bridge} is down")
    if veth is None:
        raise CNIError(INTERNAL, f"CNI veth {host_name} of {args.ifname} is missing")
    if veth.master != bridge.index:
            raise CNIError(INTERNAL, f"interface {host_name} is not attached to bridge {cfg.bridge}")


def check(args: Args, conf: dict) -> None:
    cfg = parse_config(conf)
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CNIError(INVALID_CONFIG, "CHECK needs prevResult")
    ipam.run("CHECK", conf, args)
    _require_netns(args.netns)
    _check_host_end(cfg, args)
    with links.opened(args.netns) as pod:
        if pod.link(args.ifname) is None:
            raise CNIError(INTERNAL, f"interface {args.ifname} is missing", args.netns)
        present = pod.addresses(args.ifname)
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
    valid = ipam.valid_attachments(conf)
    keep = {names.host_veth(c, i) for c, i in valid}
    ipam.run("GC", conf, args)
    if cfg.ip_masq:
        masquerade.gc(cfg.network, valid)
    with links.opened(None) as host:
        bridge = host.link(cfg.bridge)
        if bridge is None:
            return
        for link in host.links():
            if link.master == bridge.index and HOST_VETH_RE.fullmatch(link.name) and link.name not in keep:
                host.delete(link.name)


def status(args: Args, conf: dict) -> None:
    parse_config(conf)
    ipam.run("STATUS", conf, args)


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}

if __name__ == "__main__":
    sys.exit(main(HANDLERS))
