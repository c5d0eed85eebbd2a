"""Webhooks: credentials, size limits, payload formats, and the tasks they create."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import orjson
import pytest
from webenv import HMAC_SECRET, HOOK_SECRET, Env

SECRET = {"X-Crossdock-Secret": HOOK_SECRET}


def total(env: Env) -> int:
    return int(env.store.stats().total)


def sign(body: bytes, key: str = HMAC_SECRET) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def test_wrong_or_missing_secret_is_401_and_creates_nothing(env: Env) -> None:
    body = {"sku": "X"}
    assert env.client.post("/api/v1/webhooks/hook", json=body).status_code == 401
    wrong = env.client.post("/api/v1/webhooks/hook", json=body, headers={"X-Crossdock-Secret": "guess-guess"})
    assert wrong.status_code == 401
    assert HOOK_SECRET not in wrong.text
    assert total(env) == 0


def test_hmac_signature(env: Env) -> None:
    body = b'{"sku": "S-1"}'
    bad = env.client.post("/api/v1/webhooks/signed", content=body, headers={"X-Signature": sign(body, "other-key")})
    assert bad.status_code == 401
    tampered = env.client.post(
        "/api/v1/webhooks/signed", content=b'{"sku": "S-2"}', headers={"X-Signature": sign(body)}
    )
    assert tampered.status_code == 401
    assert total(env) == 0
    ok = env.client.post("/api/v1/webhooks/signed", content=body, headers={"X-Signature": "sha256=" + sign(body)})
    assert ok.status_code == 202, ok.text
    plain = env.client.post(
        "/api/v1/webhooks/signed", content=b'{"sku": "S-3"}', headers={"X-Signature": sign(b'{"sku": "S-3"}')}
    )
    assert plain.status_code == 202
    assert total(env) == 2


def test_ten_megabytes_is_413(env: Env) -> None:
    big = b'{"sku": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    reply = env.client.post("/api/v1/webhooks/hook", content=big, headers=SECRET)
    assert reply.status_code == 413
    assert total(env) == 0


def test_a_streamed_body_over_the_limit_is_413(env: Env) -> None:
    """No Content-Length (chunked): the limit is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"sku": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    body = b"".join(chunks())
    reply = env.client.post("/api/v1/webhooks/signed", content=chunks(), headers={"X-Signature": sign(body)})
    assert reply.status_code == 413
    assert total(env) == 0


@pytest.mark.parametrize(
    ("content_type", "body", "identifiers"),
    [
        ("application/json", b'{"sku": "J-1", "qty": 2}', ["J-1"]),
        ("application/json", b'[{"sku": "L-1"}, {"sku": "L-2"}, {"sku": "L-3"}]', ["L-1", "L-2", "L-3"]),
        ("application/x-ndjson", b'{"sku": "N-1"}\n\n{"sku": "N-2"}\n', ["N-1", "N-2"]),
        (None, b'{"sku": "N-3"}\n{"sku": "N-4"}', ["N-3", "N-4"]),
        (
            "application/xml",
            b'<?xml version="1.0"?><products><product id="7"><sku>X-1</sku><qty>3</qty></product>'
            b"<product><sku>X-2</sku></product></products>",
            ["X-1", "X-2"],
        ),
        ("text/xml", b"<product><sku>X-3</sku><tags><tag>a</tag><tag>b</tag></tags></product>", ["X-3"]),
    ],
)
def test_good_payloads_create_tasks(env: Env, content_type: str | None, body: bytes, identifiers: list[str]) -> None:
    headers = {**SECRET, **({"Content-Type": content_type} if content_type else {})}
    reply = env.client.post("/api/v1/webhooks/hook", content=body, headers=headers)
    assert reply.status_code == 202, reply.text
    ids = reply.json()["tasks"]
    assert len(ids) == len(identifiers)
    tasks = env.store.get_tasks(ids)
    assert sorted(t.identifier or "" for t in tasks) == sorted(identifiers)
    assert all(t.status.value == "new" and t.route == "hook" for t in tasks)


def test_xml_shapes(env: Env) -> None:
    body = b'<product id="7"><sku>X-9</sku><tags><tag>a</tag><tag>b</tag></tags></product>'
    reply = env.client.post(
        "/api/v1/webhooks/hook", content=body, headers={**SECRET, "Content-Type": "application/xml"}
    )
    task = env.store.get_task(reply.json()["tasks"][0])
    assert task is not None
    assert task.entity == {"@id": "7", "sku": "X-9", "tags": {"tag": ["a", "b"]}}


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/json", b"{not json", "not valid JSON"),
        ("application/json", b"42", "JSON object"),
        ("application/json", b"[]", "empty"),
        ("application/json", b"   ", "empty"),
        ("application/xml", b"<a><b></a>", "well-formed"),
        (
            "application/xml",
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>',
            "DTD",
        ),
    ],
)
def test_bad_payloads_are_400_with_a_reason(env: Env, content_type: str, body: bytes, reason: str) -> None:
    reply = env.client.post("/api/v1/webhooks/hook", content=body, headers={**SECRET, "Content-Type": content_type})
    assert reply.status_code == 400
    assert reason in reply.json()["detail"]
    assert total(env) == 0


