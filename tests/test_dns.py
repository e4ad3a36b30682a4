"""Cluster DNS without a lab: the zone's answers to the Kubernetes DNS specification as CoreDNS's
kubernetes plugin gives them (NXDOMAIN versus NODATA, SRV weights, PTRs, ExternalNames, pod
names), the Corefile, and messages on the wire read back by dnspython, an independent parser (the
lab tests ask with dig and glibc from pods)."""
from __future__ import annotations

import dns.message
import dns.rdatatype
import pytest

from netplane.addons.dns import corefile, wire
from netplane.addons.dns.zone import Zone


def service(name: str, ns: str = "default", ip: str = "10.96.0.20", ports=(("http", "TCP", 80),), **spec) -> dict:
    body = {"clusterIP": ip, "clusterIPs": [ip] if ip != "None" else None,
            "ports": [{"name": n, "protocol": p, "port": port} for n, p, port in ports], **spec}
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint_slice(svc: str, addresses: list[tuple[str, str | None, bool]], ns: str = "default",
                   ports=(("http", "TCP", 80),)) -> dict:
    return {"metadata": {"name": f"{svc}-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"name": n, "protocol": p, "port": port} for n, p, port in ports],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}, **({"hostname": h} if h else {})}
                          for a, h, ready in addresses]}


NAMESPACES = [{"metadata": {"name": n}} for n in ("default", "kube-system", "shop")]
SERVICES = [
    service("web"),
    service("db", ip="None", ports=(("pg", "TCP", 5432),)),
    service("empty", ip="None"),
    service("out", ip="", ports=(), type="ExternalName", externalName="db.example.org."),
    service("inner", ip="", ports=(), type="ExternalName", externalName="web.default.svc.cluster.local"),
    service("kube-dns", "kube-system", "10.96.0.10", (("dns", "UDP", 53), ("dns-tcp", "TCP", 53),
                                                       ("metrics", "TCP", 9153))),
]
SLICES = [
    endpoint_slice("web", [("10.244.1.5", None, True), ("10.244.2.6", None, False)]),
    endpoint_slice("db", [("10.244.1.7", "db-0", True), ("10.244.2.8", None, True)], ports=(("pg", "TCP", 5432),)),
    endpoint_slice("empty", [("10.244.1.9", None, False)]),
]
HOSTS = """\
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    hosts {
        192.0.2.7 registry.lab
    }
}
"""


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone.build(corefile.parse(HOSTS), NAMESPACES, SERVICES, SLICES, serial=1700000000)


def ask(zone: Zone, name: str, qtype: int) -> wire.Answer:
    return zone.answer(wire.Question(name, qtype))


def texts(records) -> list[str]:
    return sorted(r.text() for r in records)


