"""The runtime side of CNI (libcni's job), for the kubelet: run a network's plugins for a pod.

ADD runs the plugins of a list in order, each getting the previous one's result as prevResult, and
caches the last result; CHECK runs them in order against the cached result; DEL runs them in
reverse (with the cached result as prevResult from 0.4.0 on) and drops the cache. GC (1.1.0)
deletes the cached attachments that are not among the valid ones, then asks every plugin to drop
what belongs to no valid attachment; STATUS (1.1.0) asks every plugin whether it can serve ADD. Plugins run as
subprocesses inside ``exec_netns``, the emulated node's namespace, so what they make lands there.
As with libcni, a failed ADD is not undone here: the caller runs DEL, as CRI runtimes do.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path

from netplane.cni import (CONTAINER_ID_RE, IFNAME_RE, INCOMPATIBLE_VERSION, INVALID_CONFIG, SINCE, UNKNOWN, Args,
                          CNIError, at_least, find_plugin, parse_output)
from netplane.kernel import netns

__all__ = ["Attachment", "CNIError", "Runtime", "plugin_dir"]
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def plugin_dir() -> str:
    """The repository's ``cni/`` directory: launchers of netplane's plugins, for CNI_PATH."""
    return str(Path(__file__).resolve().parents[2] / "cni")


@dataclass(frozen=True)
class Attachment:
    """One pod interface on a network: the CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME of a call."""

    container_id: str
    netns_path: str
    ifname: str = "eth0"

    def __post_init__(self) -> None:
        if not CONTAINER_ID_RE.match(self.container_id) or not IFNAME_RE.match(self.ifname):
            raise ValueError(f"bad container id or interface name: {self.container_id!r} {self.ifname!r}")


def _network(conf: dict) -> tuple[str, str, list[dict]]:
    """Name, version and plugins of a conflist or of a single plugin's configuration."""
    name, version = conf.get("name"), conf.get("cniVersion")
    plugins = conf["plugins"] if "plugins" in conf else [conf]
    if not isinstance(name, str) or not VERSION_RE.match(str(version)) or not plugins:
        raise CNIError(INVALID_CONFIG, "a network config needs a name, a cniVersion x.y.z and plugins")
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
        raise CNIError(INVALID_CONFIG, "every plugin config needs a type")
    return name, version, plugins


def _require(command: str, version: str) -> None:
    if not at_least(version, SINCE[command]):
        raise CNIError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion {SINCE[command]} or later, not {version}")


class Runtime:
    def __init__(self, plugin_dirs: list[str], cache_dir: str, exec_netns: str | None = None) -> None:
        self.plugin_dirs = list(plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.exec_netns = exec_netns

    async def add(self, conf: dict, att: Attachment) -> dict:
        """Attach the pod; the last plugin's result, which is cached for CHECK and DEL."""
        name, version, plugins = _network(conf)
        result = None
        for plugin in plugins:
            result = await self._run("ADD", plugin, name, version, att, result)
        if result is None:
            raise CNIError(UNKNOWN, "the network's plugins returned no result", plugin=plugins[-1]["type"])
        self._write_cache(name, att, conf, result)
        return result

    async def check(self, conf: dict, att: Attachment) -> None:
        """Ask every plugin whether the attachment is still as ADD made it."""
        name, version, plugins = _network(conf)
        _require("CHECK", version)
        cached = self._cached(name, att)
        if cached is None:
            raise CNIError(UNKNOWN, f"no cached result for {att.container_id} {att.ifname} on {name}")
        for plugin in plugins:
            await self._run("CHECK", plugin, name, version, att, cached)

    async def delete(self, conf: dict, att: Attachment) -> None:
        """Detach the pod; fine when already detached (the plugins make DEL idempotent)."""
        name, version, plugins = _network(conf)
        cached = self._cached(name, att) if at_least(version, "0.4.0") else None
        for plugin in reversed(plugins):
            await self._run("DEL", plugin, name, version, att, cached)
        self._cache(name, att).unlink(missing_ok=True)

    async def gc(self, conf: dict, valid: list[Attachment]) -> None:
        """Detach every cached attachment of the network that is not valid, then let each plugin
        drop what belongs to no valid attachment."""
        name, version, plugins = _network(conf)
        _require("GC", version)
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
        for plugin in plugins:
            await self._run("STATUS", plugin, name, version, None, None)

    async def _run(self, command: str, plugin: dict, name: str, version: str, att: Attachment | None,
                   prev: dict | None) -> dict | None:
        """Execute one plugin inside exec_netns with the SPEC's environment and stdin."""
        kind = plugin["type"]
        exe = find_plugin(kind, self.plugin_dirs)
        stdin = plugin | {"name": name, "cniVersion": version} | ({"prevResult": prev} if prev else {})
        args = (Args(command, att.container_id, att.netns_path, att.ifname, tuple(self.plugin_dirs)) if att
                else Args(command, path=tuple(self.plugin_dirs)))
        env = args.env(command)
        proc = await asyncio.create_subprocess_exec(
            *netns.command(self.exec_netns, [exe]), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await proc.communicate(json.dumps(stdin).encode())
        return parse_output(kind, proc.returncode, stdout, stderr)

    def _cache(self, name: str, att: Attachment) -> Path:
        return self.cache_dir / f"{name}-{att.container_id}-{att.ifname}"

    def _write_cache(self, name: str, att: Attachment, conf: dict, result: dict) -> None:
        entry = {"kind": "cniCacheV1", "containerId": att.container_id, "ifName": att.ifname,
                 "networkName": name, "config": conf, "result": result}
        path = self._cache(name, att)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(entry))
        temporary.replace(path)  # a reader never sees half a file

    def _cached(self, name: str, att: Attachment) -> dict | None:
        try:
            return json.loads(self._cache(name, att).read_text())["result"]
        except FileNotFoundError:
            return None
