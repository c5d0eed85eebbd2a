"""Idempotency keys (webhook ``Idempotency-Key``): claim once, remember the answer, expire, prune."""

from __future__ import annotations

import threading
from collections.abc import Callable

from store_helpers import at

from crossdock.store.base import IdempotencyRecord, Store

SCOPE = "webhook:orders"
ANSWER = {"status_code": 202, "body": '{"tasks": [1, 2]}'}


def claim(
    store: Store, key: str, now: float = 0, *, until: float = 600, fingerprint: str = "f1", scope: str = SCOPE
) -> IdempotencyRecord | None:
    return store.claim_idempotency_key(scope, key, fingerprint=fingerprint, now=at(now), expires_at=at(until))


def test_first_claim_takes_the_key_and_the_second_sees_it_in_progress(store: Store) -> None:
    assert claim(store, "k1") is None
    pending = claim(store, "k1", 5, fingerprint="f2")
    assert pending == IdempotencyRecord("f1", at(0), at(600), None)


def test_a_settled_key_returns_the_remembered_answer(store: Store) -> None:
    assert claim(store, "k1") is None
    store.settle_idempotency_key(SCOPE, "k1", response=ANSWER, expires_at=at(86400))
    again = claim(store, "k1", 3600)
    assert again == IdempotencyRecord("f1", at(0), at(86400), ANSWER)
    # settling again (a late duplicate) changes nothing
    store.settle_idempotency_key(SCOPE, "k1", response={"status_code": 202, "body": "{}"}, expires_at=at(10))
    assert claim(store, "k1", 3600) == again


def test_forgetting_a_claim_frees_the_key(store: Store) -> None:
    assert claim(store, "k1") is None
    store.settle_idempotency_key(SCOPE, "k1", response=None)
    assert claim(store, "k1", 1, fingerprint="f2") is None
    assert claim(store, "k1", 2) == IdempotencyRecord("f2", at(1), at(600), None)


def test_forgetting_never_drops_a_remembered_answer(store: Store) -> None:
    assert claim(store, "k1") is None
    store.settle_idempotency_key(SCOPE, "k1", response=ANSWER, expires_at=at(100))
    store.settle_idempotency_key(SCOPE, "k1", response=None)
    found = claim(store, "k1", 50)
    assert found is not None and found.response == ANSWER


def test_expired_keys_can_be_taken_again(store: Store) -> None:
    assert claim(store, "k1") is None
    store.settle_idempotency_key(SCOPE, "k1", response=ANSWER, expires_at=at(100))
    assert claim(store, "k1", 99.5) is not None
    assert claim(store, "k1", 100, until=700) is None, "a key is gone at its expiry time"
    assert claim(store, "k1", 101) == IdempotencyRecord("f1", at(100), at(700), None)


def test_an_abandoned_claim_lapses_at_its_expiry(store: Store) -> None:
    """A process that died while importing leaves a claim; it must not block the key for the whole window."""
    assert claim(store, "k1", until=600) is None
    assert claim(store, "k1", 599) is not None
    assert claim(store, "k1", 600, until=1200) is None


def test_keys_are_per_scope(store: Store) -> None:
    assert claim(store, "k1") is None
    assert claim(store, "k1", scope="webhook:other") is None
    assert claim(store, "K1") is None, "keys are case-sensitive"


def test_expired_keys_of_every_scope_are_pruned(store: Store, open_another: Callable[[], Store]) -> None:
    for i in range(50):
        assert claim(store, f"old-{i}", until=10, scope=f"webhook:s{i % 3}") is None
    assert claim(store, "live", until=1000) is None
    other = open_another()
    assert claim(other, "new", 20, until=1000) is None
    # what is left is visible through claims: only the two live keys
    for i in range(50):
        assert claim(store, f"old-{i}", 21, until=22, scope=f"webhook:s{i % 3}") is None
    assert claim(store, "live", 21) is not None
    assert claim(store, "new", 21) is not None
    assert count_rows(store) == 52  # 50 fresh claims + the two live keys
    assert claim(store, "x", 30) is None
    assert count_rows(store) == 3  # the 50 claims ended at 22 and were pruned


def count_rows(store: Store) -> int:
    """Rows in the table, whatever the backend (pruning is not visible through the interface)."""
    from crossdock.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return len(store.idempotency)
    read = getattr(store, "_read")  # noqa: B009 - both SQL stores have it; the interface need not
    return int(read("SELECT COUNT(*) FROM idempotency_keys")[0][0])


def test_concurrent_claims_of_one_key_give_it_to_exactly_one(store: Store, open_another: Callable[[], Store]) -> None:
    stores = [open_another() for _ in range(6)]
    start = threading.Barrier(len(stores))
    results: list[IdempotencyRecord | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(s: Store, k: int) -> None:
        try:
            start.wait()
            for i in range(20):
                got = claim(s, f"key-{i}", fingerprint=f"w{k}")
                with lock:
                    results.append(got)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 6 * 20
    assert sum(r is None for r in results) == 20, "each key is taken by exactly one claimer"
