"""`netplane cni test`: a CNI conformance suite for a plugin and its network configuration.

Each check has an id, the CNI SPEC section it tests, and a run function that returns pass, fail or
skip with a reason a plugin author can act on (what was expected, what the plugin did, where the
SPEC says so). Plugins are executed directly, as a runtime does: the CNI_* variables in the
environment and the configuration on stdin. The whole suite runs inside a throw-away "host"
namespace ``np.cnit-<hex>.host`` (the plugin is started there through nsenter, so a bridge and host
veth ends are made there, never in the machine's own namespace), pods are ``np.cnit-<hex>.p<n>``,
and host-local-style IPAM keeps its state in a temporary ``dataDir``. When the configuration names
a ``master`` (macvlan, ipvlan), the suite makes that link in its host namespace: one end of a veth
pair, both ends up. Every namespace and the temporary directory are removed in ``finally``, also on
Ctrl-C.

Checks that need a SPEC version (CHECK from 0.4.0, GC and STATUS from 1.1.0) run when the plugin's
VERSION claims it and are skipped, saying so, when it does not. Checks about distinct addresses
are skipped for an IPAM that hands out fixed addresses (``static``).
"""
from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field

from netplane import names
from netplane.cni import find_plugin
from netplane.kernel import links, netns, programs

PASS, FAIL, SKIP = "pass", "fail", "skip"
IFNAME = "eth0"
TIMEOUT = 30.0
PARALLEL = 20
VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")  # the result shapes the suite knows
UNSUPPORTED_VERSION = "0.0.9"
REFERENCE_DIR = "/usr/lib/cni"  # where Debian's containernetworking-plugins put `tuning`
CHAINED = "tuning"  # the pass-through plugin run after the one under test in the chaining check
MASTER_PEER = "cnitpeer0"
STACKED_KINDS = ("macvlan", "ipvlan")  # plugin types that stack a kernel link of that kind on master


class ConfError(ValueError):
    """The configuration or plugin directory given to the suite cannot be tested."""


@dataclass(frozen=True)
class Outcome:
    id: str
    section: str
    result: str
    reason: str = ""
    seconds: float = 0.0


class Failed(Exception):
    """A check's rule was broken; the message says what was expected and what the plugin did."""


class Skipped(Exception):
    pass


@dataclass
class Reply:
    """What one plugin execution did: exit status, parsed stdout (or its raw text) and stderr."""

    status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> object:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            return None

    def error(self) -> dict | None:
        """The SPEC's error object, when the plugin printed one."""
        reply = self.json
        return reply if isinstance(reply, dict) and "code" in reply else None

    def ok(self) -> bool:
        return self.status == 0 and self.error() is None

    def describe(self) -> str:
        body = self.json
        out = json.dumps(body) if body is not None else self.stdout.strip() or "(no stdout)"
        err = f"; stderr: {self.stderr.strip()[:300]}" if self.stderr.strip() else ""
        return f"exit {self.status}, stdout: {out[:400]}{err}"