@pytest.mark.parametrize("name, qtype, rcode", [
    ("x.nosuchns.svc.cluster.local", wire.A, wire.NXDOMAIN),  # no such namespace
    ("nosuchns.svc.cluster.local", wire.A, wire.NXDOMAIN),
    ("default.svc.cluster.local", wire.A, wire.NOERROR),  # a bare namespace that exists: NODATA
    ("svc.cluster.local", wire.A, wire.NOERROR),
    ("cluster.local", wire.A, wire.NOERROR),
    ("pod.cluster.local", wire.A, wire.NOERROR),
    ("nope.default.svc.cluster.local", wire.A, wire.NXDOMAIN),  # the namespace exists, the Service not
    ("empty.default.svc.cluster.local", wire.A, wire.NXDOMAIN),  # headless, no ready endpoint
    ("web.default.svc.cluster.local", wire.AAAA, wire.NOERROR),  # IPv4 only: NODATA
    ("web.default.svc.cluster.local", wire.MX, wire.NOERROR),
    ("web.default.svc.cluster.local", 13, wire.NOERROR),  # HINFO: the fake A lookup says it exists
    ("nope.default.svc.cluster.local", 13, wire.NXDOMAIN),
    ("nope.default.svc.cluster.local", wire.SOA, wire.NOERROR),  # SOA off the apex: NODATA, no lookup
    ("default.svc.cluster.local", wire.TXT, wire.NXDOMAIN),  # the plugin's TXT quirk
    ("_nope._tcp.web.default.svc.cluster.local", wire.SRV, wire.NXDOMAIN),
    ("a.b.c.web.default.svc.cluster.local", wire.A, wire.NXDOMAIN),  # a label too many
    ("foo.cluster.local", wire.A, wire.NXDOMAIN),  # neither svc nor pod
    ("dns-version.cluster.local", wire.A, wire.NXDOMAIN),
    ("blah.default.pod.cluster.local", wire.A, wire.NXDOMAIN),  # no address in it
    ("10-244-1-5.nosuchns.pod.cluster.local", wire.A, wire.NXDOMAIN),
    ("10-244-1-5.default.pod.cluster.local", wire.AAAA, wire.NOERROR),
    ("*.default.svc.cluster.local", wire.A, wire.NXDOMAIN),  # no wildcards since CoreDNS 1.9
    ("x.out.default.svc.cluster.local", wire.A, wire.NXDOMAIN),  # nothing below an ExternalName
])
def test_nxdomain_and_nodata_as_the_kubernetes_plugin_decides(zone, name, qtype, rcode):
    answer = ask(zone, name, qtype)
    assert answer.rcode == rcode and not answer.answers and answer.authoritative
    assert [r.text() for r in answer.authority] == [
        "cluster.local.\t5\tIN\tSOA\tns.dns.cluster.local hostmaster.cluster.local 1700000000 7200 1800 86400 5"]


def test_service_endpoint_and_pod_records(zone):
    assert texts(ask(zone, "web.default.svc.cluster.local", wire.A).answers) == [
        "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.20"]
    assert texts(ask(zone, "WEB.Default.svc.cluster.local", wire.A).answers) == [  # names compare in any case
        "WEB.Default.svc.cluster.local.\t5\tIN\tA\t10.96.0.20"]
    assert texts(ask(zone, "db.default.svc.cluster.local", wire.A).answers) == [  # headless: ready endpoints
        "db.default.svc.cluster.local.\t5\tIN\tA\t10.244.1.7", "db.default.svc.cluster.local.\t5\tIN\tA\t10.244.2.8"]
    assert texts(ask(zone, "db-0.db.default.svc.cluster.local", wire.A).answers) == [
        "db-0.db.default.svc.cluster.local.\t5\tIN\tA\t10.244.1.7"]
    assert texts(ask(zone, "10-244-2-8.db.default.svc.cluster.local", wire.A).answers) == [
        "10-244-2-8.db.default.svc.cluster.local.\t5\tIN\tA\t10.244.2.8"]
    assert texts(ask(zone, "10-244-1-5.web.default.svc.cluster.local", wire.A).answers) == [  # ClusterIP's too
        "10-244-1-5.web.default.svc.cluster.local.\t5\tIN\tA\t10.244.1.5"]
    assert texts(ask(zone, "10-1-2-3.shop.pod.cluster.local", wire.A).answers) == [
        "10-1-2-3.shop.pod.cluster.local.\t5\tIN\tA\t10.1.2.3"]
    assert texts(ask(zone, "dns-version.cluster.local", wire.TXT).answers) == [
        'dns-version.cluster.local.\t28800\tIN\tTXT\t"1.1.0"']
    ns = ask(zone, "cluster.local", wire.NS)
    assert texts(ns.answers) == ["cluster.local.\t5\tIN\tNS\tkube-dns.kube-system.svc.cluster.local"]
    assert texts(ns.additional) == ["kube-dns.kube-system.svc.cluster.local.\t5\tIN\tA\t10.96.0.10"]


