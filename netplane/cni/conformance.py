"""`netplane cni test`: a CNI conformance suite for a plugin and its network configuration.

Each check has an id, the CNI SPEC section it tests, and a run function that returns pass, fail or
skip with a reason a plugin author can act on (what was expected, what the plugin did, where the
SPEC says so). Plugins are executed directly, as a runtime does: the CNI_* variables in the
environment and the configuration on stdin. The whole suite runs inside a throw-away "host"
namespace ``np.cnit-<hex>.host`` (the plugin is started there through nsenter, so a bridge and host
veth ends are made there, never in the machine's own namespace), pods are ``np.cnit-<hex>.p<n>``,
and host-local-style IPAM keeps its state in a temporary ``dataDir``. Every namespace and the
temporary directory are removed in ``finally``, also on Ctrl-C.
"""
from __future__ import annotations

import copy
import errno
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field

from netplane import names
from netplane.cni import find_plugin
from netplane.kernel import links, netns

PASS, FAIL, SKIP = "pass", "fail", "skip"
IFNAME = "eth0"
TIMEOUT = 30.0
PARALLEL = 20


class ConfError(ValueError):
    """The configuration or plugin directory given to the suite cannot be tested."""


@dataclass(frozen=True)
class Outcome:
    id: str
    section: str
    result: str
    reason: str = ""


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

    @property
    def host(self) -> str:
        return f"{names.lab_prefix(self.tag)}host"

    @property
    def version(self) -> str:
        return self.conf["cniVersion"]

    def pod(self) -> tuple[str, str, str]:
        """A fresh pod namespace: its name, its path (CNI_NETNS) and a container id."""
        n = next(self.counter)
        name = f"{names.lab_prefix(self.tag)}p{n}"
        netns.create(name)
        self.made.append(name)
        return name, netns.path(name), f"{self.tag}-c{n}"

    def exec(self, command: str | None, conf: dict | str | None = None, container: str = "",
             netns_path: str = "", ifname: str = IFNAME, drop: tuple[str, ...] = ()) -> Reply:
        """Run the plugin once in the host namespace, as a runtime does."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env |= {"CNI_COMMAND": command or "", "CNI_CONTAINERID": container, "CNI_NETNS": netns_path,
                "CNI_IFNAME": ifname, "CNI_PATH": os.pathsep.join(self.plugin_dirs)}
        for key in drop + (() if command else ("CNI_COMMAND",)):
            env.pop(key, None)
        conf = self.conf if conf is None else conf
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        try:
            proc = subprocess.run(netns.command(self.host, [self.exe]), input=stdin.encode(), env=env,
                                  capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return Reply(-1, "", f"timed out after {TIMEOUT:.0f} s")
        return Reply(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def add(self, container: str, path: str, ifname: str = IFNAME) -> dict:
        """ADD that must succeed with a JSON result object; else the check fails."""
        reply = self.exec("ADD", container=container, netns_path=path, ifname=ifname)
        if reply.status != 0 or not isinstance(reply.json, dict) or "code" in reply.json:
            raise Failed(f"ADD should succeed with a result; plugin: {reply.describe()}")
        return reply.json

    def delete(self, container: str, path: str, prev: dict | None = None, ifname: str = IFNAME) -> Reply:
        conf = self.conf | ({"prevResult": prev} if prev and _at_least(self.version, "0.4.0") else {})
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


def _sandbox_iface(result: dict, ifname: str = IFNAME) -> tuple[int, dict] | None:
    for i, iface in enumerate(result.get("interfaces") or []):
        if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox"):
            return i, iface
    return None


def _pod_ips(result: dict) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    return [ipaddress.ip_interface(ip["address"]) for ip in result.get("ips") or []]


def links_in(name: str) -> dict[str, str]:
    """The links of the named namespace: name -> kind ("" for a plain device such as lo)."""
    with links.netlink(name) as ipr:
        return {link.get_attr("IFLA_IFNAME"): link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
                for link in ipr.get_links()}


def _ipam_files(data_dir: str) -> set[str]:
    """Reservation files under dataDir: files named after an IP address (host-local's layout)."""
    found = set()
    for root, _, files in os.walk(data_dir):
        for name in files:
            with suppress(ValueError):
                ipaddress.ip_address(name)
                found.add(os.path.relpath(os.path.join(root, name), data_dir))
    return found


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
    bad = s.conf | {"cniVersion": "0.0.9"}
    reply = s.exec("ADD", bad, container, path)
    if reply.status == 0:
        s.delete(container, path)
        raise Failed(f"ADD with cniVersion 0.0.9 (unsupported) should fail with error code 1; plugin: {reply.describe()}")
    error = reply.error()
    if error is None or error.get("code") != 1:
        raise Failed(f"an unsupported cniVersion should give an error JSON with code 1 (incompatible CNI "
                     f"version) on stdout; plugin: {reply.describe()}")


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
    subnets = _subnets(s.conf)
    for ip in ips:
        try:
            address = ipaddress.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError):
            raise Failed(f"ips entry should have an address in CIDR form; got {ip!r}") from None
        if subnets and not any(address.ip in net for net in subnets):
            raise Failed(f"address {address} is outside the configured IPAM range {[str(n) for n in subnets]}")
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
    found = set()
    with links.netlink(pod) as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_routes(family=family, table=254):
                dst = route.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                network = ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)
                found.add((str(network), route.get_attr("RTA_GATEWAY") or ""))
    return found


