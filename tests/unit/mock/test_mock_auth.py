"""Each auth mode of the mock ERP accepts the right credentials and refuses the wrong ones."""

from __future__ import annotations

import base64
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from crossdock.mock import AuthConfig, RunningErp, start_erp


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# mode -> (right (headers, query), wrong (headers, query))
CASES: dict[str, tuple[tuple[dict[str, str], str], tuple[dict[str, str], str]]] = {
    "bearer": (({"Authorization": "Bearer erp-token"}, ""), ({"Authorization": "Bearer nope"}, "")),
    "basic": (
        ({"Authorization": _basic("erp", "erp-secret")}, ""),
        ({"Authorization": _basic("erp", "x")}, ""),
    ),
    "api_key_header": (({"X-Api-Key": "erp-key"}, ""), ({"X-Api-Key": "erp-kez"}, "")),
    "api_key_query": (({}, "&api_key=erp-key"), ({}, "&api_key=wrong")),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_auth_mode_accepts_right_and_refuses_wrong_or_missing(http: Any, mode: str) -> None:
    (right_headers, right_query), (wrong_headers, wrong_query) = CASES[mode]
    with start_erp(products=15, auth=mode) as erp:
        url = erp.url + "/products?page_size=10"
        ok = http("GET", url + right_query, headers=right_headers)
        assert ok.status == 200
        assert len(ok.json()["items"]) == 10
        wrong = http("GET", url + wrong_query, headers=wrong_headers)
        assert wrong.status == 401
        assert wrong.json() == {"error": "unauthorized"}
        assert "WWW-Authenticate" in wrong.headers
        assert http("GET", url).status == 401
        # the next link keeps the query, so query-string auth survives pagination
        next_url = ok.json()["_links"]["next"]
        assert http("GET", next_url, headers=right_headers).status == 200


def test_no_auth_mode_needs_nothing(http: Any, erp: RunningErp) -> None:
    assert http("GET", erp.url + "/products").status == 200


def test_unknown_auth_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown auth mode"):
        AuthConfig.parse("kerberos")


def _token(http: Any, erp: RunningErp, secret: str = "crossdock-secret", grant: str = "client_credentials") -> Any:
    form = urllib.parse.urlencode({"grant_type": grant, "client_id": "crossdock", "client_secret": secret})
    return http(
        "POST",
        erp.url + "/oauth/token",
        raw=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.fixture
def oauth_erp() -> Iterator[RunningErp]:
    with start_erp(products=5, auth={"mode": "oauth2", "token_ttl": 0.3}) as erp:
        yield erp


def test_oauth2_client_credentials(http: Any, oauth_erp: RunningErp) -> None:
    reply = _token(http, oauth_erp)
    assert reply.status == 200
    body = reply.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 0.3
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert http("GET", oauth_erp.url + "/products", headers=headers).status == 200
    assert http("GET", oauth_erp.url + "/products", headers={"Authorization": "Bearer forged"}).status == 401
    assert http("GET", oauth_erp.url + "/products").status == 401
    assert oauth_erp.tokens_issued == 1


def test_oauth2_refuses_wrong_client_and_grant(http: Any, oauth_erp: RunningErp) -> None:
    assert _token(http, oauth_erp, secret="wrong").status == 401
    assert _token(http, oauth_erp, grant="password").json() == {"error": "unsupported_grant_type"}
    assert oauth_erp.tokens_issued == 0


def test_oauth2_accepts_client_credentials_in_basic_header(http: Any, oauth_erp: RunningErp) -> None:
    reply = http(
        "POST",
        oauth_erp.url + "/oauth/token",
        raw=b"grant_type=client_credentials",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": _basic("crossdock", "crossdock-secret"),
        },
    )
    assert reply.status == 200


def test_oauth2_tokens_expire(http: Any, oauth_erp: RunningErp) -> None:
    token = _token(http, oauth_erp).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert http("GET", oauth_erp.url + "/products", headers=headers).status == 200
    time.sleep(0.35)
    expired = http("GET", oauth_erp.url + "/products", headers=headers)
    assert expired.status == 401
    assert "invalid_token" in expired.headers["WWW-Authenticate"]
    fresh = _token(http, oauth_erp).json()["access_token"]
    assert http("GET", oauth_erp.url + "/products", headers={"Authorization": f"Bearer {fresh}"}).status == 200
    assert oauth_erp.tokens_issued == 2


def test_expire_tokens_invalidates_at_once(http: Any, oauth_erp: RunningErp) -> None:
    oauth_erp.set_auth({"mode": "oauth2", "token_ttl": 60})
    token = _token(http, oauth_erp).json()["access_token"]
    assert _token(http, oauth_erp).json()["expires_in"] == 60
    oauth_erp.expire_tokens()
    reply = http("GET", oauth_erp.url + "/products", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 401
