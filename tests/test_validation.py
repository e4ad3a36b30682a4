"""Validation as kube-apiserver's: each case is a manifest that a v1.32 cluster refuses, with the
status code, field path and message it answers (taken from upstream's validation code), sent by
kubectl to a real server; and what a cluster takes (a targetPort of 0, defaulted to the port) is
taken here too."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import yaml

from support import objects
from support.api import Cluster
from netplane.api import resources

DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
           "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
           "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
               "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
               "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
CONTAINERS = [{"name": "web", "image": "nginx"}]


def service(name: str = "web", ports: list | None = None, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": ports or [{"port": 80}], **spec}}


def pod(containers: list | None = None, **meta: object) -> dict:
    return objects.pod("web", meta=meta, containers=CONTAINERS if containers is None else containers)


def pod_with_volumes(mounts: list, volumes: list) -> dict:
    obj = pod([{"name": "web", "image": "nginx", "volumeMounts": mounts}])
    obj["spec"]["volumes"] = volumes
    return obj


def netpol(selector: dict | None = None, **spec: object) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web"},
            "spec": {"podSelector": selector or {}, **spec}}


def deployment(selector: dict, labels: dict, containers: list | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
                                                        "spec": {"containers": CONTAINERS if containers is None
                                                                 else containers}}}}


CASES = {  # name -> (object, [(field, message)]) as kube-apiserver v1.32 answers, all with 422 Invalid
    "service name starting with a digit": (service("1svc"), [("metadata.name", f'Invalid value: "1svc": {DNS1035}')]),
    "service name with a dot": (service("a.b"), [("metadata.name", f'Invalid value: "a.b": {DNS1035}')]),
    "service name of 64 characters": (service("a" * 64), [
        ("metadata.name", f'Invalid value: "{"a" * 64}": must be no more than 63 characters')]),
    "targetPort out of range": (service(ports=[{"port": 80, "targetPort": 70000}]), [
        ("spec.ports[0].targetPort", "Invalid value: 70000: must be between 1 and 65535, inclusive")]),
    "targetPort name with a space": (service(ports=[{"port": 80, "targetPort": "my port"}]), [
        ("spec.ports[0].targetPort",
         'Invalid value: "my port": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)')]),
    "duplicate service port": (service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]), [
        ("spec.ports[1]", 'Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), '
                          'Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}')]),
    "duplicate service port name": (service(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]), [
        ("spec.ports[1].name", 'Duplicate value: "http"')]),
    "several ports, one unnamed": (service(ports=[{"name": "http", "port": 80}, {"port": 81}]), [
        ("spec.ports[1].name", "Required value")]),
    "service selector value with a space": (service(selector={"app": "my web"}), [
        ("spec.selector", f'Invalid value: "my web": {LABEL_VALUE}')]),
    "label value with a space": (pod(labels={"app": "my web"}), [
        ("metadata.labels", f'Invalid value: "my web": {LABEL_VALUE}')]),
    "label key with two slashes": (pod(labels={"a/b/c": "x"}), [
        ("metadata.labels", "Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, "
                            "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  "
                            "or 'my.name',  or '123-abc', regex used for validation is "
                            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and "
                            "'/' (e.g. 'example.com/MyName')")]),
    "pod without containers": (pod([]), [("spec.containers", "Required value")]),
    "containerPort 0": (pod([{"name": "web", "image": "nginx", "ports": [{"containerPort": 0}]}]), [
        ("spec.containers[0].ports[0].containerPort", "Required value")]),
    "containerPort 70000": (pod([{"name": "web", "image": "nginx", "ports": [{"containerPort": 70000}]}]), [
        ("spec.containers[0].ports[0].containerPort", "Invalid value: 70000: must be between 1 and 65535, inclusive")]),
    "container without an image, twice the same name": (pod([{"name": "web", "image": "nginx"}, {"name": "web"}]), [
        ("spec.containers[1].name", 'Duplicate value: "web"'), ("spec.containers[1].image", "Required value")]),
    "annotations over 256 KiB": (pod(annotations={"notes": "x" * (256 * 1024)}), [
        ("metadata.annotations", "Too long: must have at most 262144 bytes")]),
    "deployment whose selector misses its template": (deployment({"matchLabels": {"app": "web"}}, {"app": "api"}), [
        ("spec.template.metadata.labels",
         'Invalid value: map[string]string{"app":"api"}: `selector` does not match template `labels`')]),
    "deployment template without containers": (deployment({"matchLabels": {"app": "web"}}, {"app": "web"}, []), [
        ("spec.template.spec.containers", "Required value")]),
    "volume file paths that leave the volume, and a mount of no volume": (pod_with_volumes(
        [{"name": "conf", "mountPath": "/etc/x", "subPath": "../up"}, {"name": "gone", "mountPath": "/y"}],
        [{"name": "conf", "configMap": {"name": "c", "items": [{"key": "a", "path": "/etc/passwd"},
                                                              {"key": "b", "path": "x/../../y", "mode": 4096}]}},
         {"name": "Bad_Name", "emptyDir": {}, "hostPath": {"path": "/"}}]), [
        ("spec.volumes[0].configMap.items[0].path", 'Invalid value: "/etc/passwd": must be a relative path'),
        ("spec.volumes[0].configMap.items[1].path", "Invalid value: \"x/../../y\": must not contain '..'"),
        ("spec.volumes[0].configMap.items[1].mode",
         "Invalid value: 4096: must be a number between 0 and 0777 (octal), both inclusive"),
        ("spec.volumes[1].name", f'Invalid value: "Bad_Name": {DNS1123_LABEL}'),
        ("spec.volumes[1].hostPath", "Forbidden: may not specify more than 1 volume type"),
        ("spec.containers[0].volumeMounts[0].subPath", "Invalid value: \"../up\": must not contain '..'"),
        ("spec.containers[0].volumeMounts[1].name", 'Not found: "gone"')]),
    "init containers: a policy other than Always, a probe, a taken name; an app container's policy": ({
        **pod([{"name": "web", "image": "nginx", "restartPolicy": "Always"}]), "spec": {
            "containers": [{"name": "web", "image": "nginx", "restartPolicy": "Always"}],
            "initContainers": [{"name": "setup", "image": "busybox", "restartPolicy": "OnFailure"},
                               {"name": "wait", "image": "busybox", "livenessProbe": {"exec": {"command": ["true"]}}},
                               {"name": "web", "image": "busybox"}]}}, [
        ("spec.containers[0].restartPolicy", "Forbidden: may not be set for non-init containers"),
        ("spec.initContainers[0].restartPolicy", 'Unsupported value: "OnFailure": supported values: "Always"'),
        ("spec.initContainers[1].livenessProbe",
         "Forbidden: may not be set for init containers without restartPolicy=Always"),
        ("spec.initContainers[2].name", 'Duplicate value: "web"')]),
    "namespace with a dot": ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}, [
        ("metadata.name", 'Invalid value: "a.b": must not contain dots')]),
    "network policy peer with nothing": (netpol(ingress=[{"from": [{}]}]), [
        ("spec.ingress[0].from[0]", "Required value: must specify a peer")]),
    "network policy ipBlock with another peer": (netpol(egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                                                                          "podSelector": {}}]}]), [
        ("spec.egress[0].to[0]", "Forbidden: may not specify both ipBlock and another peer")]),
    "network policy except outside its cidr, a cidr that is none": (netpol(ingress=[{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.1.0/28", "10.0.0.0/24"]}},
        {"ipBlock": {"cidr": "10.0.0.300/8"}}]}]), [
        ("spec.ingress[0].from[0].ipBlock.except[0]", 'Invalid value: "10.0.1.0/28": must be a strict subset of `cidr`'),
        ("spec.ingress[0].from[0].ipBlock.except[1]", 'Invalid value: "10.0.0.0/24": must be a strict subset of `cidr`'),
        ("spec.ingress[0].from[1].ipBlock.cidr", 'Invalid value: "10.0.0.300/8": not a valid CIDR')]),
    "network policy ports": (netpol(ingress=[{"ports": [
        {"port": "http", "endPort": 90}, {"port": 90, "endPort": 80}, {"protocol": "ICMP", "port": 0},
        {"endPort": 80}, {"port": "80"}]}]), [
        ("spec.ingress[0].ports[0].endPort", "Invalid value: 90: may not be specified when `port` is non-numeric"),
        ("spec.ingress[0].ports[1].endPort", "Invalid value: 90: must be greater than or equal to `port`"),
        ("spec.ingress[0].ports[2].protocol", 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
        ("spec.ingress[0].ports[2].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ingress[0].ports[3].endPort", "Invalid value: 80: may not be specified when `port` is not specified"),
        ("spec.ingress[0].ports[4].port", 'Invalid value: "80": must contain at least one letter (a-z)')]),
    "network policy selectors and types": (netpol(
        {"matchExpressions": [{"key": "pod", "operator": "In"}, {"key": "pod", "operator": "Exists", "values": ["a"]},
                              {"key": "pod", "operator": "Near"}]}, policyTypes=["Ingress", "Sideways"]), [
        ("spec.podSelector.matchExpressions[0].values",
         "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
        ("spec.podSelector.matchExpressions[1].values",
         "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
        ("spec.podSelector.matchExpressions[2].operator", 'Invalid value: "Near": not a valid selector operator'),
        ("spec.policyTypes[1]", 'Unsupported value: "Sideways": supported values: "Ingress", "Egress"')]),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("validation")) as running:
        yield running


def post(cluster: Cluster, obj: dict) -> tuple[int, dict]:
    group = "api/v1" if obj["apiVersion"] == "v1" else f"apis/{obj['apiVersion']}"
    plural = resources.by_kind(obj["kind"]).plural
    where = "" if obj["kind"] == "Namespace" else "/namespaces/default"
    request = urllib.request.Request(f"{cluster.url}/{group}{where}/{plural}", json.dumps(obj).encode(),
                                     {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("case", CASES)
def test_what_kube_apiserver_refuses_is_422_with_its_field_path_and_message(cluster, case):
    obj, expected = CASES[case]
    status, body = post(cluster, obj)
    assert (status, body["reason"]) == (422, "Invalid")
    assert [(c["field"], c["message"]) for c in body["details"]["causes"]] == expected
    kind = obj["kind"] + (f".{obj['apiVersion'].split('/')[0]}" if "/" in obj["apiVersion"] else "")
    bodies = [f"{field}: {message}" for field, message in expected]
    summary = bodies[0] if len(bodies) == 1 else f"[{', '.join(bodies)}]"
    assert body["message"] == f'{kind} "{obj["metadata"]["name"]}" is invalid: {summary}'


def test_kubectl_shows_the_servers_reasons_and_nothing_is_stored(cluster):
    bad = [service("1svc"), pod([]), deployment({"matchLabels": {"app": "web"}}, {"app": "api"})]
    done = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(bad), ok=False)
    assert done.returncode != 0
    assert f'Service "1svc" is invalid: metadata.name: Invalid value: "1svc": {DNS1035}' in done.stderr
    assert 'Pod "web" is invalid: spec.containers: Required value' in done.stderr
    assert 'Deployment.apps "web" is invalid: spec.template.metadata.labels' in done.stderr
    assert cluster.kubectl("get", "services,pods,deployments", "-o", "name").stdout == ""


def test_updates_are_validated_and_a_target_port_of_0_is_taken_as_upstream_takes_it(cluster):
    """(The lab's Service admission then defaults it to the port: tests/test_controllers.py.)"""
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(service("zero", ports=[{"port": 8080, "targetPort": 0}])))
    done = cluster.kubectl("patch", "service", "zero", "--type=merge", "-p", '{"metadata":{"labels":{"app":"my web"}}}',
                           ok=False)
    assert done.returncode != 0 and "metadata.labels: Invalid value: \"my web\"" in done.stderr
    two = '{"spec":{"ports":[{"port":8080,"targetPort":0},{"port":8080,"targetPort":1}]}}'
    done = cluster.kubectl("patch", "service", "zero", "-p", two, "--type=merge", ok=False)
    assert done.returncode != 0 and "spec.ports[1]: Duplicate value" in done.stderr
    cluster.kubectl("delete", "service", "zero")
