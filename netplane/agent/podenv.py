"""What the kubelet gives a pod's containers to see, as upstream's kubelet makes it: the pod's
hostname and domain, its /etc/hosts, /etc/resolv.conf for its dnsPolicy, and each container's
environment (Service links, env and envFrom with their sources, ``$(VAR)`` expansion)."""
from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from netplane.api.quantity import parse as parse_quantity
from netplane.names import CLUSTER_DOMAIN

MAX_NAMESERVERS = 3  # the resolver's limit; the kubelet drops the rest
HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
LOCAL_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
               "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")


class ConfigError(Exception):
    """What keeps a container from being created (CreateContainerConfigError), worded as upstream."""


def hostname_and_domain(pod: dict, cluster_domain: str = CLUSTER_DOMAIN) -> tuple[str, str]:
    """The pod's hostname (spec.hostname, else its name cut to 63 characters) and, with a
    spec.subdomain, its domain ``<subdomain>.<namespace>.svc.<cluster domain>``."""
    spec, meta = pod.get("spec", {}), pod["metadata"]
    name = spec.get("hostname") or meta["name"][:63].rstrip("-.")
    domain = f"{spec['subdomain']}.{meta.get('namespace', 'default')}.svc.{cluster_domain}" \
        if spec.get("subdomain") else ""
    return name, domain


def hosts_file(pod: dict, pod_ips: list[str], cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The kubelet-managed /etc/hosts: localhost lines, the pod's addresses, then hostAliases."""
    name, domain = hostname_and_domain(pod, cluster_domain)
    out = [HOSTS_HEADER, LOCAL_HOSTS]
    out += [f"{ip}\t{name}.{domain}\t{name}\n" if domain else f"{ip}\t{name}\n" for ip in pod_ips]
    aliases = pod.get("spec", {}).get("hostAliases") or []
    if aliases:
        out.append("\n# Entries added by HostAliases.\n")
        out += [f"{a.get('ip', '')}\t{chr(9).join(a.get('hostnames') or [])}\n" for a in aliases]
    return "".join(out)


@dataclass(frozen=True)
class Resolv:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def text(self) -> str:
        out = [f"nameserver {s}\n" for s in self.nameservers]
        if self.searches:
            out.append(f"search {' '.join(self.searches)}\n")
        if self.options:
            out.append(f"options {' '.join(self.options)}\n")
        return "".join(out)


def parse_resolv(text: str) -> Resolv:
    servers, searches, options = [], [], []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            searches = words[1:]
        elif words[0] == "options":
            options += words[1:]
    return Resolv(tuple(servers), tuple(searches), tuple(options))


def _merge_options(base: tuple[str, ...], extra: list[dict]) -> tuple[str, ...]:
    """Options by name, a later one replacing an earlier one of the same name."""
    found: dict[str, str] = {}
    for option in base:
        found[option.split(":", 1)[0]] = option
    for option in extra:
        name = option.get("name", "")
        found[name] = f"{name}:{option['value']}" if option.get("value") is not None else name
    return tuple(found.values())


def resolv_conf(pod: dict, cluster_dns: list[str], node: Resolv, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """/etc/resolv.conf for the pod's dnsPolicy (ClusterFirst, ClusterFirstWithHostNet, Default,
    None), with its dnsConfig merged in, as the kubelet writes it."""
    spec = pod.get("spec", {})
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # upstream: ClusterFirst on the host's network falls back to the node's
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster_dns:
        ns = pod["metadata"].get("namespace", "default")
        searches = (f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *node.searches)
        base = Resolv(tuple(cluster_dns), searches, ("ndots:5",))
    elif policy == "None":
        base = Resolv()
    else:
        base = node
    config = spec.get("dnsConfig") or {}
    servers = list(dict.fromkeys([*base.nameservers, *(config.get("nameservers") or [])]))[:MAX_NAMESERVERS]
    searches = list(dict.fromkeys([*base.searches, *(config.get("searches") or [])]))
    return Resolv(tuple(servers), tuple(searches), _merge_options(base.options, config.get("options") or [])).text()


# -- environment

def _env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def service_links(services: list[dict]) -> dict[str, str]:
    """Docker-link-style variables of Services that have a cluster IP (``WEB_SERVICE_HOST``, ...)."""
    out: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: s["metadata"]["name"]):
        spec = svc.get("spec", {})
        ip, ports = spec.get("clusterIP"), spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = _env_name(svc["metadata"]["name"])
        out[f"{name}_SERVICE_HOST"] = ip
        out[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                out[f"{name}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
        first = ports[0]
        out[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{proto.upper()}"
            out[prefix] = f"{proto.lower()}://{ip}:{port['port']}"
            out[f"{prefix}_PROTO"] = proto.lower()
            out[f"{prefix}_PORT"] = str(port["port"])
            out[f"{prefix}_ADDR"] = ip
    return out


_REFERENCE = re.compile(r"\$\$|\$\(([^)$]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is a ``$``, anything
    else is left as written."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REFERENCE.sub(one, text)


_LABEL_PATH = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


def field_value(pod: dict, path: str) -> str:
    """A fieldRef's value, for the fields upstream lets env and the downward API read."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    if found := _LABEL_PATH.fullmatch(path):
        return str((meta.get(found[1]) or {}).get(found[2], ""))
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""), "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(path.split(".")[1]) or {}).items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path])


def quantity(value: str) -> float:
    """A Kubernetes quantity (``128Mi``, ``500m``) as a number."""
    try:
        return parse_quantity(value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resource_value(container: dict, ref: dict, allocatable: Mapping[str, str]) -> str:
    """A resourceFieldRef: the container's limit or request (the node's allocatable for a limit not
    set), divided by the divisor and rounded up, as the downward API says it."""
    import math

    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    found = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if found is None:
        found = allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(ref.get("divisor") or "1")
    return str(max(math.ceil(quantity(found) / divisor), 0 if kind == "requests" and found == "0" else 1))


Lookup = Callable[[str, str], dict | None]  # (plural, name) -> the object in the pod's namespace, or None


def _key_ref(kind: str, ref: dict, lookup: Lookup, namespace: str) -> str | None:
    plural = "configmaps" if kind == "ConfigMap" else "secrets"
    found = lookup(plural, ref.get("name", ""))
    if found is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
    data = found.get("data") or {}
    key = ref.get("key", "")
    if key not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{ref.get('name', '')}")
    return base64.b64decode(data[key]).decode(errors="replace") if kind == "Secret" else data[key]


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def container_env(pod: dict, container: dict, services: list[dict], lookup: Lookup,
                  allocatable: Mapping[str, str] | None = None) -> dict[str, str]:
    """A container's environment, without the image's: envFrom, then env (each value expanded
    against what came before), then the Service links not already set."""
    namespace = pod["metadata"].get("namespace", "default")
    links = service_links(services)
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else \
            ("Secret", source.get("secretRef") or {})
        found = lookup("configmaps" if kind == "ConfigMap" else "secrets", ref.get("name", ""))
        if found is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
        for key, value in (found.get("data") or {}).items():
            if _ENV_NAME.fullmatch(prefix + key):  # upstream skips the others (with an event)
                env[prefix + key] = base64.b64decode(value).decode(errors="replace") if kind == "Secret" else value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), {**links, **env})
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"], allocatable or {})
        else:
            kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
            value = _key_ref(kind, source.get("configMapKeyRef") or source.get("secretKeyRef") or {}, lookup,
                             namespace)
            if value is not None:
                env[name] = value
    for name, value in links.items():
        env.setdefault(name, value)
    return env
