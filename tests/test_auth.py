"""Bearer tokens from a token file and CA discovery through a bootstrap token, over real TLS."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from netplane.api import auth, satokens, tls
from netplane.api.client import Client, discover_ca
from netplane.api.errors import ApiError
from netplane.api.server import start
from netplane.api.store import Store


async def serving(tmp_path: Path, tokens: auth.TokenFile):
    certs = tls.ensure(tmp_path / "pki", "auth-test", ["127.0.0.1"])
    store = Store(str(tmp_path / "api.db"))
    runner, port = await start(store, "127.0.0.1", 0, tokens, certs.server_context(), ca_pem=certs.ca.read_bytes())
    return runner, store, f"https://127.0.0.1:{port}", certs


async def can_list(url: str, token: str, ca: str) -> bool:
    async with Client(url, token, ca) as api:
        try:
            await api.list("namespaces")
            return True
        except ApiError as err:
            assert err.code == 401
            return False


def test_tokens_from_the_file_are_accepted_at_once_and_expired_or_unknown_ones_are_not(tmp_path):
    async def scenario() -> None:
        tokens = auth.TokenFile(tmp_path / "tokens.json")
        admin = tokens.admin()
        runner, store, url, certs = await serving(tmp_path, tokens)
        try:
            ca = str(certs.ca)
            assert await can_list(url, admin, ca)
            assert not await can_list(url, "not-a-token", ca)
            joining = auth.new_bootstrap_token()
            assert not await can_list(url, joining, ca)
            auth.TokenFile(tmp_path / "tokens.json").add(auth.Token(joining, "bootstrap"))  # as `token create` does
            assert await can_list(url, joining, ca)
            old = auth.new_bootstrap_token()
            auth.TokenFile(tmp_path / "tokens.json").add(auth.Token(old, "bootstrap", expires=time.time() - 1))
            assert not await can_list(url, old, ca)
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())


def test_an_agent_learns_the_ca_with_its_token_and_a_wrong_token_is_refused_with_the_reason(tmp_path):
    async def scenario() -> None:
        tokens = auth.TokenFile(tmp_path / "tokens.json")
        token = auth.new_bootstrap_token()
        tokens.add(auth.Token(token, "bootstrap"))
        runner, store, url, certs = await serving(tmp_path, tokens)
        try:
            assert await discover_ca(url, token) == certs.ca.read_bytes()
            token_id = token.split(".")[0]
            with pytest.raises(auth.TokenError, match="not signed with token"):
                await discover_ca(url, f"{token_id}.{'x' * 16}")
            with pytest.raises(auth.TokenError, match="knows no bootstrap token"):
                await discover_ca(url, auth.new_bootstrap_token())
            with pytest.raises(auth.TokenError, match=r"expected \[a-z0-9\]\{6\}"):
                await discover_ca(url, "admin-token")
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())


def test_service_account_tokens_name_the_clusters_domain_and_another_domains_are_refused(tmp_path):
    key = satokens.ensure_key(tmp_path)
    ours, theirs = satokens.TokenIssuer(key, satokens.issuer_url("corp.internal")), satokens.TokenIssuer(key)
    account = {"metadata": {"namespace": "default", "name": "default", "uid": "u1"}}
    token, _ = ours.issue(account, 3600)
    claims = ours.claims(token)
    assert claims["iss"] == claims["aud"][0] == "https://kubernetes.default.svc.corp.internal"
    assert theirs.claims(token) is None  # the same key, issued for another cluster's domain