def check_add_applied(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    try:
        found = _sandbox_iface(result)
        if found is None or found[1]["sandbox"] != path:
            raise Failed(f"the result should list {IFNAME} with sandbox {path}; got {result.get('interfaces')}")
        iface = found[1]
        with links.netlink(name) as ipr:
            link = links.get(ipr, IFNAME)
            if link is None:
                raise Failed(f"after ADD, {IFNAME} should exist in {path}; it does not")
            mac = (link.get_attr("IFLA_ADDRESS") or "").lower()
            present = {ipaddress.ip_interface((a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
                       for a in ipr.get_addr(index=link["index"])}
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
    ra = s.add(a_id, a_path)
    try:
        rb = s.add(b_id, b_path)
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
            s.delete(b_id, b_path, rb)
    finally:
        s.delete(a_id, a_path, ra)


def check_del_cleanup(s: Suite) -> None:
    name, path, container = s.pod()
    before = links_in(s.host)
    files_before = _ipam_files(s.data_dir)
    result = s.add(container, path)
    added = {n: k for n, k in links_in(s.host).items() if n not in before}
    files_added = _ipam_files(s.data_dir) - files_before
    reply = s.delete(container, path, result)
    if reply.status != 0:
        raise Failed(f"DEL after ADD should succeed; plugin: {reply.describe()}")
    leaked = {n: k for n, k in links_in(s.host).items() if n in added and k != "bridge"}
    if leaked:
        listed = ", ".join(f"{n} ({k})" if k else n for n, k in sorted(leaked.items()))
        raise Failed(f"DEL should remove what ADD made; left in the plugin's namespace: {listed}")
    if IFNAME in links_in(name):
        raise Failed(f"DEL should remove {IFNAME} from the container namespace {path}; it is still there")
    left = files_added & _ipam_files(s.data_dir)
    if left:
        raise Failed(f"DEL should release the IPAM reservation; still held in dataDir: {sorted(left)}")


def check_del_idempotent(s: Suite) -> None:
    name, path, container = s.pod()
    result = s.add(container, path)
    first = s.delete(container, path, result)
    if first.status != 0:
        raise Failed(f"DEL after ADD should succeed; plugin: {first.describe()}")
    second = s.delete(container, path, result)
    if second.status != 0:
        raise Failed(f"a second DEL of the same attachment should succeed; plugin: {second.describe()}")
    name2, path2, container2 = s.pod()
    result2 = s.add(container2, path2)
    netns.delete(name2)
    s.made.remove(name2)
    gone = s.delete(container2, path2, result2)
    if gone.status != 0:
        raise Failed(f"DEL whose CNI_NETNS no longer exists should succeed (release what is left); "
                     f"plugin: {gone.describe()}")


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


def check_check(s: Suite) -> None:
    if not _at_least(s.version, "0.4.0"):
        raise Skipped(f"CHECK exists from cniVersion 0.4.0; the config is {s.version}")
    name, path, container = s.pod()
    result = s.add(container, path)
    conf = s.conf | {"prevResult": result}
    try:
        ok = s.exec("CHECK", conf, container, path)
        if ok.status != 0:
            raise Failed(f"CHECK right after ADD, with ADD's result as prevResult, should succeed; "
                         f"plugin: {ok.describe()}")
        with links.netlink(name) as ipr:
            index = links.index(ipr, IFNAME)
            for address in _pod_ips(result):
                with links.tolerate(errno.EADDRNOTAVAIL):
                    ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        broken = s.exec("CHECK", conf, container, path)
        if broken.status == 0:
            raise Failed(f"CHECK should fail once {IFNAME} lost its address {[str(a) for a in _pod_ips(result)]}; "
                         f"plugin passed it: {broken.describe()}")
        if broken.error() is None:
            raise Failed(f"a failed CHECK should print the SPEC's error JSON; plugin: {broken.describe()}")
    finally:
        s.delete(container, path, result)


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


@dataclass(frozen=True)
class Check:
    id: str
    section: str
    run: Callable[[Suite], None]
    summary: str


CHECKS = (
    Check("version", "Version; Error (code 1)", check_version,
          "VERSION lists the config's version; an unsupported cniVersion is refused with code 1"),
    Check("add-result", "Add; Result", check_add_result,
          "ADD's result: cniVersion, sandbox interface, ips inside the IPAM range, valid indexes, gateway"),
    Check("add-applied", "Add; Result", check_add_applied,
          "the container interface has the result's MAC, addresses and routes"),
    Check("connectivity", "Add", check_connectivity, "two attachments reach each other over TCP"),
    Check("del-cleanup", "Delete", check_del_cleanup,
          "DEL removes the interfaces ADD made and releases the IPAM reservation"),
    Check("del-idempotent", "Delete", check_del_idempotent,
          "a second DEL succeeds; DEL with a vanished CNI_NETNS succeeds"),
    Check("add-duplicate", "Add; Error", check_add_duplicate,
          "ADD of an interface name that exists in the netns fails with an error JSON"),
    Check("check", "Check", check_check,
          "CHECK passes after ADD and fails once the address is removed"),
    Check("bad-input", "Protocol parameters; Error (codes 4, 6)", check_bad_input,
          "unknown CNI_COMMAND and missing CNI_NETNS give code 4, a config that is not JSON code 6"),
    Check("parallel-add", "Add; Execution of Network Configurations", check_parallel,
          f"{PARALLEL} parallel ADDs get distinct addresses"),
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


@contextmanager
def _suite(conf: dict, plugin_dirs: list[str], exe: str) -> Iterator[Suite]:
    suite = Suite(copy.deepcopy(conf), list(plugin_dirs), exe)
    suite.data_dir = tempfile.mkdtemp(prefix="netplane-cnit-")
    if isinstance(suite.conf.get("ipam"), dict):
        suite.conf["ipam"] = suite.conf["ipam"] | {"dataDir": suite.data_dir}
    try:
        netns.create(suite.host)
        suite.made.append(suite.host)
        yield suite
    finally:
        netns.kill_all_in(suite.made)
        for name in suite.made:
            netns.delete(name)
        shutil.rmtree(suite.data_dir, ignore_errors=True)


def run(conf: dict, plugin_dirs: list[str], exe: str, only: list[str] | None = None,
        progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the catalogue's checks (those in only, when given) in order; one Outcome per check."""
    known = {c.id for c in CHECKS}
    unknown = set(only or ()) - known
    if unknown:
        raise ConfError(f"unknown checks {sorted(unknown)}; known: {[c.id for c in CHECKS]}")
    outcomes = []
    with _suite(conf, plugin_dirs, exe) as suite:
        for check in CHECKS:
            if only and check.id not in only:
                continue
            try:
                check.run(suite)
            except Failed as err:
                outcome = Outcome(check.id, check.section, FAIL, f"{err} [SPEC: {check.section}]")
            except Skipped as err:
                outcome = Outcome(check.id, check.section, SKIP, str(err))
            except (OSError, ValueError, KeyError, TypeError) as err:
                outcome = Outcome(check.id, check.section, FAIL,
                                  f"the check could not complete: {type(err).__name__}: {err} [SPEC: {check.section}]")
            else:
                outcome = Outcome(check.id, check.section, PASS, check.summary)
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