def test_srv_records_weigh_each_entry_and_add_their_targets_addresses(zone):
    named = ask(zone, "_http._tcp.web.default.svc.cluster.local", wire.SRV)
    assert texts(named.answers) == ["_http._tcp.web.default.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 "
                                    "web.default.svc.cluster.local"]
    assert texts(named.additional) == ["web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.20"]
    headless = ask(zone, "_pg._tcp.db.default.svc.cluster.local", wire.SRV)
    assert texts(headless.answers) == [
        "_pg._tcp.db.default.svc.cluster.local.\t5\tIN\tSRV\t0 50 5432 10-244-2-8.db.default.svc.cluster.local",
        "_pg._tcp.db.default.svc.cluster.local.\t5\tIN\tSRV\t0 50 5432 db-0.db.default.svc.cluster.local"]
    assert len(headless.additional) == 2
    # kube-dns: three ports, two of them 53: weight 100/3, merged by (target, port)
    dns_srv = ask(zone, "kube-dns.kube-system.svc.cluster.local", wire.SRV)
    assert texts(dns_srv.answers) == [
        "kube-dns.kube-system.svc.cluster.local.\t5\tIN\tSRV\t0 33 53 kube-dns.kube-system.svc.cluster.local",
        "kube-dns.kube-system.svc.cluster.local.\t5\tIN\tSRV\t0 33 9153 kube-dns.kube-system.svc.cluster.local"]
    assert ask(zone, "out.default.svc.cluster.local", wire.SRV).answers == ()  # ExternalName: none


def test_ptr_external_names_and_the_hosts_block(zone):
    assert texts(ask(zone, "20.0.96.10.in-addr.arpa", wire.PTR).answers) == [
        "20.0.96.10.in-addr.arpa.\t5\tIN\tPTR\tweb.default.svc.cluster.local"]
    assert texts(ask(zone, "7.1.244.10.in-addr.arpa", wire.PTR).answers) == [
        "7.1.244.10.in-addr.arpa.\t5\tIN\tPTR\tdb-0.db.default.svc.cluster.local"]
    unknown = ask(zone, "99.99.244.10.in-addr.arpa", wire.PTR)  # falls through to nothing
    assert unknown.rcode == wire.NXDOMAIN and not unknown.authoritative
    assert texts(ask(zone, "out.default.svc.cluster.local", wire.A).answers) == [  # outside: the CNAME alone
        "out.default.svc.cluster.local.\t5\tIN\tCNAME\tdb.example.org"]
    assert texts(ask(zone, "inner.default.svc.cluster.local", wire.A).answers) == [  # chased in the zone
        "inner.default.svc.cluster.local.\t5\tIN\tCNAME\tweb.default.svc.cluster.local",
        "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.20"]
    assert ask(zone, "inner.default.svc.cluster.local", wire.AAAA).answers == ()  # nothing there: no CNAME
    assert texts(ask(zone, "registry.lab", wire.A).answers) == ["registry.lab.\t3600\tIN\tA\t192.0.2.7"]
    outside = ask(zone, "example.com", wire.A)
    assert outside.rcode == wire.NXDOMAIN and not outside.authoritative  # never asked of anyone else


def test_pods_verified_answers_only_for_a_live_pods_address():
    config = corefile.parse(".:53 {\n    kubernetes cluster.local {\n        pods verified\n    }\n}\n")
    pods = [{"metadata": {"name": "a", "namespace": "shop"}, "status": {"podIP": "10.244.1.5", "phase": "Running"}},
            {"metadata": {"name": "b", "namespace": "shop", "deletionTimestamp": "x"},
             "status": {"podIP": "10.244.1.6", "phase": "Running"}}]
    zone = Zone.build(config, NAMESPACES, [], [], 1, pods)
    assert texts(ask(zone, "10-244-1-5.shop.pod.cluster.local", wire.A).answers) == [
        "10-244-1-5.shop.pod.cluster.local.\t5\tIN\tA\t10.244.1.5"]
    for name in ("10-244-1-5.default.pod.cluster.local", "10-244-1-6.shop.pod.cluster.local",
                 "10-244-1-7.shop.pod.cluster.local"):  # another namespace, a pod going, no pod
        assert ask(zone, name, wire.A).rcode == wire.NXDOMAIN


