"""The redactor masks each secret in the forms it leaks in, leaves ordinary text alone, and stays cheap."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from crossdock.config.loader import credential_secrets
from crossdock.connectors.http_auth import AuthOptions
from crossdock.redact import MASK, Redactor, basic_pair, redact_url, url_secrets

PW = "a-planted/secret pw+1"
USER = "user"


def b64(text: str, *, urlsafe: bool = False) -> str:
    raw = text.encode()
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()


@pytest.fixture
def redact() -> Redactor:
    return Redactor([PW, basic_pair(USER, PW)])


@pytest.mark.parametrize(
    "form",
    [
        PW,
        b64(PW),
        b64(PW).rstrip("="),
        b64(PW, urlsafe=True),
        b64(PW, urlsafe=True).rstrip("="),
        quote(PW, safe=""),
        quote(PW),
        quote_plus(PW),
        quote(PW, safe="").lower(),
        json.dumps(PW)[1:-1],
        b64(f"{USER}:{PW}"),
        b64(f"{USER}:{PW}", urlsafe=True).rstrip("="),
    ],
    ids=[
        "plain",
        "b64",
        "b64-unpadded",
        "b64url",
        "b64url-unpadded",
        "percent",
        "percent-keep-slash",
        "plus-for-space",
        "percent-lower",
        "json-escaped",
        "basic-pair",
        "basic-pair-b64url",
    ],
)
def test_every_derived_form_is_masked(redact: Redactor, form: str) -> None:
    assert form != "" and form in f"before {form} after"
    out = redact(f"before {form} after")
    assert out == f"before {MASK} after"


@pytest.mark.parametrize("prefix", ["", "x", "xy", "someone-else:"])
def test_base64_of_a_longer_text_holding_the_secret_loses_the_secret(redact: Redactor, prefix: str) -> None:
    """A header value or body that base64-encodes the secret among other text, at any byte offset."""
    encoded = b64(f"{prefix}{PW} and more text")
    out = redact(encoded)
    assert MASK in out
    decoded_core = out.replace(MASK, "")
    assert len(decoded_core) < len(encoded) - len(b64(PW)) + 8


def test_authorization_headers_and_credentials_of_any_value_are_masked() -> None:
    redact = Redactor()
    assert redact("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: Basic {MASK}"
    assert redact('{"authorization": "Bearer abc.def.ghi"}') == f'{{"authorization": "Bearer {MASK}"}}'
    assert redact("proxy-authorization=Token 123") == f"proxy-authorization=Token {MASK}"
    assert redact("echoed: Basic dXNlcjpwYXNz!") == f"echoed: Basic {MASK}!"
    assert redact("got Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig") == f"got Bearer {MASK}"
    # prose keeps its words
    for text in ("Basic configuration is easy", "Bearer tokens expire", "authorization failed", "Basic AUTH"):
        assert redact(text) == text


def test_url_passwords_and_secret_query_parameters_are_masked() -> None:
    redact = Redactor()
    assert redact("cannot reach postgresql://u:PASSWORD@127.0.0.1:5432/test") == (
        f"cannot reach postgresql://u:{MASK}@127.0.0.1:5432/test"
    )
    assert redact("amqp://guest:p%40ss@broker/vhost") == f"amqp://guest:{MASK}@broker/vhost"
    assert (
        redact("GET https://api/x?api_key=k123&page=2&Token=t")
        == f"GET https://api/x?api_key={MASK}&page=2&Token={MASK}"
    )
    for text in ("http://host:8080/path@x", "https://user@host/db", "see http://a.b/c?page=2"):
        assert redact(text) == text


def test_short_secrets_are_not_masked_and_short_derived_forms_do_not_over_mask() -> None:
    redact = Redactor(["abc", "tok1"])
    assert redact("abc tok1") == f"abc {MASK}"  # under 4 characters is no secret: it would eat ordinary words
    # tok1's base64 core at an offset would be 4 characters or fewer: only whole forms of 8 or more are masked
    assert redact(b64("tok1")) == MASK
    text = "dG9r and b2sx are ordinary words here"
    assert redact(text) == text


def test_a_secret_holding_another_is_masked_whole() -> None:
    redact = Redactor(["secret", "secret-and-more"])
    assert redact("x secret-and-more y secret z") == f"x {MASK} y {MASK} z"


def test_add_and_extended_learn_new_secrets() -> None:
    redact = Redactor(["first-secret"])
    wider = redact.extended(["second-secret"])
    redact.add("third-secret")
    assert redact("first-secret third-secret second-secret") == f"{MASK} {MASK} second-secret"
    assert wider("first-secret second-secret third-secret") == f"{MASK} {MASK} third-secret"


def test_url_helpers() -> None:
    assert url_secrets("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert url_secrets("postgresql://u@h/db") == [] and url_secrets("sqlite:///x.db") == []
    assert redact_url("postgresql://u:PASSWORD@127.0.0.1:1/x") == f"postgresql://u:{MASK}@127.0.0.1:1/x"


def test_basic_auth_feeds_the_pair_and_config_feeds_pairs_and_url_passwords() -> None:
    auth = AuthOptions(type="basic", username=USER, password=PW)
    assert basic_pair(USER, PW) in auth.secrets() and PW in auth.secrets()
    oauth = AuthOptions(type="oauth2", token_url="http://x/t", client_id="cid", client_secret="csecret-1")
    assert "cid:csecret-1" in oauth.secrets()
    data = {
        "database": "postgresql://app:db-pass%21@db/app",
        "connections": {
            "erp": {"type": "http", "auth": {"type": "basic", "username": "erp", "password": "erp-pw"}},
            "bus": {"type": "amqp", "url": "amqp://guest:bus-pw@broker/"},
            "files": {"type": "sftp", "host": "h", "username": "me", "password": "sftp-pw"},
        },
    }
    found = credential_secrets(data)
    assert {"db-pass%21", "db-pass!", "erp:erp-pw", "bus-pw", "me:sftp-pw"} <= found


def test_redactor_stays_cheap() -> None:
    """It runs over every string of every API answer: one regex pass, fast on text without secrets."""
    redact = Redactor([f"secret-number-{i}-xyz" for i in range(20)])
    prose = "The quick brown fox jumps over the lazy dog; SKU-000123 costs 12.50 EUR at https://shop/x?id=4. "
    big = prose * 3000  # ~300 KB
    started = time.perf_counter()
    for _ in range(5):
        assert redact(big) == big
    per_pass = (time.perf_counter() - started) / 5
    assert per_pass < 0.1, f"{per_pass * 1000:.1f} ms for 300 KB"
    started = time.perf_counter()
    for _ in range(20_000):
        redact("failed")
    assert (time.perf_counter() - started) / 20_000 < 20e-6


def test_every_secret_bearing_connection_option_feeds_the_projects_redactor(tmp_path: Path) -> None:
    from crossdock.config.loader import load_config

    secrets = {
        "BEARER": "bearer-token-0001",
        "BASIC_PW": "basic-password-0002",
        "CLIENT_SECRET": "oauth-client-secret-0003",
        "HEADER_KEY": "header-api-key-0004",
        "QUERY_KEY": "query-api-key-0005",
        "SQL_PW": "sql-password-0006",
        "AMQP_PW": "amqp-password-0007",
        "SFTP_PW": "sftp-password-0008",
        "SFTP_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA0009\n-----END OPENSSH KEY-----",
        "DB_PW": "database-password-0010",
    }
    (tmp_path / "crossdock.yaml").write_text(
        """\
