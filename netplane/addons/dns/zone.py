"""The cluster's names and the answer to one question, as CoreDNS's kubernetes plugin gives it.

Names in the cluster zone (``cluster.local``), after the Kubernetes DNS specification:

- ``<svc>.<ns>.svc.<zone>``: A/AAAA of a ClusterIP Service's addresses; of a headless Service,
  those of its ready endpoints; a CNAME to an ExternalName Service's name;
- ``<endpoint>.<svc>.<ns>.svc.<zone>``: one endpoint of a headless Service, named by its hostname
  or its address with dashes;
- ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: SRV of a named port (a ClusterIP Service's one
  record, a headless Service's one per endpoint, each with its target's address added);
- ``<a-b-c-d>.<ns>.pod.<zone>``: a pod's address, given back as asked (``pods insecure``), or
  only when a pod of that namespace has it (``pods verified``: then the server watches Pods);
- ``dns-version.<zone>``: TXT ``1.1.0``; the zone's apex: its SOA and NS (kube-dns's name);
- PTR in the reverse zones for Service and endpoint addresses.

NXDOMAIN or NODATA as the plugin decides: a namespace that does not exist, a Service that does
not, a headless Service without ready endpoints, a label too many are NXDOMAIN; an existing name
asked for a type it has none of (AAAA of an IPv4 Service, MX of anything, the bare namespace
``<ns>.svc.<zone>``, ``svc.<zone>``, SOA of anything but the apex) is NODATA. Both carry the zone's
SOA. The plugin's quirks are kept: TXT of a name that stands for no Service is NXDOMAIN, an
ExternalName whose target in the zone has no record is NODATA (its CNAME dropped too).

Names outside every zone come from the Corefile's hosts block, else NXDOMAIN: nothing is asked of
any other server. (CoreDNS without its forward plugin would say SERVFAIL; a lab has no outside to
ask, and NXDOMAIN tells a client so at once.)
"""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from netplane import names
from netplane.addons.dns import wire
from netplane.addons.dns.corefile import Config

DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
MAX_SOA_TTL = 300
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
CNAME_DEPTH = 8


class InvalidName(Exception):
    """A name in the zone that the specification has no place for (NXDOMAIN)."""


@dataclass(frozen=True)
class Port:
    name: str
    protocol: str  # lower case
    number: int


@dataclass(frozen=True)
class Endpoint:
    address: str
    label: str  # its name under the Service: its hostname, or its address with dashes
    ports: tuple[Port, ...]


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    kind: str  # ClusterIP, NodePort, LoadBalancer, ExternalName; "headless" for clusterIP None
    addresses: tuple[str, ...]
    ports: tuple[Port, ...]
    external_name: str = ""


@dataclass(frozen=True)
class Found:
    """One thing a name stands for: an address or a name (ExternalName), with a port for SRV."""
    host: str
    port: int | None
    domain: str  # the name of the thing itself: the Service's, or the endpoint's


@dataclass
class Request:
    """A name in the cluster zone, as the plugin parses it (right to left)."""
    kind: str = ""  # "svc", "pod" or "" (the apex, ``svc.<zone>``, ``pod.<zone>``)
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""


def parse_request(base: str) -> Request:
    """The parts of a name below the zone (``base``); InvalidName when the specification has none."""
    if base in ("", "svc", "pod"):
        return Request()
    labels = base.split(".")
    r = Request(kind=labels.pop())
    if r.kind not in ("svc", "pod"):
        raise InvalidName(base)
    for attr in ("namespace", "service"):
        if not labels:
            return r
        setattr(r, attr, labels.pop())
    if len(labels) == 1:
        r.endpoint = labels[0]
    elif len(labels) == 2:
        r.port, r.protocol = labels[0].removeprefix("_"), labels[1].removeprefix("_")
    elif labels:
        raise InvalidName(base)
    return r


