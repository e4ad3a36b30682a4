"""netplane-host-local: an IPAM plugin that keeps host-local's configuration and on-disk state.

``<dataDir>/<network>/<ip>`` holds ``<container id>\\r\\n<ifname>`` for each reservation,
``last_reserved_ip.<n>`` the last address taken from range set n (allocation is round-robin from
there), and ``lock`` the flock every change holds, the same file host-local locks: both plugins can
share a directory and parallel ADDs never take the same address. The bridge plugin calls this
module in-process (``run``); ``python -m netplane.cni.ipam`` is the plugin for other runtimes.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netplane.cni import (INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, Args, CNIError, cni_args, find_plugin, main,
                          parse_output)
from netplane.kernel import programs

TYPE = "netplane-host-local"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
LAST_RESERVED = "last_reserved_ip."
LOCK = "lock"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Range:
    subnet: Network
    start: Address
    end: Address
    gateway: Address

    def holds(self, ip: Address) -> bool:
        """Whether ip lies in this range (its subnet, from start to end)."""
        return ip in self.subnet and int(self.start) <= int(ip) <= int(self.end)

    def usable(self, ip: Address) -> bool:
        """Whether ip may be handed out: never the network, broadcast or gateway address."""
        broadcast = self.subnet.broadcast_address if self.subnet.version == 4 else None
        return ip not in (self.subnet.network_address, broadcast, self.gateway)


@dataclass(frozen=True)
class Config:
    range_sets: tuple[tuple[Range, ...], ...]
    routes: tuple[dict, ...]
    directory: Path  # <dataDir>/<network name>


def _invalid(field: str, problem: object) -> CNIError:
    return CNIError(INVALID_CONFIG, f"ipam.{field}: {problem}")


def _address(value: object, field: str) -> Address:
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError as err:
        raise _invalid(field, err) from None


def _range(spec: object, field: str) -> Range:
    if not isinstance(spec, dict) or "subnet" not in spec:
        raise _invalid(field, "a range needs a subnet")
    try:
        subnet = ipaddress.ip_network(spec["subnet"])
    except ValueError as err:  # also a subnet with host bits set, as host-local refuses it
        raise _invalid(f"{field}.subnet", err) from None
    if subnet.num_addresses < 4:
        raise _invalid(f"{field}.subnet", f"{subnet} is too small to allocate from")
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    start = _address(spec.get("rangeStart", subnet.network_address + 1), f"{field}.rangeStart")
    end = _address(spec.get("rangeEnd", last), f"{field}.rangeEnd")
    gateway = _address(spec.get("gateway", subnet.network_address + 1), f"{field}.gateway")
    if start not in subnet or end not in subnet or start > end:
        raise _invalid(field, f"range {start}-{end} is not an ordered range inside {subnet}")
    return Range(subnet, start, end, gateway)


def _route(spec: object, field: str) -> dict:
    if not isinstance(spec, dict) or "dst" not in spec:
        raise _invalid(field, "a route needs a dst")
    try:
        route = {"dst": str(ipaddress.ip_network(spec["dst"], strict=False))}
    except ValueError as err:
        raise _invalid(f"{field}.dst", err) from None
    return route | ({"gw": str(_address(spec["gw"], f"{field}.gw"))} if spec.get("gw") else {})


def parse_config(conf: dict) -> Config:
    """The IPAM section of a network configuration, validated (code 7 names the bad field)."""
    network, ipam = conf.get("name"), conf.get("ipam")
    if not isinstance(network, str) or not NETWORK_NAME_RE.match(network):
        raise CNIError(INVALID_CONFIG, f"network name {network!r} is missing or invalid")
    if not isinstance(ipam, dict):
        raise CNIError(INVALID_CONFIG, "the network config has no ipam section")
    # host-local's older form: one range at the top level of the ipam section.
    sets = ipam.get("ranges") or ([[ipam]] if "subnet" in ipam else None)
    if not isinstance(sets, list) or not all(isinstance(s, list) and s for s in sets):
        raise _invalid("ranges", "must be a non-empty list of non-empty range sets")
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise _invalid("routes", "must be a list")
    return Config(
        tuple(tuple(_range(r, f"ranges[{i}][{j}]") for j, r in enumerate(s)) for i, s in enumerate(sets)),
        tuple(_route(r, f"routes[{i}]") for i, r in enumerate(routes)),
        Path(ipam.get("dataDir") or DEFAULT_DATA_DIR) / network,
    )


def _candidates(ranges: tuple[Range, ...], last: Address | None) -> Iterator[tuple[Range, Address]]:
    """Every usable address of a range set once, starting after last (host-local's round-robin)."""
    spans = [(r, int(r.start), int(r.end)) for r in ranges]
    here = next((i for i, (r, _, _) in enumerate(spans) if last is not None and r.holds(last)), None)
    if here is not None:
        r, lo, hi = spans[here]
        spans = [(r, int(last) + 1, hi), *spans[here + 1:], *spans[:here], (r, lo, int(last))]
    for r, lo, hi in spans:
        for n in range(lo, hi + 1):
            ip = type(r.start)(n)
            if r.usable(ip):
                yield r, ip


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _owner(args: Args) -> bytes:
    return f"{args.container_id}\r\n{args.ifname}".encode()


def _reservations(directory: Path) -> Iterator[tuple[Path, bytes]]:
    """Each reservation file and the owner written in it (container id CR LF interface)."""
    with os.scandir(directory) as entries:  # plain os calls: a node may hold hundreds of these
        for entry in entries:
            if entry.name == LOCK or entry.name.startswith(LAST_RESERVED):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                yield Path(entry.path), os.read(fd, 4096).strip()
            finally:
                os.close(fd)


def _reserved_by(directory: Path, args: Args) -> list[Address]:
    """The addresses reserved for this container and interface."""
    owner = _owner(args)
    return [ipaddress.ip_address(entry.name) for entry, held in _reservations(directory) if held == owner]


def requested_ips(args: Args) -> list[Address]:
    """The addresses asked for by ``IP=a[,b]`` in CNI_ARGS, as host-local reads them."""
    wanted = cni_args(args, ("IP",)).get("IP", "")
    return [_address(ip, "CNI_ARGS IP") for ip in wanted.split(",") if ip]


def _reserve_requested(directory: Path, ranges: tuple[Range, ...], ip: Address, args: Args) -> dict:
    """The requested address from this range set, or an error when another holds it."""
    r = next(r for r in ranges if r.holds(ip))
    if not r.usable(ip):
        raise CNIError(INTERNAL, f"requested IP address {ip} is not usable in {r.subnet}")
    try:
        fd = os.open(directory / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise CNIError(INTERNAL, f"requested IP address {ip} is not available in range set "
                                 f"{r.start}-{r.end}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(_owner(args))
    return {"address": f"{ip}/{r.subnet.prefixlen}", "gateway": str(r.gateway)}


def _in_set(ranges: tuple[Range, ...], ip: Address) -> bool:
    return any(r.holds(ip) for r in ranges)


def _reserve(directory: Path, index: int, ranges: tuple[Range, ...], args: Args,
             requested: list[Address]) -> dict:
    """An address from range set `index`: the one requested in it, else the next round-robin one."""
    wanted = next((ip for ip in requested if _in_set(ranges, ip)), None)
    if wanted is not None:
        return _reserve_requested(directory, ranges, wanted, args)
    last_file = directory / f"{LAST_RESERVED}{index}"
    try:
        last = ipaddress.ip_address(last_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        last = None
    for r, ip in _candidates(ranges, last):
        try:
            fd = os.open(directory / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(_owner(args))
        last_file.write_text(str(ip))
        return {"address": f"{ip}/{r.subnet.prefixlen}", "gateway": str(r.gateway)}
    spans = ", ".join(f"{r.start}-{r.end}" for r in ranges)
    raise CNIError(INTERNAL, f"failed to allocate for range {index}: no IP addresses available in {spans}")


def add(args: Args, conf: dict) -> dict:
    """Reserve one address from each range set, the requested ones (CNI_ARGS IP) where asked; all or none."""
    cfg = parse_config(conf)
    requested = requested_ips(args)
    stray = [ip for ip in requested if not any(_in_set(ranges, ip) for ranges in cfg.range_sets)]
    if stray:
        raise CNIError(INTERNAL, f"requested IP address {stray[0]} is not in any range set of the network")
    with _locked(cfg.directory):
        held = _reserved_by(cfg.directory, args)
        if held:
            raise CNIError(INTERNAL, f"{held[0]} is already reserved for {args.container_id} "
                                     f"{args.ifname}; duplicate allocation is not allowed")
        try:
            ips = [_reserve(cfg.directory, i, ranges, args, requested)
                   for i, ranges in enumerate(cfg.range_sets)]
        except BaseException:
            _release(cfg.directory, args)
            raise
    return {"ips": ips, "routes": list(cfg.routes), "dns": {}}


def _release(directory: Path, args: Args) -> None:
    for ip in _reserved_by(directory, args):
        (directory / str(ip)).unlink(missing_ok=True)


def delete(args: Args, conf: dict) -> None:
    """Release what this container and interface hold; nothing held is fine."""
    cfg = parse_config(conf)
    if cfg.directory.is_dir():
        with _locked(cfg.directory):
            _release(cfg.directory, args)


def check(args: Args, conf: dict) -> None:
    """Fail unless this container and interface hold a reservation."""
    cfg = parse_config(conf)
    if not cfg.directory.is_dir() or not _reserved_by(cfg.directory, args):
        raise CNIError(INTERNAL, f"no address is reserved for {args.container_id} {args.ifname}")


def valid_attachments(conf: dict) -> set[tuple[str, str]]:
    """(container id, interface) of every attachment GC must keep (`cni.dev/valid-attachments`)."""
    found = conf.get("cni.dev/valid-attachments", [])
    if not isinstance(found, list) or not all(isinstance(a, dict) for a in found):
        raise CNIError(INVALID_CONFIG, "cni.dev/valid-attachments must be a list of {containerID, ifname}")
    return {(str(a.get("containerID")), str(a.get("ifname"))) for a in found}


def gc(args: Args, conf: dict) -> None:
    """Release every reservation whose attachment is not among the valid ones."""
    cfg, keep = parse_config(conf), valid_attachments(conf)
    if not cfg.directory.is_dir():
        return
    keep_owners = {f"{c}\r\n{i}".encode() for c, i in keep}
    with _locked(cfg.directory):
        for entry, held in list(_reservations(cfg.directory)):
            if held not in keep_owners:
                entry.unlink(missing_ok=True)


def status(args: Args, conf: dict) -> None:
    """Ready unless a range set has no free address left (SPEC: code 50, ADD would fail)."""
    cfg = parse_config(conf)
    for index, ranges in enumerate(cfg.range_sets):
        if not any(not (cfg.directory / str(ip)).exists() for _, ip in _candidates(ranges, None)):
            spans = ", ".join(f"{r.start}-{r.end}" for r in ranges)
            raise CNIError(NOT_AVAILABLE, f"range set {index} has no free address", spans)


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


def run(command: str, conf: dict, args: Args) -> dict | None:
    """The network's IPAM for command: ours in-process, any other type executed from CNI_PATH."""
    section = conf.get("ipam")
    kind = section.get("type") if isinstance(section, dict) else None
    if not kind:
        raise CNIError(INVALID_CONFIG, "ipam.type is missing")
    if kind == TYPE:
        return HANDLERS[command](args, conf)
    exe = find_plugin(kind, args.path)
    done = programs.run_now(None, [exe], json.dumps(conf), args.env(command))
    return parse_output(kind, done.code, done.out, done.err)


if __name__ == "__main__":
    sys.exit(main(HANDLERS))
