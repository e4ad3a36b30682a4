"""`netplane snapshot save|restore` on the three-node lab: what was deleted after the snapshot comes
back as it was (a Service with its ClusterIP, a Deployment with its pods), what was made after it is
gone, and a pod that ran all along is adopted, not restarted."""
from __future__ import annotations

import json

from conftest import on_labs
from labtools import cli, eventually, http, kubectl

pytestmark = on_labs("three-nodes")


def keep() -> str:
    container = {"name": "echo", "image": "netplane/echo", "ports": [{"name": "http", "containerPort": 8080}]}
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "keep"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "keep"}},
                  "template": {"metadata": {"labels": {"app": "keep"}}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "keep"},
         "spec": {"selector": {"app": "keep"}, "ports": [{"port": 80, "targetPort": "http"}]}}]})


def ready_pods(lab: str) -> dict[str, dict]:
    pods = json.loads(kubectl(lab, "get", "pods", "-l", "app=keep", "-o", "json").stdout)["items"]
    return {p["metadata"]["uid"]: p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                                           for c in p["status"].get("conditions") or [])}


def test_a_restored_snapshot_brings_back_what_was_deleted_and_drops_what_came_after(lab, tmp_path):
    kubectl(lab, "apply", "-f", "-", stdin=keep())
    kubectl(lab, "create", "job", "once", "--image=busybox", "--", "true")  # a finished pod is not waited for
    try:
        kubectl(lab, "wait", "--for=condition=complete", "job/once", "--timeout=30s")
        pods = eventually(lambda: len(ready_pods(lab)) == 2 and ready_pods(lab), timeout=30)
        cluster_ip = json.loads(kubectl(lab, "get", "svc", "keep", "-o", "json").stdout)["spec"]["clusterIP"]
        client = json.loads(kubectl(lab, "get", "pod", "client", "-o", "json").stdout)
        started = client["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        saved = cli(lab, "snapshot", "save", str(tmp_path / "lab.snap"), check=True).stdout
        assert saved.startswith(f"Snapshot saved at {tmp_path / 'lab.snap'}: ") and "objects at revision" in saved

        kubectl(lab, "delete", "svc,deployment", "keep")
        kubectl(lab, "create", "configmap", "later", "--from-literal=k=v")
        eventually(lambda: not ready_pods(lab), timeout=30)
        restored = cli(lab, "snapshot", "restore", str(tmp_path / "lab.snap"), check=True, timeout=180)
        assert f"lab {lab!r} runs on the snapshot" in restored.stdout

        service = json.loads(kubectl(lab, "get", "svc", "keep", "-o", "json").stdout)
        assert service["spec"]["clusterIP"] == cluster_ip
        assert kubectl(lab, "get", "configmap", "later", check=False).returncode != 0
        back = eventually(lambda: len(ready_pods(lab)) == 2 and ready_pods(lab), timeout=60)
        assert set(back) == set(pods)  # the very pods of the snapshot, started again
        answered = eventually(lambda: http(lab, "client", f"http://{cluster_ip}/hostname").stdout.strip())
        assert answered in {p["metadata"]["name"] for p in back.values()}
        client = json.loads(kubectl(lab, "get", "pod", "client", "-o", "json").stdout)
        assert client["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == started  # adopted
        refused = cli(lab, "snapshot", "restore", str(tmp_path / "nothing"), check=False)
        assert refused.returncode != 0
        (tmp_path / "junk").write_text("not a store")
        refused = cli(lab, "snapshot", "restore", str(tmp_path / "junk"), check=False)
        assert refused.returncode != 0 and "is not a netplane store snapshot" in refused.stderr
    finally:
        kubectl(lab, "delete", "svc,deployment", "keep", "--ignore-not-found")
        kubectl(lab, "delete", "job", "once", "--ignore-not-found")
        kubectl(lab, "delete", "configmap", "later", "--ignore-not-found")