@dataclass
class Suite:
    """The plugin under test, its configuration and the throw-away namespaces it runs against."""

    conf: dict
    plugin_dirs: list[str]
    exe: str
    tag: str = field(default_factory=lambda: f"cnit-{secrets.token_hex(3)}")
    made: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)
    data_dir: str = ""
    _supported: list[str] | None = None

    @property
    def host(self) -> str:
        return f"{names.lab_prefix(self.tag)}host"

    @property
    def version(self) -> str:
        return self.conf["cniVersion"]

    def at(self, version: str) -> dict:
        """The configuration with another cniVersion."""
        return self.conf | {"cniVersion": version}

    def supported(self) -> list[str]:
        """The versions the plugin's VERSION claims (a failed check when VERSION does not answer)."""
        if self._supported is None:
            reply = self.exec("VERSION", {"cniVersion": self.version})
            body = reply.json
            if reply.status != 0 or not isinstance(body, dict) or not isinstance(body.get("supportedVersions"), list):
                raise Failed(f"VERSION should print a JSON object with a supportedVersions list; "
                             f"plugin: {reply.describe()}")
            self._supported = [v for v in body["supportedVersions"] if isinstance(v, str)]
        return self._supported

    def require(self, version: str, what: str) -> dict:
        """The configuration at `version` when the plugin claims it; else the check is skipped."""
        if version not in self.supported():
            raise Skipped(f"{what} needs cniVersion {version}; the plugin's VERSION claims only {self.supported()}")
        return self.at(version) if not _at_least(self.version, version) else self.conf

    def pod(self) -> tuple[str, str, str]:
        """A fresh pod namespace: its name, its path (CNI_NETNS) and a container id."""
        n = next(self.counter)
        name = f"{names.lab_prefix(self.tag)}p{n}"
        netns.create(name)
        self.made.append(name)
        return name, netns.path(name), f"{self.tag}-c{n}"

    def drop_pod(self, name: str) -> None:
        """Delete a pod namespace behind the plugin's back (its CNI_NETNS then names nothing)."""
        netns.delete(name)
        self.made.remove(name)

    def exec(self, command: str | None, conf: dict | str | None = None, container: str = "",
             netns_path: str = "", ifname: str = IFNAME, drop: tuple[str, ...] = (), exe: str = "") -> Reply:
        """Run the plugin (or another one, exe) once in the host namespace, as a runtime does."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env |= {"CNI_COMMAND": command or "", "CNI_CONTAINERID": container, "CNI_NETNS": netns_path,
                "CNI_IFNAME": ifname, "CNI_PATH": os.pathsep.join(self.plugin_dirs)}
        for key in drop + (() if command else ("CNI_COMMAND",)):
            env.pop(key, None)
        conf = self.conf if conf is None else conf
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        done = programs.run_now(self.host, [exe or self.exe], stdin, env, TIMEOUT)
        return Reply(-1 if done.code == -9 else done.code, done.out, done.err)

    def network_wide(self, command: str, conf: dict) -> Reply:
        """GC or STATUS: no attachment, so no CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME."""
        return self.exec(command, conf, drop=("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"))

    def add(self, container: str, path: str, ifname: str = IFNAME, conf: dict | None = None) -> dict:
        """ADD that must succeed with a JSON result object; else the check fails."""
        reply = self.exec("ADD", conf, container=container, netns_path=path, ifname=ifname)
        if reply.status != 0 or not isinstance(reply.json, dict) or "code" in reply.json:
            raise Failed(f"ADD should succeed with a result; plugin: {reply.describe()}")
        return reply.json

    def delete(self, container: str, path: str, prev: dict | None = None, ifname: str = IFNAME,
               conf: dict | None = None) -> Reply:
        conf = self.conf if conf is None else conf
        conf = conf | ({"prevResult": prev} if prev and _at_least(conf["cniVersion"], "0.4.0") else {})
        return self.exec("DEL", conf, container, path, ifname)


def _at_least(version: str, minimum: str) -> bool:
    try:
        return tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    except ValueError:
        return False


def _subnets(conf: dict) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets the configuration's IPAM hands addresses from (host-local's two shapes)."""
    ipam = conf.get("ipam") or {}
    specs = [r for rs in ipam.get("ranges", []) for r in rs] + ([ipam] if "subnet" in ipam else [])
    return [ipaddress.ip_network(r["subnet"], strict=False) for r in specs if "subnet" in r]