def test_messages_read_back_by_dnspython_and_cut_to_the_clients_size():
    slices = [endpoint_slice("many", [(f"10.244.{i // 200}.{i % 200 + 1}", None, True) for i in range(60)])]
    zone = Zone.build(corefile.parse(corefile.DEFAULT), NAMESPACES, [service("many", ip="None")], slices, 1)
    query = dns.message.make_query("many.default.svc.cluster.local.", "A", use_edns=False)
    query.id = 4321
    asked = wire.parse_query(query.to_wire())
    answer = zone.answer(asked.question)
    whole = dns.message.from_wire(wire.response(asked, answer, asked.limit(tcp=True)))
    assert whole.id == 4321 and len(whole.answer[0]) == 60 and not whole.flags & dns.flags.TC
    assert whole.flags & dns.flags.AA and whole.flags & dns.flags.RD and not whole.flags & dns.flags.RA
    over_udp = wire.response(asked, answer, asked.limit(tcp=False))
    cut = dns.message.from_wire(over_udp)
    assert len(over_udp) <= 512 and cut.flags & dns.flags.TC and 0 < len(cut.answer[0]) < 60
    with_edns = dns.message.make_query("many.default.svc.cluster.local.", "A", use_edns=0, payload=4096)
    asked = wire.parse_query(with_edns.to_wire())
    got = dns.message.from_wire(wire.response(asked, answer, asked.limit(tcp=False)))
    assert len(got.answer[0]) == 60 and got.edns == 0 and got.payload == 4096  # the client's size, echoed


def test_corefile_errors_name_the_plugin_and_forwarding_is_refused():
    with pytest.raises(corefile.CorefileError, match="forward: netplane's DNS never sends a query out"):
        corefile.parse(".:53 {\n    forward . 8.8.8.8\n}\n")
    with pytest.raises(corefile.CorefileError, match="unknown plugin 'kubernets'"):
        corefile.parse(".:53 {\n    kubernets cluster.local\n}\n")
    with pytest.raises(corefile.CorefileError, match="hosts: this plugin can only be used once per Server Block"):
        corefile.parse(".:53 {\n    hosts {\n    }\n    hosts {\n    }\n}\n")
    with pytest.raises(corefile.CorefileError, match="hosts: 'registry' is not an address"):
        corefile.parse(".:53 {\n    hosts {\n        registry 1.2.3.4\n    }\n}\n")
    config = corefile.parse(".:53 {\n    log\n    kubernetes example.lab {\n        ttl 30\n    }\n}\n")
    assert (config.zone, config.ttl, config.log, config.reverse_zones) == ("example.lab", 30, True, ())


def test_a_labs_cluster_domain_is_the_zone_its_corefile_answers():
    from netplane.lab import addons, model
    lab = model.parse({"network": {"dnsDomain": "corp.internal"}, "dns": {"hosts": {"registry.lab": "172.30.0.2"}}})
    text = next(o for o in addons.objects(lab) if o["kind"] == "ConfigMap")["data"]["Corefile"]
    zone = Zone.build(corefile.parse(text), NAMESPACES, SERVICES, [], 1)
    assert texts(ask(zone, "web.default.svc.corp.internal", wire.A).answers) == [
        "web.default.svc.corp.internal.\t5\tIN\tA\t10.96.0.20"]
    assert ask(zone, "web.default.svc.cluster.local", wire.A).rcode == wire.NXDOMAIN  # another cluster's domain
    assert texts(ask(zone, "registry.lab", wire.A).answers) == ["registry.lab.\t3600\tIN\tA\t172.30.0.2"]  # hosts: its own TTL