def test_bad_lines_in_a_list_become_rejected_tasks(env: Env) -> None:
    body = b'{"sku": "G-1"}\nnot json\n{"name": "no sku"}\n'
    reply = env.client.post(
        "/api/v1/webhooks/hook", content=body, headers={**SECRET, "Content-Type": "application/x-ndjson"}
    )
    assert reply.status_code == 202
    statuses = sorted(t.status.value for t in env.store.get_tasks(reply.json()["tasks"]))
    assert statuses == ["new", "rejected", "rejected"]


def test_unknown_and_non_webhook_names_are_404(env: Env) -> None:
    assert env.client.post("/api/v1/webhooks/nope", json={"sku": "1"}, headers=SECRET).status_code == 404
    assert env.client.post("/api/v1/webhooks/files", json={"sku": "1"}, headers=SECRET).status_code == 404


def test_a_webhook_without_secret_takes_operator_tokens(env: Env) -> None:
    assert env.client.post("/api/v1/webhooks/open-hook", json={"sku": "O-1"}).status_code == 401
    assert (
        env.client.post("/api/v1/webhooks/open-hook", json={"sku": "O-1"}, headers=env.auth("viewer")).status_code
        == 403
    )
    ok = env.client.post("/api/v1/webhooks/open-hook", json={"sku": "O-1"}, headers=env.auth("operator"))
    assert ok.status_code == 202 and len(ok.json()["tasks"]) == 1


def test_realtime_route_delivers_before_answering(env: Env) -> None:
    reply = env.client.post(
        "/api/v1/webhooks/live-hook", content=orjson.dumps([{"sku": "R-1"}, {"sku": "R-2"}]), headers=SECRET
    )
    assert reply.status_code == 202
    assert {t.status.value for t in env.store.get_tasks(reply.json()["tasks"])} == {"finished"}


def test_an_unchanged_record_whose_task_is_not_delivered_yet_creates_no_task(env: Env) -> None:
    first = env.client.post("/api/v1/webhooks/hook", json={"sku": "U-1", "v": 1}, headers=SECRET)
    again = env.client.post("/api/v1/webhooks/hook", json={"sku": "U-1", "v": 1}, headers=SECRET)
    assert len(first.json()["tasks"]) == 1
    assert again.status_code == 202 and again.json()["tasks"] == []
    assert again.json()["routes"]["hook"]["unchanged"] == 1
    [task] = env.store.get_tasks(first.json()["tasks"])
    assert task.seen_count == 2  # the waiting task was touched, as delta does for every import


def test_an_unchanged_record_after_its_delivery_is_one_skipped_task(env: Env) -> None:
    """What docs/web.md and docs/lifecycle.md say: delta's rules, the same as for a pulled record."""
    body = orjson.dumps({"sku": "U-2", "v": 1})
    delivered = env.client.post("/api/v1/webhooks/live-hook", content=body, headers=SECRET).json()
    again = env.client.post("/api/v1/webhooks/live-hook", content=body, headers=SECRET).json()
    third = env.client.post("/api/v1/webhooks/live-hook", content=body, headers=SECRET).json()
    [skipped] = env.store.get_tasks(again["tasks"])
    assert (skipped.status.value, skipped.related_task_id) == ("skipped", delivered["tasks"][0])
    assert again["routes"]["live-hook"]["unchanged"] == 1 and again["routes"]["live-hook"]["new"] == 0
    assert third["tasks"] == [] and third["routes"]["live-hook"]["unchanged"] == 1


def test_a_wrong_shared_secret_is_refused_before_the_body_is_read(env: Env) -> None:
    """The secret is a header: a caller without it gets 401 whatever the size it announces, and no 413 tells it
    the limit; a signed source needs the body, so there the size comes first."""
    big = b'{"sku": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    wrong = env.client.post("/api/v1/webhooks/hook", content=big, headers={"X-Crossdock-Secret": "guess-guess"})
    assert wrong.status_code == 401
    assert env.client.post("/api/v1/webhooks/hook", content=big, headers=SECRET).status_code == 413
    unsigned = env.client.post("/api/v1/webhooks/signed", content=big, headers={"X-Signature": "0" * 64})
    assert unsigned.status_code == 413
    assert total(env) == 0


def test_inactive_route_refuses_webhooks(env: Env) -> None:
    env.client.post("/api/v1/routes/hook/deactivate", headers=env.auth("operator"))
    assert env.client.post("/api/v1/webhooks/hook", json={"sku": "I-1"}, headers=SECRET).status_code == 409
    assert total(env) == 0


def test_scheduled_run_of_a_webhook_source_reads_nothing(env: Env) -> None:
    result = env.run("hook")
    assert result["incoming"]["read"] == 0
