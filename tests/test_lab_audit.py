"""The lab's audit log: the three-node lab's lab file asks for `audit: {level: Metadata}`."""
from __future__ import annotations

import json

from conftest import on_labs
from labtools import eventually, kubectl

pytestmark = on_labs("three-nodes")


def test_what_kubectl_asks_is_in_the_audit_log_with_who_asked(lab):
    from netplane.lab.state import LabState
    kubectl(lab, "get", "pods", "-n", "kube-system")
    kubectl(lab, "get", "pod", "no-such-pod", check=False)

    def kubectl_events() -> list[dict]:
        lines = LabState(lab).audit_log.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["userAgent"].startswith("kubectl/")]
    listed = eventually(lambda: next((e for e in kubectl_events() if e["verb"] == "list"
                                      and e.get("objectRef", {}).get("namespace") == "kube-system"), None))
    assert listed["level"] == "Metadata" and listed["objectRef"] == {"resource": "pods", "namespace": "kube-system",
                                                                     "apiVersion": "v1"}
    assert listed["user"]["username"] == "kubernetes-admin" and "system:masters" in listed["user"]["groups"]
    assert listed["responseStatus"]["code"] == 200 and "requestObject" not in listed
    missing = next(e for e in kubectl_events() if e.get("objectRef", {}).get("name") == "no-such-pod")
    assert (missing["verb"], missing["responseStatus"]["code"], missing["responseStatus"]["reason"]) == \
        ("get", 404, "NotFound")
