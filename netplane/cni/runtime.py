"""The runtime side of CNI (libcni's job), for the kubelet: run a network's plugins for a pod.

ADD runs the plugins of a list in order, each getting the previous one's result as prevResult, and
caches the last result; CHECK runs them in order against the cached result; DEL runs them in
reverse (with the cached result as prevResult from 0.4.0 on) and drops the cache. GC (1.1.0)
deletes the cached attachments that are not among the valid ones, then asks every plugin to drop
what belongs to no valid attachment; STATUS (1.1.0) asks every plugin whether it can serve ADD. Plugins run as
subprocesses inside ``exec_netns``, the emulated node's namespace, so what they make lands there.
As with libcni, a failed ADD is not undone here: the caller runs DEL, as CRI runtimes do.

Configurations come as dicts or from a directory (``load_conf_dir``, the way CRI runtimes read
/etc/cni/net.d through libcni). ``validate`` is libcni's ValidateNetworkList: every plugin (and its
IPAM) is found on CNI_PATH and lists the configuration's cniVersion in its VERSION answer. With
``negotiate`` the runtime validates before every ADD, CHECK, GC and STATUS (not DEL: cleanup must not
be blocked); VERSION answers are cached per executable (path, mtime, size), so that costs a stat
per plugin, not a process. Capability args (``portMappings``, ...) reach only the plugins whose
``capabilities`` ask for them, in ``runtimeConfig``, and are cached with the result for DEL and GC.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netplane.cni import (CONTAINER_ID_RE, DECODING_FAILURE, IFNAME_RE, INCOMPATIBLE_VERSION, INVALID_CONFIG, SINCE,
                          SPEC_VERSION, UNKNOWN, Args, CNIError, at_least, find_plugin, parse_output)
from netplane.kernel import commands

__all__ = ["Attachment", "CNIError", "Runtime", "conf_from_file", "load_conf_dir", "plugin_dir"]
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # the SPEC's rule for a network's name
CONF_EXTENSIONS = (".conf", ".conflist", ".json")  # what libcni's ConfFiles looks for
# plugin executable (path, mtime in ns, size) -> the versions its VERSION lists; shared by all runtimes
# of the process, as every node agent of a lab runs the same plugins
_SUPPORTED: dict[tuple[str, int, int], tuple[str, ...]] = {}


def plugin_dir() -> str:
    """The repository's ``cni/`` directory: launchers of netplane's plugins, for CNI_PATH."""
    return str(Path(__file__).resolve().parents[2] / "cni")


@dataclass(frozen=True)
class Attachment:
    """One pod interface on a network: the CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS of a call."""

    container_id: str
    netns_path: str
    ifname: str = "eth0"
    args: str = ""  # CNI_ARGS, e.g. "IgnoreUnknown=1;IP=10.244.1.7" to ask host-local for an address

    def __post_init__(self) -> None:
        if not CONTAINER_ID_RE.match(self.container_id) or not IFNAME_RE.match(self.ifname):
            raise ValueError(f"bad container id or interface name: {self.container_id!r} {self.ifname!r}")


def _network(conf: dict) -> tuple[str, str, list[dict]]:
    """Name, version and plugins of a conflist or of a single plugin's configuration."""
    name, version = conf.get("name"), conf.get("cniVersion")
    plugins = conf["plugins"] if "plugins" in conf else [conf]
    if not isinstance(name, str) or not VERSION_RE.match(str(version)) or not isinstance(plugins, list) or not plugins:
        raise CNIError(INVALID_CONFIG, "a network config needs a name, a cniVersion x.y.z and plugins")
    if not NETWORK_NAME_RE.match(name):
        raise CNIError(INVALID_CONFIG, f"network name {name!r}: start with a letter or digit, then letters, "
                                       "digits, '_', '.' or '-'")
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
        raise CNIError(INVALID_CONFIG, "every plugin config needs a type")
    for flag in ("disableCheck", "disableGC"):
        if not isinstance(conf.get(flag, False), bool):
            raise CNIError(INVALID_CONFIG, f"{flag} must be true or false, not {conf[flag]!r}")
    return name, version, plugins