def _fixed(conf: dict) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The addresses of an IPAM that gives every attachment the same ones (`static`), else []."""
    ipam = conf.get("ipam") or {}
    if ipam.get("type") != "static" and ("ranges" in ipam or "subnet" in ipam):
        return []
    return [ipaddress.ip_interface(a["address"]) for a in ipam.get("addresses") or []
            if isinstance(a, dict) and "address" in a]


def _next_fixed(conf: dict) -> dict:
    """A static IPAM config for a second attachment: each configured address plus one."""
    ipam = copy.deepcopy(conf["ipam"])
    for entry in ipam["addresses"]:
        address = ipaddress.ip_interface(entry["address"])
        entry["address"] = f"{address.ip + 1}/{address.network.prefixlen}"
    return conf | {"ipam": ipam}


def _sandbox_iface(result: dict, ifname: str = IFNAME) -> tuple[int, dict] | None:
    for i, iface in enumerate(result.get("interfaces") or []):
        if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox"):
            return i, iface
    return None


def _pod_ips(result: dict) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    return [ipaddress.ip_interface(ip["address"]) for ip in result.get("ips") or []]


def links_in(name: str) -> dict[str, str]:
    """The links of the named namespace: name -> kind ("" for a plain device such as lo)."""
    with links.opened(name) as space:
        return {link.name: link.kind for link in space.links()}


def _ipam_files(data_dir: str) -> set[str]:
    """Reservation files under dataDir: files named after an IP address (host-local's layout)."""
    found = set()
    for root, _, files in os.walk(data_dir):
        for name in files:
            with suppress(ValueError):
                ipaddress.ip_address(name)
                found.add(os.path.relpath(os.path.join(root, name), data_dir))
    return found


@dataclass
class Footprint:
    """What one ADD left in the plugin's namespace: new links (bridges aside) and IPAM files."""

    links: dict[str, str]
    files: set[str]

    def links_left(self, s: Suite) -> list[str]:
        now = links_in(s.host)
        return [f"{n} ({k})" if k else n for n, k in sorted(self.links.items()) if n in now]

    def files_left(self, s: Suite) -> list[str]:
        return sorted(self.files & _ipam_files(s.data_dir))

    def left(self, s: Suite) -> list[str]:
        """The parts of the footprint still there, described."""
        return self.links_left(s) + [f"IPAM reservation {f}" for f in self.files_left(s)]


@contextmanager
def _footprint(s: Suite) -> Iterator[Footprint]:
    """Record what the ADD run inside the block adds to the plugin's namespace and the dataDir."""
    links_before, files_before = links_in(s.host), _ipam_files(s.data_dir)
    footprint = Footprint({}, set())
    yield footprint
    footprint.links = {n: k for n, k in links_in(s.host).items() if n not in links_before and k != "bridge"}
    footprint.files = _ipam_files(s.data_dir) - files_before


# --- the checks -------------------------------------------------------------------------------

def check_version(s: Suite) -> None:
    reply = s.exec("VERSION", {"cniVersion": s.version})
    body = reply.json
    if reply.status != 0 or not isinstance(body, dict):
        raise Failed(f"VERSION should print a JSON object and exit 0; plugin: {reply.describe()}")
    if not isinstance(body.get("cniVersion"), str) or not isinstance(body.get("supportedVersions"), list):
        raise Failed(f"VERSION result needs cniVersion and a supportedVersions list; plugin printed {body}")
    if s.version not in body["supportedVersions"]:
        raise Failed(f"supportedVersions {body['supportedVersions']} lacks the config's cniVersion {s.version}")
    name, path, container = s.pod()
    reply = s.exec("ADD", s.at(UNSUPPORTED_VERSION), container, path)
    if reply.status == 0:
        s.delete(container, path)
        raise Failed(f"ADD with cniVersion {UNSUPPORTED_VERSION} (unsupported) should fail with error code 1; "
                     f"plugin: {reply.describe()}")
    error = reply.error()
    if error is None or error.get("code") != 1:
        raise Failed(f"an unsupported cniVersion should give an error JSON with code 1 (incompatible CNI "
                     f"version) on stdout; plugin: {reply.describe()}")


def _shape_for(version: str, result: dict) -> None:
    """The parts of a result's shape that differ between versions (ips' "version" until 0.4.0)."""
    if result.get("cniVersion") != version:
        raise Failed(f"ADD with cniVersion {version} should return a {version} result; "
                     f"its cniVersion is {result.get('cniVersion')!r}")
    for ip in result.get("ips") or []:
        family = str(ipaddress.ip_interface(ip["address"]).version)
        if not _at_least(version, "1.0.0") and ip.get("version") != family:
            raise Failed(f"a {version} result's ips entries need \"version\": \"{family}\" (dropped only in "
                         f"1.0.0); the plugin returned {ip}")
        if _at_least(version, "1.0.0") and "version" in ip:
            raise Failed(f"a {version} result's ips entries have no \"version\" (dropped in 1.0.0); "
                         f"the plugin returned {ip}")
    if not isinstance(result.get("interfaces"), list) or _sandbox_iface(result) is None:
        raise Failed(f"a {version} result should list {IFNAME} with its sandbox in interfaces; "
                     f"got {result.get('interfaces')!r}")


def check_version_results(s: Suite) -> None:
    versions = [v for v in VERSIONS if v in s.supported()]
    if not versions:
        raise Skipped(f"the plugin claims none of {list(VERSIONS)} (it claims {s.supported()})")
    for version in versions:
        conf = s.at(version)
        name, path, container = s.pod()
        result = s.add(container, path, conf=conf)
        try:
            _shape_for(version, result)
        finally:
            s.delete(container, path, result, conf=conf)


def _result_shape(s: Suite, result: dict, path: str) -> dict:
    """Validate an ADD result (SPEC "Result"); return the sandbox interface entry."""
    if result.get("cniVersion") != s.version:
        raise Failed(f"result cniVersion should be the config's {s.version}, got {result.get('cniVersion')!r}")
    interfaces = result.get("interfaces")
    if not isinstance(interfaces, list) or not interfaces:
        raise Failed(f"result should list interfaces; got {interfaces!r}")
    found = _sandbox_iface(result)
    if found is None:
        raise Failed(f"interfaces should include {IFNAME!r} with sandbox {path}; got {interfaces}")
    index, iface = found
    if iface["sandbox"] != path:
        raise Failed(f"interface {IFNAME} sandbox should be CNI_NETNS {path}, got {iface['sandbox']!r}")
    ips = result.get("ips")
    if not isinstance(ips, list) or not ips:
        raise Failed(f"result should have ips from the IPAM; got {ips!r}")
    subnets, fixed = _subnets(s.conf), _fixed(s.conf)
    for ip in ips:
        try:
            address = ipaddress.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError):
            raise Failed(f"ips entry should have an address in CIDR form; got {ip!r}") from None
        if subnets and not any(address.ip in net for net in subnets):
            raise Failed(f"address {address} is outside the configured IPAM range {[str(n) for n in subnets]}")
        if fixed and address not in fixed:
            raise Failed(f"address {address} is not one of the static IPAM's {[str(a) for a in fixed]}")
        if "interface" in ip:
            i = ip["interface"]
            if not isinstance(i, int) or not 0 <= i < len(interfaces):
                raise Failed(f"ips entry {ip['address']} names interface index {i!r}, "
                             f"not an index into interfaces (0..{len(interfaces) - 1})")
        gateway = ip.get("gateway")
        if gateway:
            gw = ipaddress.ip_address(gateway)
            if gw not in address.network:
                raise Failed(f"gateway {gw} of {address} is outside the address's subnet {address.network}")
    return iface


