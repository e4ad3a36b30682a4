"""Cluster DNS in a lab, asked as pods ask it: glibc (getent, Python's getaddrinfo, curl), busybox's
nslookup and dig, through the kube-dns Service's DNAT to the coredns pods, over UDP and TCP.
One lab for the module: its own DNS pods, the tests' Services and pods."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from labtools import bare_lab, cli, eventually, kubectl

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers: [{name: echo, image: netplane/echo, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: db, image: netplane/echo, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: docs}
spec: {type: ExternalName, externalName: docs.example.org}
---
apiVersion: v1
kind: Pod
metadata: {name: tools}
spec:
  containers: [{name: tools, image: nicolaka/netshoot, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  containers: [{name: box, image: busybox, command: [sleep, "3600"]}]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    with bare_lab(dns={"hosts": {"client.lab": "172.30.0.2"}}) as name:  # the underlay client, by a name
        kubectl(name, "apply", "-f", "-", stdin=APP)
        for pod in ("tools", "box", "db-0"):
            kubectl(name, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")
        kubectl(name, "rollout", "status", "deploy/hello", "--timeout=60s")
        yield name


def sh(lab: str, command: str, pod: str = "tools") -> str:
    return kubectl(lab, "exec", pod, "--", "sh", "-c", command).stdout


def dig(lab: str, *args: str) -> str:
    return kubectl(lab, "exec", "tools", "--", "dig", *args).stdout


def status(answer: str) -> str:
    return re.search(r"status: (\w+)", answer).group(1)


def section(answer: str, name: str) -> list[str]:
    """The records of one section of dig's output, as its lines with whitespace collapsed."""
    found = re.search(rf";; {name} SECTION:\n(.*?)(?:\n\n|\Z)", answer, re.S)
    return [" ".join(line.split()) for line in found.group(1).splitlines()] if found else []


def address(lab: str, kind: str, name: str, field: str = "{.spec.clusterIP}") -> str:
    return kubectl(lab, "get", kind, name, "-o", f"jsonpath={field}").stdout


