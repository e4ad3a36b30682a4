"""The Corefile, as the ConfigMap ``coredns`` in kube-system holds it: the part this server reads.

A server block (``.:53 { ... }``) holds plugins, one per line, each with arguments and perhaps a
block of its own. What is read:

- ``kubernetes ZONES... { pods insecure|verified|disabled; ttl N; fallthrough [ZONES...] }``: the
  cluster's zone (``cluster.local``) and the reverse zones it answers;
- ``hosts [FILE] { ADDRESS NAME...; ttl N; fallthrough }``: the lab's own static names, answered
  inside and outside the cluster's zone;
- ``log``: a line per query on stdout, in the log plugin's format;
- ``prometheus [ADDRESS]``, ``health [ADDRESS]``, ``ready [ADDRESS]``: where metrics, liveness and
  readiness are served (:9153, :8080, :8181);
- ``errors``, ``reload``, ``loadbalance``, ``cache``, ``loop``: accepted (errors are always logged,
  the file is always reloaded, answers are always shuffled, nothing needs a cache here).

``forward`` and every other plugin that would send a query out of the lab is refused: a lab never
sends anything outside, and a name neither zone nor hosts knows is answered REFUSED, as CoreDNS
answers a name no plugin is for.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

DEFAULT = """\
.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    prometheus :9153
    reload
    loadbalance
}
"""
ACCEPTED = {"errors", "reload", "loadbalance", "cache", "loop", "debug", "whoami"}
NEVER = {"forward", "proxy", "grpc", "etcd", "route53", "clouddns", "azure", "k8s_external"}
_TOKEN = re.compile(r'"[^"]*"|\{|\}|[^\s{}"]+')


class CorefileError(ValueError):
    """A Corefile this server cannot run."""


@dataclass
class Config:
    zone: str = "cluster.local"  # the cluster's domain, without the final dot
    reverse_zones: tuple[str, ...] = ("in-addr.arpa", "ip6.arpa")
    ttl: int = 5
    pods: str = "insecure"  # pod records: insecure, verified or disabled
    fallthrough: tuple[str, ...] = ()
    hosts: dict[str, list[str]] = field(default_factory=dict)  # name -> addresses
    hosts_ttl: int = 3600
    log: bool = False
    port: int = 53
    metrics: str = ":9153"
    health: str = ":8080"
    ready: str = ":8181"


@dataclass
class _Directive:
    name: str
    args: list[str]
    block: list[_Directive]


def _lines(text: str) -> list[list[str]]:
    """Each line's tokens, comments gone; braces are tokens of their own."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        tokens = [t.strip('"') if t.startswith('"') else t for t in _TOKEN.findall(line)]
        if tokens:
            out.append(tokens)
    return out


def _directives(lines: list[list[str]], at: int, top: bool = False) -> tuple[list[_Directive], int]:
    """The directives from line ``at`` to the ``}`` that closes their block (or the end at the top)."""
    found: list[_Directive] = []
    while at < len(lines):
        tokens = lines[at]
        at += 1
        if tokens == ["}"]:
            if top:
                raise CorefileError("a '}' closes no block")
            return found, at
        opens = tokens[-1] == "{"
        words = tokens[:-1] if opens else tokens
        if "{" in words or "}" in words:
            raise CorefileError(f"put braces at the ends of lines: {' '.join(tokens)}")
        block: list[_Directive] = []
        if opens:
            block, at = _directives(lines, at)
        found.append(_Directive(words[0], words[1:], block))
    if not top:
        raise CorefileError("a block is not closed")
    return found, at


def _number(directive: _Directive, value: str) -> int:
    if not value.isdigit():
        raise CorefileError(f"{directive.name}: {value!r} is not a number of seconds")
    return int(value)


def _kubernetes(config: Config, d: _Directive) -> None:
    zones = [z.rstrip(".").lower() for z in d.args] or ["cluster.local"]
    forward = [z for z in zones if not z.endswith(".arpa")]
    if len(forward) != 1:
        raise CorefileError(f"kubernetes: give one cluster zone (and reverse zones), not {' '.join(d.args)}")
    config.zone, config.reverse_zones = forward[0], tuple(z for z in zones if z.endswith(".arpa"))
    for option in d.block:
        if option.name == "pods" and option.args and option.args[0] in ("insecure", "verified", "disabled"):
            config.pods = option.args[0]
        elif option.name == "ttl" and option.args:
            config.ttl = _number(option, option.args[0])
            if config.ttl > 3600:
                raise CorefileError("kubernetes: ttl is at most 3600 seconds")
        elif option.name == "fallthrough":
            config.fallthrough = tuple(z.rstrip(".").lower() for z in option.args) or ("",)
        elif option.name not in ("endpoint", "kubeconfig", "namespaces", "labels", "noendpoints",
                                 "endpoint_pod_names", "ignore", "multicluster", "apiserver"):
            raise CorefileError(f"kubernetes: unknown option {option.name!r}")


def _hosts(config: Config, d: _Directive) -> None:
    for entry in d.block:
        if entry.name == "ttl" and entry.args:
            config.hosts_ttl = _number(entry, entry.args[0])
        elif entry.name in ("fallthrough", "reload", "no_reverse"):
            continue
        else:
            try:
                address = str(ipaddress.ip_address(entry.name))
            except ValueError:
                raise CorefileError(f"hosts: {entry.name!r} is not an address (a line is: ADDRESS NAME...)") from None
            for name in entry.args:
                config.hosts.setdefault(name.rstrip(".").lower(), []).append(address)


def parse(text: str) -> Config:
    """The configuration of the Corefile's first server block on port 53."""
    top, _ = _directives(_lines(text), 0, top=True)
    if not top or not top[0].block:
        raise CorefileError("a Corefile is a server block: .:53 { plugins }")
    server = top[0]
    config = Config()
    seen: set[str] = set()
    address = server.name.rsplit(":", 1)
    if len(address) == 2 and address[1]:
        config.port = _number(server, address[1])
    for d in server.block:
        if d.name in seen:
            raise CorefileError(f"{d.name}: this plugin can only be used once per Server Block")
        seen.add(d.name)
        if d.name == "kubernetes":
            _kubernetes(config, d)
        elif d.name == "hosts":
            _hosts(config, d)
        elif d.name == "log":
            config.log = True
        elif d.name in ("prometheus", "health", "ready"):
            where = d.args[0] if d.args else getattr(Config, "metrics" if d.name == "prometheus" else d.name)
            setattr(config, "metrics" if d.name == "prometheus" else d.name, where)
        elif d.name in NEVER:
            raise CorefileError(f"{d.name}: netplane's DNS never sends a query out of the lab; "
                                "give names of your own in a hosts block")
        elif d.name not in ACCEPTED:
            raise CorefileError(f"unknown plugin {d.name!r}")
    return config
