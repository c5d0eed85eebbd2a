"""Circuit breakers in the store, on every backend: the state machine, the probe's compare-and-set across store
objects (processes), and the events a change announces."""

from __future__ import annotations

import threading
from collections.abc import Callable

from store_helpers import at

from crossdock.store.base import CircuitState, CircuitUpdate, Store
from crossdock.store.events import CircuitClosed, CircuitOpened, LedgerEvent

KEY = "shop"
COOLDOWN = 60.0


def fail(
    store: Store, n: int, now: float, *, threshold: int = 3, reset: bool = False, error: str = "503"
) -> CircuitUpdate:
    return store.record_circuit_failures(
        KEY, n, threshold=threshold, cooldown=COOLDOWN, error=error, now=at(now), reset=reset
    )


def state(store: Store) -> CircuitState:
    return store.circuits()[KEY]


def test_a_key_without_a_row_is_unknown_and_failures_below_the_threshold_keep_it_closed(store: Store) -> None:
    assert store.circuits() == {}
    assert store.reset_circuit_failures(KEY, now=at(0)) is None, "nothing to reset: nothing written"
    update = fail(store, 2, 1)
    assert (update.before, update.after.state, update.after.failures) == ("closed", "closed", 2)
    assert not update.opened and not update.closed
    assert state(store).last_error == "503"


def test_consecutive_failures_open_it_once_and_later_ones_do_not_lengthen_the_cooldown(store: Store) -> None:
    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)
    fail(store, 2, 0)
    opened = fail(store, 1, 5, error="connection refused")
    assert opened.opened and opened.after.state == "open"
    row = state(store)
    assert (row.failures, row.opened_at, row.open_until, row.last_error) == (3, at(5), at(65), "connection refused")
    # deliveries that were in flight fail too: they count, but the breaker stays open as it was
    again = fail(store, 4, 10)
    assert not again.opened and state(store).open_until == at(65) and state(store).failures == 7
    assert heard == [CircuitOpened(KEY, 3, at(65), "connection refused", False)]


def test_an_answer_resets_a_closed_count_but_never_closes_an_open_breaker(store: Store) -> None:
    fail(store, 2, 0)
    reset = store.reset_circuit_failures(KEY, now=at(1))
    assert reset is not None and reset.after.failures == 0 and reset.after.state == "closed"
    assert store.reset_circuit_failures(KEY, now=at(2)) is None, "already zero: no write"
    # a failure after an answer counts from zero, in the same write
    assert fail(store, 2, 3, reset=True).after.failures == 2
    assert fail(store, 1, 4, reset=True).after.failures == 1
    fail(store, 3, 5)
    assert state(store).state == "open"
    assert store.reset_circuit_failures(KEY, now=at(6)) is None
    assert state(store).state == "open"


def test_the_probe_is_taken_by_one_caller_after_the_cooldown_and_its_answer_closes_it(
    store: Store, open_another: Callable[[], Store]
) -> None:
    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)
    fail(store, 3, 0)
    other = open_another()
    stale = at(-300)
    assert not store.take_circuit_probe(KEY, owner="a", now=at(30), stale_before=stale), "still cooling down"
    assert store.take_circuit_probe(KEY, owner="a", now=at(60), stale_before=stale)
    assert not other.take_circuit_probe(KEY, owner="b", now=at(61), stale_before=stale), "a probe is out already"
    row = other.circuits()[KEY]
    assert (row.state, row.probe_owner, row.probe_at) == ("half_open", "a", at(60))
    # an answer to someone else's delivery does not close it: only the probe's does
    assert other.reset_circuit_failures(KEY, now=at(62), probe_owner="b") is None
    closed = store.reset_circuit_failures(KEY, now=at(63), probe_owner="a")
    assert closed is not None and closed.closed
    row = other.circuits()[KEY]
    assert (row.state, row.failures, row.open_until, row.probe_owner) == ("closed", 0, None, None)
    assert [type(e) for e in heard] == [CircuitOpened, CircuitClosed]
    assert heard[-1] == CircuitClosed(KEY, "probe")


def test_a_failed_probe_opens_it_for_another_cooldown(store: Store) -> None:
    heard: list[LedgerEvent] = []
    fail(store, 3, 0)
    store.events.subscribe(heard.append)
    assert store.take_circuit_probe(KEY, owner="a", now=at(60), stale_before=at(-300))
    update = fail(store, 1, 61, error="timeout")
    assert update.opened and update.before == "half_open"
    row = state(store)
    assert (row.state, row.failures, row.open_until, row.probe_owner) == ("open", 4, at(121), None)
    assert heard == [CircuitOpened(KEY, 4, at(121), "timeout", True)]


def test_a_probe_nobody_decided_is_given_back_or_taken_over_once_stale(
    store: Store, open_another: Callable[[], Store]
) -> None:
    fail(store, 3, 0)
    other = open_another()
    assert store.take_circuit_probe(KEY, owner="a", now=at(60), stale_before=at(-240))
    # no due task: given back, so the next process with work probes at once
    assert not other.return_circuit_probe(KEY, owner="b", now=at(61)), "only its taker gives it back"
    assert store.return_circuit_probe(KEY, owner="a", now=at(61))
    row = state(store)
    assert (row.state, row.open_until, row.probe_owner) == ("open", at(61), None)
    assert other.take_circuit_probe(KEY, owner="b", now=at(62), stale_before=at(-238))
    # b died holding it: after the stale bound another process takes it over
    assert not store.take_circuit_probe(KEY, owner="a", now=at(100), stale_before=at(40))
    assert store.take_circuit_probe(KEY, owner="a", now=at(400), stale_before=at(100))
    assert state(store).probe_owner == "a"


def test_closing_by_hand_works_from_any_state_and_says_who(store: Store) -> None:
    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)
    assert store.close_circuit(KEY, now=at(0), by="alice") is None, "no row: nothing to close"
    fail(store, 3, 0)
    update = store.close_circuit(KEY, now=at(1), by="alice")
    assert update is not None and update.before == "open" and update.closed
    assert (state(store).state, state(store).failures) == ("closed", 0)
    assert heard[-1] == CircuitClosed(KEY, "alice")
    again = store.close_circuit(KEY, now=at(2), by="alice")
    assert again is not None and not again.closed, "closed already: no second event"
    assert len([e for e in heard if isinstance(e, CircuitClosed)]) == 1


def test_failures_from_many_processes_add_up_exactly(store: Store, open_another: Callable[[], Store]) -> None:
    stores = [store, open_another()]

    def hammer(s: Store) -> None:
        for i in range(20):
            s.record_circuit_failures(KEY, 1, threshold=1000, cooldown=COOLDOWN, error=None, now=at(i))

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state(store).failures == 80