def conf_from_file(path: Path) -> dict:
    """The conflist in a .conflist file, or the single plugin config of a .conf / .json file wrapped in
    a conflist of one (libcni's ConfListFromConf); refused (code 6 or 7) when not a valid network."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CNIError(DECODING_FAILURE, f"{path.name} is not readable JSON", str(err)) from None
    if not isinstance(data, dict):
        raise CNIError(DECODING_FAILURE, f"{path.name} is not a JSON object")
    if path.suffix == ".conflist":
        if not isinstance(data.get("plugins"), list):
            raise CNIError(INVALID_CONFIG, f"{path.name} has no plugins list (a single plugin's config is a .conf)")
        conf = data
    else:
        if not isinstance(data.get("type"), str):
            raise CNIError(INVALID_CONFIG, f"{path.name} has no plugin type (a list of plugins is a .conflist)")
        conf = {"cniVersion": data.get("cniVersion"), "name": data.get("name"), "plugins": [data]}
    try:
        _network(conf)
    except CNIError as err:
        raise CNIError(err.code, f"{path.name}: {err.msg}") from None
    return conf


def load_conf_dir(directory: str | Path) -> dict:
    """The network a CRI runtime picks from a directory: the first valid one of its *.conflist, *.conf
    and *.json files in name order, as a conflist; a clear error listing why each file was skipped."""
    folder = Path(directory)
    try:
        files = sorted((p for p in folder.iterdir() if p.suffix in CONF_EXTENSIONS and p.is_file()),
                       key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        raise CNIError(INVALID_CONFIG, f"no network configuration directory {folder}") from None
    skipped = []
    for path in files:
        try:
            return conf_from_file(path)
        except CNIError as err:
            skipped.append(f"{err.msg}{f' ({err.details})' if err.details else ''}")
    why = "; ".join(skipped) if skipped else f"no file ending in {', '.join(CONF_EXTENSIONS)}"
    raise CNIError(INVALID_CONFIG, f"no valid network configuration in {folder}", why)


def _with_capabilities(plugin: dict, capabilities: Mapping[str, object]) -> dict:
    """The plugin's config with the capability args it declares in runtimeConfig (libcni's injection)."""
    wanted = {key: value for key, value in capabilities.items() if plugin.get("capabilities", {}).get(key) is True}
    return plugin | {"runtimeConfig": plugin.get("runtimeConfig", {}) | wanted} if wanted else plugin


def _require(command: str, version: str) -> None:
    if not at_least(version, SINCE[command]):
        raise CNIError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion {SINCE[command]} or later, not {version}")


class Runtime:
    """libcni's side of CNI: runs a network's plugins from plugin_dirs (CNI_PATH) inside exec_netns."""

    def __init__(self, plugin_dirs: list[str], cache_dir: str, exec_netns: str | None = None,
                 negotiate: bool = False) -> None:
        self.plugin_dirs = list(plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.exec_netns = exec_netns
        self.negotiate = negotiate
        self._probes: dict[tuple[str, int, int], asyncio.Task] = {}  # VERSION calls under way

    async def add(self, conf: dict, att: Attachment, capabilities: Mapping[str, object] | None = None) -> dict:
        """Attach the pod; the last plugin's result, which is cached for CHECK and DEL."""
        name, version, plugins = await self._prepare(conf)
        capabilities = dict(capabilities or {})
        result = None
        for plugin in plugins:
            result = await self._run("ADD", _with_capabilities(plugin, capabilities), name, version, att, result)
        if result is None:
            raise CNIError(UNKNOWN, "the network's plugins returned no result", plugin=plugins[-1]["type"])
        self._write_cache(name, att, conf, result, capabilities)
        return result

    async def check(self, conf: dict, att: Attachment, capabilities: Mapping[str, object] | None = None) -> None:
        """Ask every plugin whether the attachment is still as ADD made it (nothing when disableCheck)."""
        name, version, plugins = _network(conf)
        _require("CHECK", version)
        if conf.get("disableCheck"):
            return
        await self._prepare(conf)
        entry = self._cached_entry(name, att)
        if entry is None:
            raise CNIError(UNKNOWN, f"no cached result for {att.container_id} {att.ifname} on {name}")
        args = entry.get("capabilityArgs", {}) if capabilities is None else capabilities
        for plugin in plugins:
            await self._run("CHECK", _with_capabilities(plugin, args), name, version, att, entry["result"])

    async def delete(self, conf: dict, att: Attachment, capabilities: Mapping[str, object] | None = None) -> None:
        """Detach the pod; fine when already detached (the plugins make DEL idempotent). Without
        capabilities, those cached at ADD are passed (portmap needs its portMappings to undo them)."""
        name, version, plugins = _network(conf)
        entry = self._cached_entry(name, att)
        cached = entry["result"] if entry and at_least(version, "0.4.0") else None
        args = (entry or {}).get("capabilityArgs", {}) if capabilities is None else capabilities
        for plugin in reversed(plugins):
            await self._run("DEL", _with_capabilities(plugin, args), name, version, att, cached)
        self._cache(name, att).unlink(missing_ok=True)

    async def gc(self, conf: dict, valid: list[Attachment]) -> None:
        """Detach every cached attachment of the network that is not valid, then let each plugin
        drop what belongs to no valid attachment; nothing at all when the network says disableGC."""
        name, version, plugins = _network(conf)
        _require("GC", version)
        if conf.get("disableGC"):
            return
        await self._prepare(conf)
        keep = {(a.container_id, a.ifname) for a in valid}
        for entry in self.cache_dir.glob(f"{name}-*[!p]"):  # not the .tmp of a write under way
            cached = json.loads(entry.read_text())
            if cached["networkName"] == name and (cached["containerId"], cached["ifName"]) not in keep:
                await self.delete(conf, Attachment(cached["containerId"], "", cached["ifName"]))
        extra = {"cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in sorted(keep)]}
        for plugin in plugins:
            await self._run("GC", plugin | extra, name, version, None, None)

    async def status(self, conf: dict) -> None:
        """Fine when every plugin can serve ADD; else the first plugin's error (code 50 or 51)."""
        name, version, plugins = _network(conf)
        _require("STATUS", version)
        await self._prepare(conf)
        for plugin in plugins:
            await self._run("STATUS", plugin, name, version, None, None)

    async def validate(self, conf: dict) -> None:
        """Every plugin of the network, and its IPAM plugin, is on CNI_PATH and supports the network's
        cniVersion (else code 1 naming the plugin, the versions it supports and the config's)."""
        name, version, plugins = _network(conf)
        kinds = list(dict.fromkeys(kind for p in plugins for kind in (p["type"], _ipam_type(p)) if kind))
        for kind in kinds:  # a missing plugin is reported before any plugin runs
            self._find(kind, name)
        # every probe ends before an error is raised: a subprocess cancelled half-way can hang the loop's close
        supported = await asyncio.gather(*(self.supported_versions(kind, name) for kind in kinds),
                                         return_exceptions=True)
        for kind, versions in zip(kinds, supported):
            if isinstance(versions, BaseException):
                raise versions
            if version not in versions:
                raise CNIError(INCOMPATIBLE_VERSION, f"network {name!r} is cniVersion {version}, which plugin "
                                                     f"{kind} does not support", f"it supports {', '.join(versions)}",
                               plugin=kind)

    async def supported_versions(self, kind: str, network: str = "") -> tuple[str, ...]:
        """The versions plugin kind lists in its VERSION answer, asked once per executable and mtime."""
        exe = self._find(kind, network)
        info = os.stat(exe)
        key = (exe, info.st_mtime_ns, info.st_size)
        if key in _SUPPORTED:
            return _SUPPORTED[key]
        probe = self._probes.get(key)
        if probe is None or probe.get_loop() is not asyncio.get_running_loop():
            probe = self._probes[key] = asyncio.ensure_future(self._probe_version(exe, kind))
        try:
            _SUPPORTED[key] = await asyncio.shield(probe)  # one caller's cancellation leaves the others theirs
        finally:
            self._probes.pop(key, None)
        return _SUPPORTED[key]

    async def _probe_version(self, exe: str, kind: str) -> tuple[str, ...]:
        """Run the plugin's VERSION command (stdin names the SPEC version this runtime speaks)."""
        stdout, stderr, code = await self._exec(exe, Args("VERSION", path=tuple(self.plugin_dirs)).env("VERSION"),
                                                {"cniVersion": SPEC_VERSION})
        reply = parse_output(kind, code, stdout, stderr)
        if reply is None:
            raise CNIError(DECODING_FAILURE, "the plugin printed nothing for VERSION", plugin=kind)
        versions = reply.get("supportedVersions") or [reply.get("cniVersion") or "0.1.0"]  # 0.1.0: before VERSION
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CNIError(DECODING_FAILURE, "the plugin's VERSION answer has no list of supportedVersions",
                           json.dumps(reply), plugin=kind)
        return tuple(versions)

    async def _prepare(self, conf: dict) -> tuple[str, str, list[dict]]:
        """The network's name, version and plugins, validated first when the runtime negotiates."""
        if self.negotiate:
            await self.validate(conf)
        return _network(conf)

    def _find(self, kind: str, network: str) -> str:
        """The plugin's executable, or an error naming the plugin and every CNI_PATH directory."""
        try:
            return find_plugin(kind, self.plugin_dirs)
        except CNIError:
            where = f"network {network!r} lists plugin {kind!r}" if network else f"plugin {kind!r}"
            raise CNIError(UNKNOWN, f"{where}, which is not found in CNI_PATH {os.pathsep.join(self.plugin_dirs)}",
                           "install it in one of those directories or add its directory to the plugin dirs",
                           plugin=kind) from None

    async def _run(self, command: str, plugin: dict, name: str, version: str, att: Attachment | None,
                   prev: dict | None) -> dict | None:
        """Execute one plugin inside exec_netns with the SPEC's environment and stdin."""
        kind = plugin["type"]
        exe = self._find(kind, name)
        stdin = plugin | {"name": name, "cniVersion": version} | ({"prevResult": prev} if prev else {})
        args = (Args(command, att.container_id, att.netns_path, att.ifname, tuple(self.plugin_dirs), att.args) if att
                else Args(command, path=tuple(self.plugin_dirs)))
        stdout, stderr, code = await self._exec(exe, args.env(command), stdin)
        return parse_output(kind, code, stdout, stderr)

    async def _exec(self, exe: str, env: dict[str, str], stdin: dict) -> tuple[str, str, int]:
        """One plugin process inside exec_netns: its stdout, stderr and exit status."""
        done = await commands.run(self.exec_netns, [exe], json.dumps(stdin), env)
        return done.out, done.err, done.code

    def _cache(self, name: str, att: Attachment) -> Path:
        return self.cache_dir / f"{name}-{att.container_id}-{att.ifname}"

    def _write_cache(self, name: str, att: Attachment, conf: dict, result: dict,
                     capabilities: Mapping[str, object]) -> None:
        entry = {"kind": "cniCacheV1", "containerId": att.container_id, "ifName": att.ifname,
                 "networkName": name, "config": conf, "capabilityArgs": dict(capabilities), "result": result}
        path = self._cache(name, att)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(entry))
        temporary.replace(path)  # a reader never sees half a file

    def _cached_entry(self, name: str, att: Attachment) -> dict | None:
        try:
            return json.loads(self._cache(name, att).read_text())
        except FileNotFoundError:
            return None


def _ipam_type(plugin: dict) -> str:
    """The type of the plugin's IPAM plugin, or "" when it has none."""
    ipam = plugin.get("ipam")
    return ipam.get("type", "") if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) else ""