def _dashed(address: str) -> str:
    return address.replace(".", "-").replace(":", "-")


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def _ports(found: Iterable[dict] | None) -> tuple[Port, ...]:
    return tuple(Port(p.get("name") or "", (p.get("protocol") or "TCP").lower(), int(p["port"]))
                 for p in found or () if p.get("port") is not None)


def service_of(obj: dict) -> Service:
    spec, meta = obj.get("spec") or {}, obj["metadata"]
    kind = spec.get("type") or "ClusterIP"
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    if kind == "ClusterIP" and spec.get("clusterIP") == "None":
        kind = "headless"
    return Service(meta["namespace"], meta["name"], kind, tuple(ips), _ports(spec.get("ports")),
                   (spec.get("externalName") or "").rstrip(".").lower())


def endpoints_of(slices: Iterable[dict]) -> dict[tuple[str, str], list[Endpoint]]:
    """The ready endpoints of each Service (namespace, name), from its EndpointSlices."""
    out: dict[tuple[str, str], list[Endpoint]] = {}
    for s in slices:
        service = (s["metadata"].get("labels") or {}).get(names.SERVICE_NAME_LABEL)
        if not service:
            continue
        ports = _ports(s.get("ports"))
        listed = out.setdefault((s["metadata"]["namespace"], service), [])
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready") is False:
                continue
            for address in e.get("addresses") or []:
                listed.append(Endpoint(address, (e.get("hostname") or _dashed(address)).lower(), ports))
    return out