def test_pods_resolve_services_by_every_name_glibc_busybox_and_curl(lab):
    ip = address(lab, "svc", "hello")
    # glibc through the search path (ndots:5): hello, hello.default, the whole name
    for name in ("hello", "hello.default", "hello.default.svc", "hello.default.svc.cluster.local"):
        assert sh(lab, f"getent hosts {name}").split()[0] == ip
    assert sh(lab, "python3 -c \"import socket; print(socket.getaddrinfo('hello', 80)[0][4][0])\"").strip() == ip
    assert sh(lab, "curl -s -m 5 http://hello/hostname").startswith("hello-")  # the tutorials' step
    # busybox's own resolver asks every search domain at once and says so for those that fail (exit 1,
    # as on a cluster: the reason the docs pin busybox:1.28 for `nslookup kubernetes.default`)
    looked_up = kubectl(lab, "exec", "box", "--", "nslookup", "hello", check=False).stdout
    assert f"Name:\thello.default.svc.cluster.local\nAddress: {ip}" in looked_up, looked_up
    resolv = sh(lab, "cat /etc/resolv.conf")
    dns_ip = kubectl(lab, "-n", "kube-system", "get", "svc", "kube-dns", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert dns_ip == "10.96.0.10" and f"nameserver {dns_ip}" in resolv and "ndots:5" in resolv


def test_the_lab_files_own_names_answer_in_every_pod(lab):
    assert sh(lab, "getent hosts client.lab").split() == ["172.30.0.2", "client.lab"]
    assert dig(lab, "+short", "client.lab").split() == ["172.30.0.2"]
    assert status(dig(lab, "AAAA", "client.lab")) == "NOERROR"  # a name with no IPv6 address: NODATA


def test_dig_gets_each_record_type_and_answer_code_as_from_coredns(lab):
    ip = address(lab, "svc", "hello")
    answer = dig(lab, "hello.default.svc.cluster.local")
    assert status(answer) == "NOERROR" and "flags: qr aa rd;" in answer  # authoritative, no recursion
    assert section(answer, "ANSWER") == [f"hello.default.svc.cluster.local. 5 IN A {ip}"]
    nodata = dig(lab, "AAAA", "hello.default.svc.cluster.local")  # IPv4 only: NODATA with the SOA
    assert status(nodata) == "NOERROR" and not section(nodata, "ANSWER")
    assert section(nodata, "AUTHORITY")[0].startswith(
        "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. ")
    srv = dig(lab, "SRV", "_http._tcp.hello.default.svc.cluster.local")
    assert section(srv, "ANSWER") == ["_http._tcp.hello.default.svc.cluster.local. 5 IN SRV 0 100 80 "
                                      "hello.default.svc.cluster.local."]
    assert section(srv, "ADDITIONAL")[-1] == f"hello.default.svc.cluster.local. 5 IN A {ip}"
    db_ip = address(lab, "pod", "db-0", "{.status.podIP}")
    assert dig(lab, "+short", "db.default.svc.cluster.local").split() == [db_ip]  # headless: the endpoints
    assert dig(lab, "+short", "db-0.db.default.svc.cluster.local").split() == [db_ip]  # hostname + subdomain
    assert dig(lab, "+short", "SRV", "_pg._tcp.db.default.svc.cluster.local").split() == [
        "0", "100", "5432", "db-0.db.default.svc.cluster.local."]
    assert dig(lab, "+short", "-x", ip).split() == ["hello.default.svc.cluster.local."]
    assert dig(lab, "+short", "-x", db_ip).split() == ["db-0.db.default.svc.cluster.local."]
    assert dig(lab, "+short", "docs.default.svc.cluster.local").split() == ["docs.example.org."]  # a CNAME
    dashed = db_ip.replace(".", "-")
    assert dig(lab, "+short", f"{dashed}.default.pod.cluster.local").split() == [db_ip]
    assert dig(lab, "+short", "TXT", "dns-version.cluster.local").split() == ['"1.1.0"']
    assert status(dig(lab, "nope.nosuchns.svc.cluster.local")) == "NXDOMAIN"
    assert status(dig(lab, "nope.default.svc.cluster.local")) == "NXDOMAIN"
    assert status(dig(lab, "default.svc.cluster.local")) == "NOERROR"  # a namespace: NODATA
    assert status(dig(lab, "example.com")) == "NXDOMAIN"  # nothing is asked outside the lab
    over_tcp = dig(lab, "+tcp", "hello.default.svc.cluster.local")
    assert "(TCP)" in over_tcp and section(over_tcp, "ANSWER") == [f"hello.default.svc.cluster.local. 5 IN A {ip}"]


MANY = """
apiVersion: v1
kind: Service
metadata: {name: many}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: many-1, labels: {kubernetes.io/service-name: many}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
""" + "".join(f"- {{addresses: [10.250.0.{i}], conditions: {{ready: true}}}}\n" for i in range(1, 61))


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(lab):
    kubectl(lab, "apply", "-f", "-", stdin=MANY)
    try:
        eventually(lambda: dig(lab, "+short", "+tcp", "many.default.svc.cluster.local").split() or None)
        cut = dig(lab, "+noedns", "+ignore", "many.default.svc.cluster.local")
        assert " tc " in cut.split("flags:")[1].split(";")[0] + " "  # TC set, records cut at a boundary
        assert 0 < len(section(cut, "ANSWER")) < 60
        whole = dig(lab, "+noedns", "many.default.svc.cluster.local")  # dig retries over TCP by itself
        assert len(section(whole, "ANSWER")) == 60
        bigger = dig(lab, "+bufsize=4096", "+ignore", "many.default.svc.cluster.local")  # EDNS0: fits in one
        assert len(section(bigger, "ANSWER")) == 60 and "udp: 4096" in bigger
    finally:
        kubectl(lab, "delete", "-f", "-", "--ignore-not-found", stdin=MANY)


def test_a_new_service_resolves_within_a_second_and_a_deleted_one_stops_after_its_ttl(lab):
    made = ("apiVersion: v1\nkind: Service\nmetadata: {name: fresh}\n"
            "spec: {selector: {app: hello}, ports: [{port: 80, targetPort: 8080}]}\n")
    loop = ("start=$(date +%s%N); while [ -z \"$(dig +short {name})\" ]{neg}; do sleep 0.02; done; "
            "echo $(( ($(date +%s%N) - start) / 1000000 ))")
    kubectl(lab, "apply", "-f", "-", stdin=made)
    waited = int(sh(lab, loop.format(name="fresh.default.svc.cluster.local", neg="")))
    assert waited < 1000, f"resolvable after {waited} ms"
    kubectl(lab, "delete", "svc", "fresh")
    gone = "start=$(date +%s%N); while [ -n \"$(dig +short fresh.default.svc.cluster.local)\" ]; do sleep 0.05; " \
           "done; echo $(( ($(date +%s%N) - start) / 1000000 ))"
    waited = int(sh(lab, gone))
    assert waited < 1000 + 5000, f"still resolving {waited} ms after the delete"


def dns_pods(lab: str) -> list[dict]:
    """The coredns pods, but for one being deleted."""
    return [p for p in json.loads(kubectl(lab, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns",
                                          "-o", "json").stdout)["items"] if "deletionTimestamp" not in p["metadata"]]


def served(lab: str, pod_ip: str) -> int:
    """The queries a coredns pod has answered, from its metrics."""
    metrics = sh(lab, f"curl -s -m 5 http://{pod_ip}:9153/metrics")
    return sum(int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("coredns_dns_requests_total{"))


def test_the_two_replicas_share_the_queries_and_one_answers_while_the_other_is_replaced(lab):
    pods = dns_pods(lab)
    assert len(pods) == 2
    before = {p["status"]["podIP"]: served(lab, p["status"]["podIP"]) for p in pods}
    sh(lab, "for i in $(seq 200); do dig +short +tries=1 hello.default.svc.cluster.local > /dev/null; done")
    after = {ip: served(lab, ip) for ip in before}
    assert all(after[ip] - before[ip] >= 30 for ip in before), (before, after)  # each took a share of 200
    histogram = sh(lab, f"curl -s http://{pods[0]['status']['podIP']}:9153/metrics")
    assert 'coredns_dns_request_duration_seconds_bucket{server="dns://:53",view="",zone=".",le="0.00025"}' in histogram
    assert 'coredns_dns_responses_total{plugin="kubernetes",rcode="NOERROR",server="dns://:53"' in histogram
    kubectl(lab, "-n", "kube-system", "delete", "pod", pods[0]["metadata"]["name"], "--wait=false")
    answers = sh(lab, "for i in $(seq 50); do dig +short +tries=2 +timeout=1 hello.default.svc.cluster.local; "
                      "sleep 0.02; done").split()
    assert len(answers) == 50  # every one answered, by the other replica while the first went
    eventually(lambda: len([p for p in dns_pods(lab) if any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]) == 2, timeout=30)


def test_the_corefile_is_read_again_logs_queries_and_gives_static_names(lab):
    corefile = json.loads(kubectl(lab, "-n", "kube-system", "get", "cm", "coredns", "-o", "json").stdout)["data"]["Corefile"]
    changed = corefile.replace("    ready\n", "    ready\n    log\n").replace(
        "        172.30.0.2 client.lab\n", "        172.30.0.2 client.lab\n        192.0.2.7 registry.lab\n").replace(
        "pods insecure", "pods verified")
    patch = json.dumps({"data": {"Corefile": changed}})
    kubectl(lab, "-n", "kube-system", "patch", "cm", "coredns", "--type=merge", "-p", patch)
    try:
        eventually(lambda: all("Reloading complete" in kubectl(lab, "-n", "kube-system", "logs", p["metadata"]["name"])
                               .stdout for p in dns_pods(lab)), timeout=60, interval=1)  # both replicas
        assert dig(lab, "+short", "registry.lab").split() == ["192.0.2.7"]
        # pods verified: a pod name answers only for an address a pod of that namespace has (the
        # server now watches Pods as well)
        dashed = address(lab, "pod", "db-0", "{.status.podIP}").replace(".", "-")
        eventually(lambda: status(dig(lab, "10-250-9-9.default.pod.cluster.local")) == "NXDOMAIN", timeout=30)
        assert status(dig(lab, f"{dashed}.default.pod.cluster.local")) == "NOERROR"
        assert status(dig(lab, f"{dashed}.kube-system.pod.cluster.local")) == "NXDOMAIN"
        for _ in range(4):  # through the Service: both replicas see one at least
            dig(lab, "+short", "hello.default.svc.cluster.local")
        logs = "".join(kubectl(lab, "-n", "kube-system", "logs", p["metadata"]["name"]).stdout for p in dns_pods(lab))
        assert "Reloading complete" in logs
        assert re.search(r'\[INFO\] [\d.]+:\d+ - \d+ "A IN hello\.default\.svc\.cluster\.local\. udp \d+ false \d+" '
                         r"NOERROR qr,aa,rd \d+ [\d.]+s\n", logs), logs
    finally:
        kubectl(lab, "-n", "kube-system", "patch", "cm", "coredns", "--type=merge",
                "-p", json.dumps({"data": {"Corefile": corefile}}))


def test_restarted_dns_pods_list_again_and_catch_up_and_kubectl_cluster_info_names_them(lab):
    kubectl(lab, "-n", "kube-system", "delete", "pod", "-l", "k8s-app=kube-dns")
    kubectl(lab, "apply", "-f", "-", stdin="apiVersion: v1\nkind: Service\nmetadata: {name: later}\n"
                                           "spec: {selector: {app: hello}, ports: [{port: 80}]}\n")
    try:
        eventually(lambda: dig(lab, "+short", "later.default.svc.cluster.local").split() or None, timeout=30)
        assert dig(lab, "+short", "later.default.svc.cluster.local").split() == [address(lab, "svc", "later")]
    finally:
        kubectl(lab, "delete", "svc", "later", "--ignore-not-found")
    info = kubectl(lab, "cluster-info").stdout
    assert re.search(r"CoreDNS is running at https://\S+/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy",
                     info), info


def test_trace_follows_a_dns_query_through_the_kube_dns_dnat(lab):
    ip = address(lab, "svc", "hello")
    traced = cli(lab, "trace", "tools", "svc/kube-system/kube-dns", "--dns", "hello.default.svc.cluster.local").stdout
    assert "-> svc/kube-dns:dns (10.96.0.10:53) udp" in traced
    # the DNAT rule (a draw from the data map of kube-dns's endpoints) and where it sent the query
    assert re.search(r"dnat ip to .* map @endpoints-2 .* kube-system/kube-dns:dns -> 10\.244\.\d+\.\d+:53", traced), traced
    assert re.search(r"DNAT on node-\d: 10\.96\.0\.10:53 -> 10\.244\.\d+\.\d+:53", traced) and "pod.kube-system.coredns-" in traced
    assert "query A hello.default.svc.cluster.local." in traced and f"replied: yes (NOERROR A {ip})" in traced, traced
    report = json.loads(cli(lab, "trace", "tools", "svc/kube-system/kube-dns", "--dns", "gone.default.svc.cluster.local",
                            "--dns-type", "AAAA", "-o", "json").stdout)
    at_source = [h["packet"] for h in report["hops"] if h["direction"] == "reply" and h["netns"].endswith(".tools")]
    assert report["delivered"] and at_source == ["NXDOMAIN"], report["hops"]
