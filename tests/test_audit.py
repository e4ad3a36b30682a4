"""The API server's audit log: audit.k8s.io/v1 Events, one JSON line per request, at each level."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from netplane.api import audit
from netplane.api.server import start
from netplane.api.store import Store
from support.objects import pod


@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "/api/v1/namespaces/default/pods", {}, audit.RequestInfo("list", "pods", "default", version="v1")),
    ("GET", "/api/v1/pods", {"watch": "true"}, audit.RequestInfo("watch", "pods", version="v1")),
    ("POST", "/apis/apps/v1/namespaces/shop/deployments", {},
     audit.RequestInfo("create", "deployments", "shop", group="apps", version="v1")),
    ("PUT", "/apis/apps/v1/namespaces/shop/deployments/web/scale", {},
     audit.RequestInfo("update", "deployments", "shop", "web", "scale", "apps", "v1")),
    ("PATCH", "/api/v1/nodes/node-1/status", {}, audit.RequestInfo("patch", "nodes", "", "node-1", "status", "", "v1")),
    ("DELETE", "/api/v1/namespaces/default/pods", {}, audit.RequestInfo("deletecollection", "pods", "default",
                                                                         version="v1")),
    ("GET", "/api/v1/namespaces/shop", {}, audit.RequestInfo("get", "namespaces", "shop", "shop", version="v1")),
    ("POST", "/api/v1/namespaces/default/pods/web/eviction", {},
     audit.RequestInfo("create", "pods", "default", "web", "eviction", version="v1")),
    ("GET", "/healthz", {}, audit.RequestInfo("get")),
    ("GET", "/apis/apps/v1", {}, audit.RequestInfo("get")),
])
def test_requests_are_read_as_the_apiservers_request_info_reads_them(method, path, query, expected):
    assert audit.request_info(method, path, query) == expected


def run(tmp_path, level: str) -> list[dict]:
    """A few requests to a server auditing at ``level``; the Events it wrote."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "audit.log"

    async def main():
        store = Store(str(tmp_path / "api.db"))
        log = audit.AuditLog(level, path)
        runner, port = await start(store, token="s3cret", audit_log=log)
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default/pods"
        try:
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret",
                                                      "User-Agent": "tests/audit"}) as session:
                async with session.post(base, json=pod("web", {"app": "web"})) as resp:
                    assert resp.status == 201
                async with session.get(f"{base}/web") as resp:
                    assert resp.status == 200
                async with session.get(f"{base}/gone") as resp:
                    assert resp.status == 404
                async with session.get(base, headers={"Authorization": "Bearer wrong"}) as resp:
                    assert resp.status == 401
        finally:
            await runner.cleanup()
            log.close()
            store.close()

    asyncio.run(main())
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_metadata_says_who_did_what_to_which_object_and_how_it_ended(tmp_path):
    created, got, missing, refused = run(tmp_path, "Metadata")
    assert created["kind"] == "Event" and created["apiVersion"] == "audit.k8s.io/v1"
    assert (created["level"], created["stage"], created["verb"]) == ("Metadata", "ResponseComplete", "create")
    assert created["user"] == {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
    assert created["objectRef"] == {"resource": "pods", "namespace": "default", "apiVersion": "v1"}
    assert created["responseStatus"] == {"metadata": {}, "code": 201}
    assert created["requestURI"] == "/api/v1/namespaces/default/pods" and created["userAgent"] == "tests/audit"
    assert created["sourceIPs"] == ["127.0.0.1"] and created["requestReceivedTimestamp"] <= created["stageTimestamp"]
    assert "requestObject" not in created and "responseObject" not in created
    assert (got["verb"], got["objectRef"]["name"]) == ("get", "web")
    assert missing["responseStatus"] | {"details": None} == {
        "metadata": {}, "code": 404, "status": "Failure", "reason": "NotFound", "message": 'pods "gone" not found',
        "details": None}
    assert refused["responseStatus"]["code"] == 401 and refused["user"] == {}
    assert len({e["auditID"] for e in (created, got, missing, refused)}) == 4


def test_request_and_request_response_add_the_bodies(tmp_path):
    created = run(tmp_path / "request", "Request")[0]
    assert created["requestObject"]["metadata"]["name"] == "web" and "responseObject" not in created
    created, got = run(tmp_path / "both", "RequestResponse")[:2]
    assert created["responseObject"]["metadata"]["uid"] and got["responseObject"]["metadata"]["name"] == "web"
    assert "requestObject" not in got  # a read has no body
    assert run(tmp_path / "none", "None") == []
    with pytest.raises(ValueError):
        audit.AuditLog("Everything")


def test_tokens_speak_for_the_admin_a_bootstrap_user_or_a_service_account(tmp_path):
    from netplane.api import auth
    from netplane.api.satokens import Identity
    tokens = auth.TokenFile(tmp_path / "tokens.json")
    admin = tokens.admin()
    tokens.add(auth.Token("abcdef.0123456789abcdef", "bootstrap"))
    assert tokens.user(admin) == auth.ADMIN
    assert tokens.user("abcdef.0123456789abcdef") == auth.User("system:bootstrap:abcdef",
                                                               ("system:bootstrappers", "system:authenticated"))
    assert tokens.user("nope") is None
    account = Identity("shop", "builder", ("https://kubernetes.default.svc.cluster.local",), "uid-1").user()
    assert account.info() == {"username": "system:serviceaccount:shop:builder", "uid": "uid-1", "groups": [
        "system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]}
