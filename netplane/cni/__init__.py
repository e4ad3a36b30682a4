"""The CNI protocol, shared by netplane's plugins and its runtime (CNI SPEC 1.1.0).

Plugins answer 0.3.1, 0.4.0, 1.0.0 and 1.1.0 configurations (GC and STATUS from 1.1.0 on); their
handlers build 1.0.0-shaped results (1.1.0 results have the same shape) and
``main`` (the skel: env, stdin and stdout injectable, so tests call a plugin in-process) reshapes
them for the configuration's version. Only the standard library is imported here: a plugin is a
fresh interpreter per command, and VERSION or a refused configuration should not pay for netlink.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

SUPPORTED_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
SPEC_VERSION = "1.1.0"

# The SPEC's well-known error codes, plus the skel's 999 for failures the SPEC has no code for.
UNKNOWN = 0
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS: the plugin cannot serve ADD now
LIMITED_CONNECTIVITY = 51  # STATUS: and existing attachments may have limited connectivity
INTERNAL = 999

# The runtime parameters each command needs (CNI_NETNS is optional for DEL: the pod may be gone).
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
PER_ATTACHMENT = ("ADD", "CHECK", "DEL")  # the commands about one container's interface
SINCE = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}  # the first version that has a command
CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")


class CNIError(Exception):
    """A CNI error: the SPEC's code, msg and details, and the plugin that reported it."""

    def __init__(self, code: int, msg: str, details: str = "", plugin: str = "") -> None:
        super().__init__(code, msg, details, plugin)
        self.code, self.msg, self.details, self.plugin = code, msg, details, plugin

    def __str__(self) -> str:
        text = f"{self.plugin or 'cni'}: error {self.code}: {self.msg}"
        return f"{text} ({self.details})" if self.details else text

    def to_json(self, version: str) -> dict:
        reply = {"cniVersion": version, "code": self.code, "msg": self.msg}
        return reply | ({"details": self.details} if self.details else {})


@dataclass(frozen=True)
class Args:
    """The CNI_* runtime parameters of one plugin call."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: tuple[str, ...] = ()
    args: str = ""

    def env(self, command: str) -> dict[str, str]:
        """The environment that hands these parameters, with command, to a delegated plugin."""
        return dict(os.environ) | {
            "CNI_COMMAND": command, "CNI_CONTAINERID": self.container_id, "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname, "CNI_PATH": os.pathsep.join(self.path), "CNI_ARGS": self.args,
        }


Handler = Callable[[Args, dict], "dict | None"]


def cni_args(args: Args, known: tuple[str, ...]) -> dict[str, str]:
    """CNI_ARGS as the reference plugins read them: ``KEY=VALUE`` items split by ';', a key the
    plugin does not know refused (code 4) unless ``IgnoreUnknown`` is true."""
    items = [item.split("=", 1) for item in args.args.split(";") if item]
    if any(len(item) != 2 for item in items):
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS {args.args!r}: each item must be KEY=VALUE")
    found = dict(items)
    unknown = sorted(set(found) - {*known, "IgnoreUnknown"})
    if unknown and found.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS: unknown args {unknown}", "IgnoreUnknown=1 lets them through")
    return {key: value for key, value in found.items() if key in known}


def parse_args(env: Mapping[str, str]) -> Args:
    """The runtime parameters from env, refused (code 4) when the command's required ones are bad."""
    command = env.get("CNI_COMMAND", "")
    if command not in REQUIRED_ENV:
        raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND {command!r}")
    missing = [key for key in REQUIRED_ENV[command] if not env.get(key)]
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    args = Args(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""),
                env.get("CNI_IFNAME", ""), tuple(p for p in env.get("CNI_PATH", "").split(os.pathsep) if p),
                env.get("CNI_ARGS", ""))
    if command in PER_ATTACHMENT and not CONTAINER_ID_RE.match(args.container_id):
        raise CNIError(INVALID_ENVIRONMENT, "invalid characters in CNI_CONTAINERID", args.container_id)
    if command in PER_ATTACHMENT and (not IFNAME_RE.match(args.ifname) or args.ifname in (".", "..")):
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", args.ifname)
    return args


def parse_config(text: str) -> dict:
    """The network configuration from stdin: a JSON object (code 6) of a supported version (code 1)."""
    try:
        conf = json.loads(text)
    except ValueError as err:
        raise CNIError(DECODING_FAILURE, "error decoding network config", str(err)) from None
    if not isinstance(conf, dict):
        raise CNIError(DECODING_FAILURE, "network config is not a JSON object")
    version = conf.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}")
    return conf


def at_least(version: str, minimum: str) -> bool:
    return tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def versioned(result: dict, version: str) -> dict:
    """A 1.0.0 result in the shape of version: before 1.0.0 every ip names its IP version."""
    if at_least(version, "1.0.0"):
        return {"cniVersion": version} | result
    ips = [ip | {"version": "6" if ":" in ip["address"] else "4"} for ip in result.get("ips", [])]
    return {"cniVersion": version} | result | {"ips": ips}


def main(handlers: Mapping[str, Handler], env: Mapping[str, str] | None = None,
         stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """The skel: run one CNI command; print its result or the SPEC's error; return the exit status."""
    env = os.environ if env is None else env
    stdout = sys.stdout if stdout is None else stdout
    version = SPEC_VERSION
    try:
        args = parse_args(env)
        if args.command == "VERSION":
            reply = {"cniVersion": SPEC_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
        else:
            conf = parse_config((sys.stdin if stdin is None else stdin).read())
            version = conf["cniVersion"]
            if not at_least(version, SINCE.get(args.command, "0.0.0")):
                raise CNIError(INCOMPATIBLE_VERSION, f"config version does not allow {args.command}",
                               f"{args.command} needs cniVersion {SINCE[args.command]} or later, not {version}")
            result = handlers[args.command](args, conf)
            reply = None if result is None else versioned(result, version)
    except CNIError as err:
        reply, status = err.to_json(version), 1
    except Exception as err:  # noqa: BLE001 - any other failure is the skel's code 999
        reply, status = CNIError(INTERNAL, str(err) or type(err).__name__).to_json(version), 1
    else:
        status = 0
    if reply is not None:
        json.dump(reply, stdout)
        stdout.write("\n")
    return status


def find_plugin(name: str, dirs: tuple[str, ...] | list[str]) -> str:
    """The executable of plugin name in the first of dirs that has it, as CNI_PATH is searched."""
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.basename(name) == name and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(UNKNOWN, f"plugin not found in {list(dirs)}", plugin=name)


def parse_output(plugin: str, status: int, stdout: str, stderr: str) -> dict | None:
    """A finished plugin's result (None when it printed nothing), or its failure as CNIError."""
    try:
        reply = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        reply = stdout.strip()
    if status != 0:
        if isinstance(reply, dict) and "code" in reply:
            msg, details = str(reply.get("msg", "")), str(reply.get("details", ""))
            raise CNIError(int(reply["code"]), msg, details, plugin)
        detail = stderr.strip() or str(reply or "")
        raise CNIError(UNKNOWN, f"plugin exited with status {status} without a CNI error", detail, plugin)
    if reply is not None and not isinstance(reply, dict):
        raise CNIError(DECODING_FAILURE, "plugin printed something other than a JSON result", reply, plugin)
    return reply