database: "postgresql://app:${DB_PW}@db:5432/crossdock"
connections:
  a: {type: http, base_url: "http://a", auth: {type: bearer, token: "${BEARER}"}}
  b: {type: http, base_url: "http://b", auth: {type: basic, username: svc, password: "${BASIC_PW}"}}
  c:
    type: http
    base_url: "http://c"
    auth: {type: oauth2, token_url: "http://c/t", client_id: cid, client_secret: "${CLIENT_SECRET}", client_auth: basic}
  d: {type: http, base_url: "http://d", headers: {X-Api-Key: "${HEADER_KEY}"}}
  e: {type: http, base_url: "http://e", auth: {type: api_key, name: key, value: "${QUERY_KEY}", location: query}}
  sql: {type: sql, url: "postgresql+psycopg://erp:${SQL_PW}@erp-db/erp"}
  bus: {type: amqp, url: "amqp://guest:${AMQP_PW}@broker:5672/"}
  files: {type: sftp, host: h, username: me, password: "${SFTP_PW}", private_key: "${SFTP_KEY}"}
routes: {}
"""
    )
    loaded = load_config(tmp_path / "crossdock.yaml", environ=secrets)
    redact = Redactor(loaded.secrets)
    for name, value in secrets.items():
        for form in (value, b64(value), quote(value, safe="")):
            assert redact(f"<{form}>") == f"<{MASK}>", f"{name} as {form[:20]}"
    for user, password in (("svc", secrets["BASIC_PW"]), ("cid", secrets["CLIENT_SECRET"])):
        assert redact(f"Basic {b64(f'{user}:{password}')}") == f"Basic {MASK}"
        assert redact(f"x{b64(f'{user}:{password}')}y") == f"x{MASK}y"