def check_add_result(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    try:
        _result_shape(s, result, path)
    finally:
        s.delete(container, path, result)


def _routes(pod: str) -> set[tuple[str, str]]:
    with links.opened(pod) as space:
        return space.routes()


def check_add_applied(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    try:
        found = _sandbox_iface(result)
        if found is None or found[1]["sandbox"] != path:
            raise Failed(f"the result should list {IFNAME} with sandbox {path}; got {result.get('interfaces')}")
        iface = found[1]
        with links.opened(name) as space:
            link = space.link(IFNAME)
            if link is None:
                raise Failed(f"after ADD, {IFNAME} should exist in {path}; it does not")
            mac, present = link.mac, space.addresses(IFNAME)
        if iface.get("mac") and iface["mac"].lower() != mac:
            raise Failed(f"result says {IFNAME} has MAC {iface['mac']}, the interface has {mac}")
        missing = [str(a) for a in _pod_ips(result) if a not in present]
        if missing:
            raise Failed(f"result's addresses {missing} are not on {IFNAME} (it has {sorted(map(str, present))})")
        routes = _routes(name)
        for route in result.get("routes") or []:
            dst = str(ipaddress.ip_network(route["dst"], strict=False))
            gw = route.get("gw")
            if not any(d == dst and (not gw or g == gw) for d, g in routes):
                raise Failed(f"result's route {route} is not in the pod's main table (it has {sorted(routes)})")
    finally:
        s.delete(container, path, result)


def check_connectivity(s: Suite) -> None:
    (a, a_path, a_id), (b, b_path, b_id) = s.pod(), s.pod()
    # A static IPAM gives every attachment its configured addresses: the second pod gets a config
    # with each address plus one, as a user would write a second pod's.
    b_conf = _next_fixed(s.conf) if _fixed(s.conf) else s.conf
    ra = s.add(a_id, a_path)
    try:
        rb = s.add(b_id, b_path, conf=b_conf)
        try:
            target = _pod_ips(rb)[0].ip
            family = socket.AF_INET if target.version == 4 else socket.AF_INET6
            server = netns.socket_in(b, family, socket.SOCK_STREAM)
            client = netns.socket_in(a, family, socket.SOCK_STREAM)
            with server, client:
                server.bind(("", 0))
                server.listen(1)
                client.settimeout(3)
                try:
                    client.connect((str(target), server.getsockname()[1]))
                    server.accept()[0].close()
                except OSError as err:
                    raise Failed(f"a TCP connect from pod {_pod_ips(ra)[0].ip} to pod {target} should succeed "
                                 f"over the attachments; it failed: {err}") from None
        finally:
            s.delete(b_id, b_path, rb, conf=b_conf)
    finally:
        s.delete(a_id, a_path, ra)


def check_del_cleanup(s: Suite) -> None:
    name, path, container = s.pod()
    with _footprint(s) as made:
        result = s.add(container, path)
    reply = s.delete(container, path, result)
    if reply.status != 0:
        raise Failed(f"DEL after ADD should succeed; plugin: {reply.describe()}")
    leaked = made.links_left(s)
    if leaked:
        raise Failed(f"DEL should remove what ADD made; left in the plugin's namespace: {', '.join(leaked)}")
    if IFNAME in links_in(name):
        raise Failed(f"DEL should remove {IFNAME} from the container namespace {path}; it is still there")
    if made.files_left(s):
        raise Failed(f"DEL should release the IPAM reservation; still held in dataDir: {made.files_left(s)}")


def check_del_idempotent(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    first = s.delete(container, path, result)
    if first.status != 0:
        raise Failed(f"DEL after ADD should succeed; plugin: {first.describe()}")
    second = s.delete(container, path, result)
    if second.status != 0:
        raise Failed(f"a second DEL of the same attachment (its interface already gone) should succeed; "
                     f"plugin: {second.describe()}")


def check_del_robust(s: Suite) -> None:
    name, path, container = s.pod()
    with _footprint(s) as made:
        result = s.add(container, path)
    bare = s.exec("DEL", s.conf, container, path)
    if bare.status != 0:
        s.delete(container, path, result)
        raise Failed(f"DEL without prevResult (a runtime that lost its cache) should succeed; "
                     f"plugin: {bare.describe()}")
    left = made.left(s) + ([f"{IFNAME} in {path}"] if IFNAME in links_in(name) else [])
    if left:
        s.delete(container, path, result)
        raise Failed(f"DEL without prevResult should still remove what ADD made; left: {', '.join(left)}")
    name, path, container = s.pod()
    with _footprint(s) as made:
        result = s.add(container, path)
    s.drop_pod(name)
    gone = s.delete(container, path, result)
    if gone.status != 0:
        raise Failed(f"DEL whose CNI_NETNS no longer exists should succeed (release what is left); "
                     f"plugin: {gone.describe()}")
    held = made.files_left(s)
    if held:
        raise Failed(f"DEL whose CNI_NETNS no longer exists should still release the IPAM reservation; "
                     f"still held: {held}")


def check_add_duplicate(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    other = f"{container}-dup"
    try:
        reply = s.exec("ADD", None, other, path)
        if reply.status == 0:
            raise Failed(f"ADD of {IFNAME} into {path}, which already has {IFNAME}, should fail; plugin "
                         f"succeeded: {reply.describe()}")
        if reply.error() is None:
            raise Failed(f"a failed ADD should print the SPEC's error JSON (code, msg) on stdout; "
                         f"plugin: {reply.describe()}")
    finally:
        s.delete(other, path)
        s.delete(container, path, result)


def _check_breaks(s: Suite, what: str, damage: Callable[[str, dict], None]) -> None:
    """ADD, CHECK (must pass), damage the pod behind the plugin's back, CHECK (must fail)."""
    name, path, container = s.pod()
    result = s.add(container, path)
    conf = s.conf | {"prevResult": result}
    try:
        ok = s.exec("CHECK", conf, container, path)
        if ok.status != 0:
            raise Failed(f"CHECK right after ADD, with ADD's result as prevResult, should succeed; "
                         f"plugin: {ok.describe()}")
        damage(name, result)
        broken = s.exec("CHECK", conf, container, path)
        if broken.status == 0:
            raise Failed(f"CHECK should fail once {what} behind the plugin's back; plugin passed it: "
                         f"{broken.describe()}")
        if broken.error() is None:
            raise Failed(f"a failed CHECK should print the SPEC's error JSON; plugin: {broken.describe()}")
    finally:
        s.delete(container, path, result)


def _remove_addresses(pod: str, result: dict) -> None:
    with links.opened(pod) as space:
        for address in _pod_ips(result):
            space.delete_address(IFNAME, address)


def _remove_interface(pod: str, result: dict) -> None:
    with links.opened(pod) as space:
        space.delete(IFNAME)


def check_check(s: Suite) -> None:
    if not _at_least(s.version, "0.4.0"):
        raise Skipped(f"CHECK exists from cniVersion 0.4.0; the config is {s.version}")
    _check_breaks(s, f"{IFNAME} lost its address", _remove_addresses)
    _check_breaks(s, f"{IFNAME} was deleted from the container", _remove_interface)


def check_bad_input(s: Suite) -> None:
    name, path, container = s.pod()
    missing = s.exec(None, None, container, path)
    # libcni's skel answers a call without CNI_COMMAND with its "about" text on stderr and exit 0,
    # doing nothing: accepted, as is the SPEC's error code 4; a result or any other error is not.
    if missing.status == 0 and missing.stdout.strip():
        s.delete(container, path)
        raise Failed(f"a call without CNI_COMMAND should fail with error code 4 (or do nothing); plugin "
                     f"printed: {missing.describe()}")
    if missing.status != 0 and (missing.error() or {}).get("code") != 4:
        raise Failed(f"a call without CNI_COMMAND should print an error JSON with code 4; plugin: {missing.describe()}")
    cases = [
        ("with CNI_COMMAND=BOGUS", "BOGUS", None, (), 4),
        ("ADD without CNI_NETNS", "ADD", None, ("CNI_NETNS",), 4),
        ("ADD with a config that is not JSON", "ADD", "{ not json", (), 6),
    ]
    for what, command, conf, drop, code in cases:
        reply = s.exec(command, conf, container, path, drop=drop)
        if reply.status == 0:
            s.delete(container, path)
            raise Failed(f"a call {what} should fail with error code {code}; plugin succeeded: {reply.describe()}")
        error = reply.error()
        if error is None or error.get("code") != code:
            raise Failed(f"a call {what} should print an error JSON with code {code}; plugin: {reply.describe()}")


def check_parallel(s: Suite) -> None:
    if _fixed(s.conf):
        raise Skipped(f"the IPAM is static: every attachment gets {[str(a) for a in _fixed(s.conf)]}, so "
                      f"distinct addresses for parallel ADDs do not apply")
    pods = [s.pod() for _ in range(PARALLEL)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        replies = list(pool.map(lambda p: s.exec("ADD", None, p[2], p[1]), pods))
    try:
        bad = [r for r in replies if r.status != 0 or not isinstance(r.json, dict) or "code" in r.json]
        if bad:
            raise Failed(f"{len(bad)} of {PARALLEL} parallel ADDs failed; first: {bad[0].describe()}")
        seen: dict[str, int] = {}
        for i, reply in enumerate(replies):
            for address in _pod_ips(reply.json):
                if str(address.ip) in seen:
                    raise Failed(f"parallel ADDs {seen[str(address.ip)]} and {i} both got {address.ip}; "
                                 f"every attachment needs its own address")
                seen[str(address.ip)] = i
    finally:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda p: s.delete(p[2], p[1]), pods))


def check_gc(s: Suite) -> None:
    conf = s.require("1.1.0", "GC")
    (_, a_path, a_id), (_, b_path, b_id) = s.pod(), s.pod()
    with _footprint(s) as kept:
        ra = s.add(a_id, a_path, conf=conf)
    try:
        b_conf = _next_fixed(conf) if _fixed(conf) else conf
        with _footprint(s) as stale:
            rb = s.add(b_id, b_path, conf=b_conf)
        try:
            valid = {"cni.dev/valid-attachments": [{"containerID": a_id, "ifname": IFNAME}]}
            reply = s.network_wide("GC", conf | valid)
            if not reply.ok():
                raise Failed(f"GC with valid-attachments naming one of two attachments should succeed; "
                             f"plugin: {reply.describe()}")
            left = stale.left(s)
            if left:
                raise Failed(f"GC should release what belongs to attachments not in cni.dev/valid-attachments "
                             f"({b_id}/{IFNAME}); still there: {', '.join(left)}")
            lost = sorted(set(kept.links) - set(links_in(s.host))) + sorted(kept.files - _ipam_files(s.data_dir))
            if lost:
                raise Failed(f"GC should keep the valid attachment's ({a_id}/{IFNAME}) resources; "
                             f"it removed: {', '.join(lost)}")
            check = s.exec("CHECK", conf | {"prevResult": ra}, a_id, a_path)
            if check.status != 0:
                raise Failed(f"after GC, CHECK of the valid attachment should still succeed; "
                             f"plugin: {check.describe()}")
        finally:
            s.delete(b_id, b_path, rb, conf=b_conf)
    finally:
        s.delete(a_id, a_path, ra, conf=conf)


def check_status(s: Suite) -> None:
    conf = s.require("1.1.0", "STATUS")
    reply = s.network_wide("STATUS", conf)
    if not reply.ok():
        raise Failed(f"STATUS on a healthy configuration (empty IPAM range) should exit 0 without an error; "
                     f"plugin: {reply.describe()}")


def _versions_of(s: Suite, exe: str) -> list[str]:
    reply = s.exec("VERSION", {"cniVersion": "0.3.1"}, exe=exe)
    body = reply.json
    return [v for v in body.get("supportedVersions", [])] if isinstance(body, dict) else []


def check_chaining(s: Suite) -> str:
    try:
        chained = find_plugin(CHAINED, [*s.plugin_dirs, REFERENCE_DIR])
    except Exception:  # noqa: BLE001 - CNIError: not found
        raise Skipped(f"no {CHAINED!r} plugin in {s.plugin_dirs + [REFERENCE_DIR]} to chain after the plugin "
                      f"(Debian: containernetworking-plugins)") from None
    both = [v for v in VERSIONS if v in s.supported() and v in _versions_of(s, chained)
            and (v == s.version or not _at_least(v, s.version))]
    version = s.version if s.version in both else (both[-1] if both else None)
    if version is None:
        raise Skipped(f"the plugin and {CHAINED} share no version among {list(VERSIONS)} up to {s.version}")
    conf = s.at(version)
    # tuning changes a sysctl of the container's interface: a later plugin that modifies the
    # attachment without changing the result, which the plugin's CHECK must tolerate.
    tuning = {"cniVersion": version, "name": s.conf["name"], "type": CHAINED,
              "sysctl": {f"net.ipv4.conf.{IFNAME}.arp_notify": "1"}}
    name, path, container = s.pod()
    first = s.add(container, path, conf=conf)
    final = first
    try:
        reply = s.exec("ADD", tuning | {"prevResult": first}, container, path, exe=chained)
        if not reply.ok() or not isinstance(reply.json, dict):
            raise Failed(f"{CHAINED}, chained after the plugin, could not use its {version} result as prevResult "
                         f"(is the result valid for {version}?); {CHAINED}: {reply.describe()}")
        final = reply.json
        ips, final_ips = sorted(map(str, _pod_ips(first))), sorted(map(str, _pod_ips(final)))
        if ips != final_ips or _sandbox_iface(final) is None:
            raise Failed(f"the chain's final result should still hold the plugin's {IFNAME} and ips {ips}; "
                         f"it has interfaces {final.get('interfaces')} and ips {final_ips}")
        if _at_least(version, "0.4.0"):
            for exe, plugin_conf, who in ((s.exe, conf, "the plugin"), (chained, tuning, CHAINED)):
                check = s.exec("CHECK", plugin_conf | {"prevResult": final}, container, path, exe=exe)
                if check.status != 0:
                    raise Failed(f"CHECK of the chain (plugin, then {CHAINED}) with the chain's final result as "
                                 f"prevResult should succeed; {who} failed: {check.describe()}")
    finally:
        undo = s.exec("DEL", tuning | ({"prevResult": final} if _at_least(version, "0.4.0") else {}),
                      container, path, exe=chained)
        own = s.delete(container, path, final, conf=conf)
    if not undo.ok():
        raise Failed(f"DEL of the chain should succeed; {CHAINED} failed: {undo.describe()}")
    if own.status != 0:
        raise Failed(f"DEL of the chain (in reverse order, with the chain's final result as prevResult) should "
                     f"succeed; the plugin failed: {own.describe()}")
    notes = [] if version == s.version else [f"chain run at cniVersion {version}, the highest {CHAINED} shares"]
    if not _at_least(version, "0.4.0"):
        notes.append(f"no CHECK at {version}")
    return "; ".join(notes)


@dataclass(frozen=True)
class Check:
    id: str
    section: str
    run: Callable[[Suite], str | None]  # raises Failed or Skipped; may return a note on a pass
    summary: str


CHECKS = (
    Check("version", "Version; Error (code 1)", check_version,
          "VERSION lists the config's version; an unsupported cniVersion is refused with code 1"),
    Check("version-results", "Version; Result (per version)", check_version_results,
          f"ADD at each claimed version among {', '.join(VERSIONS)} returns that version's result shape"),
    Check("add-result", "Add; Result", check_add_result,
          "ADD's result: cniVersion, sandbox interface, ips inside the IPAM range, valid indexes, gateway"),
    Check("add-applied", "Add; Result", check_add_applied,
          "the container interface has the result's MAC, addresses and routes"),
    Check("connectivity", "Add", check_connectivity, "two attachments reach each other over TCP"),
    Check("del-cleanup", "Delete", check_del_cleanup,
          "DEL removes the interfaces ADD made and releases the IPAM reservation"),
    Check("del-idempotent", "Delete", check_del_idempotent, "a second DEL of the same attachment succeeds"),
    Check("del-robust", "Delete", check_del_robust,
          "DEL without prevResult cleans up; DEL with a vanished CNI_NETNS succeeds and releases the IP"),
    Check("add-duplicate", "Add; Error", check_add_duplicate,
          "ADD of an interface name that exists in the netns fails with an error JSON"),
    Check("check", "Check", check_check,
          "CHECK passes after ADD and fails once the address, or the interface, is removed"),
    Check("bad-input", "Protocol parameters; Error (codes 4, 6)", check_bad_input,
          "unknown CNI_COMMAND and missing CNI_NETNS give code 4, a config that is not JSON code 6"),
    Check("parallel-add", "Add; Execution of Network Configurations", check_parallel,
          f"{PARALLEL} parallel ADDs get distinct addresses"),
    Check("chaining", "Execution of Network Configurations; Check", check_chaining,
          f"in a chain before {CHAINED}: its result is a valid prevResult, kept in the final result; "
          f"CHECK and reverse DEL with the final result succeed"),
    Check("gc", "GC (1.1.0)", check_gc,
          "GC releases an attachment missing from cni.dev/valid-attachments and keeps the valid one working"),
    Check("status", "STATUS (1.1.0)", check_status, "STATUS succeeds on a healthy configuration"),
)


def load(conf_text: str, plugin_dirs: list[str]) -> tuple[dict, str]:
    """The plugin configuration to test (a single plugin's or a one-plugin conflist's) and its exe."""
    try:
        conf = json.loads(conf_text)
    except ValueError as err:
        raise ConfError(f"the network config is not JSON: {err}") from None
    if not isinstance(conf, dict):
        raise ConfError("the network config is not a JSON object")
    if "plugins" in conf:
        if len(conf["plugins"]) != 1:
            raise ConfError("give a conflist with exactly one plugin (the one to test), or a plugin config")
        conf = conf["plugins"][0] | {"name": conf.get("name"), "cniVersion": conf.get("cniVersion")}
    if not isinstance(conf.get("type"), str) or not isinstance(conf.get("name"), str) or \
            not isinstance(conf.get("cniVersion"), str):
        raise ConfError("the network config needs name, cniVersion and type")
    try:
        exe = find_plugin(conf["type"], plugin_dirs)
    except Exception:  # noqa: BLE001 - CNIError: not found
        raise ConfError(f"plugin {conf['type']!r} not found in {plugin_dirs}") from None
    return conf, exe


def _make_master(suite: Suite, master: str) -> None:
    """The master link the configuration names, in the suite's host namespace: a veth end, up.

    When the plugin stacks a kernel link on it (macvlan, ipvlan), try one first: a kernel without
    that link type cannot run the plugin, and saying so beats a failure in every check."""
    with links.opened(suite.host) as space:
        if space.link(master) is None:
            space.add_pair(master, MASTER_PEER)
        for name in (master, MASTER_PEER):
            space.set_up(name)
        kind = suite.conf["type"]
        if kind not in STACKED_KINDS:
            return
        try:
            space.add_stacked("cnitprobe", kind, master)
        except Exception as err:  # noqa: BLE001 - NetlinkError or pyroute2's own refusal
            why = os.strerror(err.code) if isinstance(getattr(err, "code", None), int) else str(err)
            raise ConfError(f"this kernel cannot make {kind} links ({why}), so the {kind} plugin cannot work "
                            f"on this machine (is the {kind} module available?)") from None
        space.delete("cnitprobe")


@contextmanager
def _suite(conf: dict, plugin_dirs: list[str], exe: str) -> Iterator[Suite]:
    suite = Suite(copy.deepcopy(conf), list(plugin_dirs), exe)
    suite.data_dir = tempfile.mkdtemp(prefix="netplane-cnit-")
    if isinstance(suite.conf.get("ipam"), dict):
        suite.conf["ipam"] = suite.conf["ipam"] | {"dataDir": suite.data_dir}
    try:
        netns.create(suite.host)
        suite.made.append(suite.host)
        if isinstance(suite.conf.get("master"), str):
            _make_master(suite, suite.conf["master"])
        yield suite
    finally:
        netns.kill_all_in(suite.made)
        for name in suite.made:
            netns.delete(name)
        shutil.rmtree(suite.data_dir, ignore_errors=True)


def run(conf: dict, plugin_dirs: list[str], exe: str, only: list[str] | None = None,
        progress: Callable[[Outcome], None] | None = None, master: str | None = None) -> list[Outcome]:
    """Run the catalogue's checks (those in only, when given) in order; one Outcome per check.

    master: the host link a macvlan/ipvlan-style config attaches to (replaces the config's)."""
    known = {c.id for c in CHECKS}
    unknown = set(only or ()) - known
    if unknown:
        raise ConfError(f"unknown checks {sorted(unknown)}; known: {[c.id for c in CHECKS]}")
    if master:
        conf = conf | {"master": master}
    outcomes = []
    with _suite(conf, plugin_dirs, exe) as suite:
        for check in CHECKS:
            if only and check.id not in only:
                continue
            started = time.monotonic()
            try:
                note = check.run(suite)
            except Failed as err:
                result, reason = FAIL, f"{err} [SPEC: {check.section}]"
            except Skipped as err:
                result, reason = SKIP, str(err)
            except (OSError, ValueError, KeyError, TypeError) as err:
                result, reason = FAIL, (f"the check could not complete: {type(err).__name__}: {err} "
                                        f"[SPEC: {check.section}]")
            else:
                result, reason = PASS, f"{check.summary} ({note})" if note else check.summary
            outcome = Outcome(check.id, check.section, result, reason, round(time.monotonic() - started, 3))
            outcomes.append(outcome)
            if progress:
                progress(outcome)
    return outcomes


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps({"passed": all(o.result != FAIL for o in outcomes),
                       "checks": [asdict(o) for o in outcomes]}, indent=2)


def as_table(outcomes: list[Outcome]) -> str:
    rows = [("ID", "SECTION", "RESULT", "REASON")] + [(o.id, o.section, o.result.upper(), o.reason) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("   ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]) for r in rows)


def as_junit(outcomes: list[Outcome], plugin: str) -> str:
    """A JUnit XML report: one testsuite, one testcase per check, failure/skipped with the reason."""
    suite = ET.Element("testsuite", name=f"cni-conformance.{plugin}", tests=str(len(outcomes)),
                       failures=str(sum(o.result == FAIL for o in outcomes)), errors="0",
                       skipped=str(sum(o.result == SKIP for o in outcomes)),
                       time=f"{sum(o.seconds for o in outcomes):.3f}")
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"cni.{plugin}", name=o.id, time=f"{o.seconds:.3f}")
        if o.result == FAIL:
            ET.SubElement(case, "failure", message=o.reason, type=o.section).text = o.reason
        elif o.result == SKIP:
            ET.SubElement(case, "skipped", message=o.reason)
        else:
            ET.SubElement(case, "system-out").text = o.reason
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
