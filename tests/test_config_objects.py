"""ConfigMaps, Secrets and ServiceAccounts through kubectl against the API server alone: what
kube-apiserver stores, refuses and prints for them, and `kubectl apply --prune` over them."""
from __future__ import annotations

import base64
import json

from support.api import Cluster

TLS_WITHOUT_KEY = """apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==}
"""


def get_json(c: Cluster, *args: str) -> dict:
    return json.loads(c.kubectl("get", *args, "-o", "json").stdout)


def test_secrets_fold_string_data_into_base64_data_and_are_checked_by_type(tmp_path):
    with Cluster(tmp_path) as c:
        c.kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2")
        secret = get_json(c, "secret", "db")
        assert (secret["type"], secret["data"]) == ("Opaque", {"password": base64.b64encode(b"hunter2").decode()})
        c.kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Secret\nmetadata: {name: mixed}\n"
                  "data: {a: YQ==, b: Yg==}\nstringData: {b: plain, c: three}\n")
        mixed = get_json(c, "secret", "mixed")
        assert "stringData" not in mixed  # write-only: folded into data, stringData winning
        assert {k: base64.b64decode(v).decode() for k, v in mixed["data"].items()} == {"a": "a", "b": "plain",
                                                                                       "c": "three"}
        bad = c.kubectl("create", "-f", "-", stdin="apiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"
                        "data: {k: 'not base64!'}\n", ok=False)
        assert 'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 3' \
            in bad.stderr, bad.stderr
        tls = c.kubectl("create", "-f", "-", stdin=TLS_WITHOUT_KEY, ok=False)
        assert 'Secret "cert" is invalid: data[tls.key]: Required value' in tls.stderr, tls.stderr
        listed = c.kubectl("get", "secrets").stdout.split("\n")
        assert listed[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
        assert listed[1].split()[:3] == ["db", "Opaque", "1"]
        assert c.kubectl("get", "secret", "b", "cert", ok=False).returncode != 0  # nothing refused was stored


def test_an_immutable_config_map_or_secret_refuses_new_data_but_may_be_deleted(tmp_path):
    with Cluster(tmp_path) as c:
        c.kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\n"
                  "immutable: true\ndata: {mode: a}\n")
        changed = c.kubectl("patch", "configmap", "frozen", "-p", '{"data":{"mode":"b"}}', ok=False)
        assert 'ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set' \
            in changed.stderr, changed.stderr
        thawed = c.kubectl("patch", "configmap", "frozen", "-p", '{"immutable":false}', ok=False)
        assert "immutable: Forbidden: field is immutable when `immutable` is set" in thawed.stderr
        c.kubectl("create", "secret", "generic", "s", "--from-literal=k=v")
        retyped = c.kubectl("patch", "secret", "s", "-p", '{"type":"kubernetes.io/basic-auth"}', ok=False)
        assert 'type: Invalid value: "kubernetes.io/basic-auth": field is immutable' in retyped.stderr
        assert get_json(c, "configmap", "frozen")["data"] == {"mode": "a"}
        c.kubectl("delete", "configmap", "frozen")


def test_config_map_keys_must_be_file_names(tmp_path):
    with Cluster(tmp_path) as c:
        c.kubectl("create", "configmap", "app", "--from-literal=app.properties=x=1", "--from-literal=MODE=dev")
        assert get_json(c, "configmap", "app")["data"] == {"app.properties": "x=1", "MODE": "dev"}
        bad = c.kubectl("create", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\n"
                        "data: {'a/b': x, '..x': y}\n", ok=False)
        assert "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, " \
               "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation " \
               "is '[-._a-zA-Z0-9]+')" in bad.stderr, bad.stderr
        assert "data[..x]: Invalid value: \"..x\": must not start with '..'" in bad.stderr
        assert c.kubectl("get", "configmaps").stdout.split("\n")[1].split()[:2] == ["app", "2"]


def test_apply_prune_removes_what_the_new_set_no_longer_holds(tmp_path):
    """kubectl's own default prune list also names kinds this server does not serve yet (Jobs,
    StatefulSets, Ingresses, volumes); with the list given, prune works over the served ones."""
    both = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, labels: {app: shop}}\ndata: {k: v}\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata: {name: token, labels: {app: shop}}\nstringData: {t: x}\n")
    allow = ["--prune-allowlist=core/v1/ConfigMap", "--prune-allowlist=core/v1/Secret"]
    with Cluster(tmp_path) as c:
        c.kubectl("create", "configmap", "unlabelled", "--from-literal=k=v")
        c.kubectl("apply", "--prune", "-l", "app=shop", *allow, "-f", "-", stdin=both)
        pruned = c.kubectl("apply", "--prune", "-l", "app=shop", *allow, "-f", "-", stdin=both.split("---")[0])
        assert "secret/token pruned" in pruned.stdout, pruned.stdout
        names = {i["metadata"]["name"] for i in get_json(c, "configmaps,secrets")["items"]}
        assert names == {"settings", "unlabelled"}