@dataclass
class Zone:
    """The cluster as names: built from the watched objects, answering questions."""
    config: Config
    namespaces: set[str]
    services: dict[tuple[str, str], Service]
    endpoints: dict[tuple[str, str], list[Endpoint]]
    serial: int
    own_addresses: tuple[str, ...] = ()  # the DNS Service's addresses (ns.dns.<zone>)
    pod_addresses: frozenset[tuple[str, str]] = frozenset()  # (namespace, podIP) of live pods (pods verified)
    reverse: dict[str, list[str]] = field(init=False)  # reverse name -> the names it points at

    def __post_init__(self) -> None:
        """PTRs: a Service address names its Service; any other address, each endpoint that has it."""
        self.reverse = {}
        zone = self.config.zone
        for svc in self.services.values():
            for address in svc.addresses:
                self.reverse.setdefault(reverse_name(address), [f"{svc.name}.{svc.namespace}.svc.{zone}"])
        by_endpoint: dict[str, list[str]] = {}
        for (ns, name), endpoints in self.endpoints.items():
            if (ns, name) in self.services:
                for e in endpoints:
                    by_endpoint.setdefault(reverse_name(e.address), []).append(f"{e.label}.{name}.{ns}.svc.{zone}")
        for key, found in by_endpoint.items():
            self.reverse.setdefault(key, list(dict.fromkeys(found)))

    @classmethod
    def build(cls, config: Config, namespaces: Iterable[dict], services: Iterable[dict], slices: Iterable[dict],
              serial: int, pods: Iterable[dict] = (), own_service: tuple[str, str] = ("kube-system", "kube-dns")) -> Zone:
        found = {(s.namespace, s.name): s for s in map(service_of, services)}
        own = found.get(own_service)
        live = frozenset((p["metadata"]["namespace"], p["status"]["podIP"]) for p in pods
                         if (p.get("status") or {}).get("podIP") and "deletionTimestamp" not in p["metadata"]
                         and p["status"].get("phase") in ("Pending", "Running"))
        return cls(config, {n["metadata"]["name"] for n in namespaces}, found, endpoints_of(slices), serial,
                   own.addresses if own else (), live)

    # -- the answer

    def answer(self, question: wire.Question, depth: int = 0) -> wire.Answer:
        """The answer to a question (``depth``: CNAMEs followed to get here)."""
        name, qtype = question.key.rstrip("."), question.qtype
        if qtype in (wire.AXFR, 251):  # zone transfers: refused, as the plugin does
            return wire.Answer(wire.REFUSED, authoritative=False)
        zone = self.config.zone
        if name == zone or name.endswith("." + zone):
            return self._in_zone(question.name, name[:-len(zone)].rstrip("."), qtype, depth)
        reverse = next((z for z in self.config.reverse_zones if name == z or name.endswith("." + z)), None)
        if reverse is not None and name in self.reverse and qtype == wire.PTR:
            return wire.Answer(answers=tuple(wire.ptr(question.name, self.config.ttl, target)
                                             for target in self.reverse[name]))
        return self._from_hosts(question, name)  # what the reverse zones lack falls through, as kubeadm's

    def soa(self) -> wire.Record:
        zone, ttl = self.config.zone, self.config.ttl
        return wire.soa(zone, min(ttl, MAX_SOA_TTL), f"ns.dns.{zone}", f"hostmaster.{zone}", self.serial, SOA_REFRESH,
                        SOA_RETRY, SOA_EXPIRE, ttl)

    def _negative(self, rcode: int) -> wire.Answer:
        return wire.Answer(rcode, authority=(self.soa(),))

    def _from_hosts(self, question: wire.Question, name: str) -> wire.Answer:
        """A name outside the zones: the hosts block's, else NXDOMAIN (never asked of anyone else)."""
        addresses = self.config.hosts.get(name)
        if addresses is None:
            reverse = {reverse_name(a): n for n, found in self.config.hosts.items() for a in found}
            if name in reverse and question.qtype == wire.PTR:
                return wire.Answer(answers=(wire.ptr(question.name, self.config.hosts_ttl, reverse[name]),))
            return wire.Answer(wire.NXDOMAIN, authoritative=False)
        wanted = wire.AAAA if question.qtype == wire.AAAA else wire.A
        records = [wire.a(question.name, self.config.hosts_ttl, a) for a in addresses]
        return wire.Answer(answers=tuple(r for r in records if r.rtype == wanted and question.qtype in (wire.A,
                                                                                                      wire.AAAA)))

    def _in_zone(self, qname: str, base: str, qtype: int, depth: int) -> wire.Answer:
        zone, ttl = self.config.zone, self.config.ttl
        if base == "" and qtype == wire.SOA:
            return wire.Answer(answers=(self.soa(),))
        if base == "" and qtype == wire.NS:
            target = f"kube-dns.kube-system.svc.{zone}" if self.own_addresses else f"ns.dns.{zone}"
            return wire.Answer(answers=(wire.ns(qname, ttl, target),),
                               additional=tuple(wire.a(target, ttl, a) for a in self.own_addresses))
        if qtype == wire.SOA:  # asked of any other name: no lookup, NODATA
            return self._negative(wire.NOERROR)
        if base == "dns-version" and qtype == wire.TXT:
            return wire.Answer(answers=(wire.txt(qname, DNS_VERSION_TTL, DNS_SCHEMA_VERSION),))
        if base == "ns.dns" and qtype in (wire.A, wire.AAAA):
            return wire.Answer(answers=tuple(
                r for r in (wire.a(qname, ttl, a) for a in self.own_addresses) if r.rtype == qtype))
        try:
            found = self.records(parse_request(base))
        except InvalidName:
            return self._negative(wire.NXDOMAIN)
        if found is None or (qtype == wire.TXT and not found):  # the plugin's TXT: no Service, no name
            return self._negative(wire.NXDOMAIN)
        answers, extra = self._typed(qname, qtype, found, depth)
        if not answers:
            return self._negative(wire.NOERROR)
        return wire.Answer(answers=tuple(answers), additional=tuple(extra))

    def records(self, r: Request) -> list[Found] | None:
        """What a parsed name stands for; None when it names nothing (NXDOMAIN), [] when it names
        something with no records (NODATA)."""
        zone = self.config.zone
        if not r.kind:
            return []
        if r.namespace not in self.namespaces:
            return None
        if r.kind == "pod":
            return self._pod(r)
        if not r.service:
            return []
        svc = self.services.get((r.namespace, r.service))
        if svc is None:
            return None
        domain = f"{svc.name}.{svc.namespace}.svc.{zone}"
        if svc.kind == "ExternalName":
            if not svc.external_name or _is_address(svc.external_name) or r.endpoint or r.port:
                return None
            return [Found(svc.external_name, p.number, domain) for p in svc.ports] or \
                [Found(svc.external_name, None, domain)]
        matches = [p for p in svc.ports if _port_matches(r, p)]
        if svc.kind == "headless" or r.endpoint:
            out = []
            for e in self.endpoints.get((svc.namespace, svc.name), []):
                if r.endpoint and r.endpoint != e.label:
                    continue
                ports = [p for p in e.ports if _port_matches(r, p)] if e.ports else ([] if r.port else [None])
                out += [Found(e.address, p.number if p else None, f"{e.label}.{domain}") for p in ports]
            return out or None
        if not matches:
            return None
        return [Found(address, p.number, domain) for p in matches for address in svc.addresses]

    def _pod(self, r: Request) -> list[Found] | None:
        if self.config.pods == "disabled":
            return None
        if not r.service:
            return []
        dashed = r.service
        address = dashed.replace("-", ".") if dashed.count("-") == 3 and "--" not in dashed else \
            dashed.replace("-", ":")
        if not _is_address(address):
            return None
        address = str(ipaddress.ip_address(address))
        if self.config.pods == "verified" and (r.namespace, address) not in self.pod_addresses:
            return None
        return [Found(address, None,
                      f"{r.service}.{r.namespace}.pod.{self.config.zone}")]

    def _typed(self, qname: str, qtype: int, found: list[Found], depth: int) -> tuple[list[wire.Record], list]:
        """The answer records of a type for what a name stands for, and the additional ones."""
        ttl = self.config.ttl
        if qtype in (wire.A, wire.AAAA):
            out: list[wire.Record] = []
            seen: set[str] = set()
            for f in found:
                if f.host in seen:
                    continue
                seen.add(f.host)
                if _is_address(f.host):
                    record = wire.a(qname, ttl, f.host)
                    if record.rtype == qtype:
                        out.append(record)
                    continue
                chased = self._chased(f.host, qtype, depth)
                if chased is not None:
                    out += [wire.cname(qname, ttl, f.host), *chased]
            if all(r.rtype == qtype for r in out):  # the loadbalance plugin: a fresh order each time
                random.shuffle(out)
            return out, []
        if qtype == wire.CNAME:
            return [wire.cname(qname, ttl, f.host) for f in found if not _is_address(f.host)][:1], []
        if qtype == wire.SRV:  # ExternalNames have none; weights share 100 among the entries before merging
            entries = [f for f in found if f.port is not None and _is_address(f.host)]
            weight = max(1, 100 // len(entries)) if entries else 0
            targets = dict.fromkeys((f.domain, f.port) for f in entries)
            answers = [wire.srv(qname, ttl, 0, weight, port, target) for target, port in targets]
            extra = dict.fromkeys(wire.a(f.domain, ttl, f.host) for f in entries)
            return answers, list(extra)
        return [], []

    def _chased(self, target: str, qtype: int, depth: int) -> list[wire.Record] | None:
        """The records of an ExternalName's target: from the zone (None when it has none there, which
        drops the CNAME too), else from the hosts block (perhaps nothing: the CNAME alone)."""
        if depth >= CNAME_DEPTH:
            return []
        found = self.answer(wire.Question(target, qtype), depth + 1)
        zone = self.config.zone
        if target == zone or target.endswith("." + zone):
            return list(found.answers) if found.answers else None
        return list(found.answers)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port_matches(r: Request, p: Port) -> bool:
    return (not r.port or r.port == p.name.lower()) and (not r.protocol or r.protocol == p.protocol)
