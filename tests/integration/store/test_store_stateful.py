"""Random sequences of imports, claims, settlements, lease expiries and manual actions, on every backend.

After every step the store must be consistent: exact counters, valid statuses, leased processing tasks,
logged transitions allowed by ``tasks.TRANSITIONS``, fingerprints pointing at existing tasks.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from store_backends import BACKENDS
from store_helpers import T0, assert_counters_exact, item

from crossdock.store.base import ImportOptions, Settlement, Store, TaskFilter
from crossdock.tasks import ALL_STATUSES, MANUAL_ACTIONS, TRANSITIONS, Action, Status

ROUTES = ("r1", "r2")
IDENTS = ("a", "b", "c", "d")
WORKERS = ("w1", "w2")
SETTLE_ACTIONS = (
    Action.DELIVERED,
    Action.DELIVERED_WAITING,
    Action.SCHEDULE_RETRY,
    Action.DELIVERY_FAILED,
    Action.FILTERED_OUT,
)
ALLOWED_PAIRS = {(src, rule.target) for rule in TRANSITIONS.values() for src in rule.sources}

records = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(IDENTS)),
        st.integers(0, 2),
        st.sampled_from([Status.NEW, Status.NEW, Status.NEW, Status.SKIPPED, Status.REJECTED]),
    ),
    min_size=1,
    max_size=6,
)


class StoreMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="crossdock-stateful-"))
        self.store: Store = self.open_store()
        self.store.ensure_routes(ROUTES)
        self.now = T0
        self.max_attempts = {"r1": 2, "r2": 3}

    def open_store(self) -> Store:
        return BACKENDS[self.backend](self.tmp)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ids(self, statuses: list[Status] | None = None) -> list[int]:
        page, _ = self.store.list_tasks(TaskFilter(statuses=statuses), limit=10_000)
        return [t.id for t in page]

    # --- rules -------------------------------------------------------------------------------------

    @rule(seconds=st.integers(1, 90))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(
        route=st.sampled_from(ROUTES),
        batch=records,
        realtime=st.booleans(),
        supersede=st.booleans(),
        mode=st.sampled_from(["delta", "delta", "delta", "full", "no-delta"]),
    )
    def import_batch(
        self,
        route: str,
        batch: list[tuple[str | None, int, Status]],
        realtime: bool,
        supersede: bool,
        mode: str,
    ) -> None:
        items = []
        for ident, data, status in batch:
            if ident is None:
                status = Status.REJECTED
            elif realtime and status is Status.NEW:
                status = Status.PROCESSING
            items.append(item(ident, data, status, reason=None if status is Status.NEW else status.value))
        options = ImportOptions(
            delta=mode != "no-delta",
            full=mode == "full",
            supersede=supersede,
            worker="rt" if realtime else None,
            lease_until=self.now + timedelta(seconds=30) if realtime else None,
        )
        counts = self.store.import_batch(route, items, run_id=None, options=options, now=self.now)
        assert len(counts.created_ids) == sum(counts.created.values())
        assert all(n >= 0 for n in counts.created.values())
        assert counts.processing_ids == [i for i in counts.created_ids if self.status(i) is Status.PROCESSING]

    @rule(
        route=st.sampled_from(ROUTES),
        limit=st.integers(1, 4),
        worker=st.sampled_from(WORKERS),
        lease=st.integers(5, 120),
    )
    def claim(self, route: str, limit: int, worker: str, lease: int) -> None:
        due_before = self.store.count_tasks(TaskFilter(statuses=[Status.NEW, Status.RETRY], route=route))
        claimed = self.store.claim_due_tasks(
            route, limit, worker=worker, lease_until=self.now + timedelta(seconds=lease), now=self.now
        )
        assert len(claimed) <= min(limit, due_before)
        for t in claimed:
            assert (t.status, t.worker, t.route) == (Status.PROCESSING, worker, route)
            assert t.attempts >= 1

    @precondition(lambda self: self.store.count_tasks(TaskFilter(statuses=[Status.PROCESSING])) > 0)
    @rule(
        data=st.data(),
        action=st.sampled_from(SETTLE_ACTIONS),
        right_worker=st.booleans(),
        delay=st.integers(0, 120),
    )
    def settle(self, data: st.DataObject, action: Action, right_worker: bool, delay: int) -> None:
        task_id = data.draw(st.sampled_from(self.ids([Status.PROCESSING])))
        t = self.store.get_task(task_id)
        assert t is not None and t.worker is not None
        worker = t.worker if right_worker else "intruder"
        changed = self.store.settle(
            [
                Settlement(
                    task_id,
                    action,
                    worker,
                    error=None if action is Action.DELIVERED else "boom",
                    next_attempt_at=self.now + timedelta(seconds=delay) if action is Action.SCHEDULE_RETRY else None,
                    message=action.value,
                )
            ],
            now=self.now,
        )
        assert changed == (1 if right_worker else 0)
        assert self.status(task_id) is (TRANSITIONS[action].target if right_worker else Status.PROCESSING)

    @rule()
    def recover(self) -> None:
        self.store.recover_expired_leases(now=self.now, max_attempts=self.max_attempts)
        for t in self.store.list_tasks(TaskFilter(statuses=[Status.PROCESSING]), limit=10_000)[0]:
            assert t.lease_until is not None and t.lease_until >= self.now

    @precondition(lambda self: self.store.count_tasks(TaskFilter(statuses=[Status.PROCESSING])) > 0)
    @rule(data=st.data(), seconds=st.integers(1, 120))
    def extend_lease(self, data: st.DataObject, seconds: int) -> None:
        task_id = data.draw(st.sampled_from(self.ids([Status.PROCESSING])))
        t = self.store.get_task(task_id)
        assert t is not None and t.worker is not None
        n = self.store.extend_leases([task_id], worker=t.worker, lease_until=self.now + timedelta(seconds=seconds))
        assert n == 1

    @precondition(lambda self: self.store.count_tasks(TaskFilter(statuses=[Status.PROCESSING])) > 0)
    @rule(data=st.data(), from_retry=st.booleans())
    def release(self, data: st.DataObject, from_retry: bool) -> None:
        task_id = data.draw(st.sampled_from(self.ids([Status.PROCESSING])))
        t = self.store.get_task(task_id)
        assert t is not None and t.worker is not None
        retries = {task_id} if from_retry else set()
        assert self.store.release([task_id], worker=t.worker, now=self.now, retries=retries) == 1
        assert self.status(task_id) is (Status.RETRY if from_retry else Status.NEW)

    @rule(
        action=st.sampled_from(MANUAL_ACTIONS),
        statuses=st.one_of(st.none(), st.lists(st.sampled_from(ALL_STATUSES), min_size=1, max_size=3, unique=True)),
        route=st.one_of(st.none(), st.sampled_from(ROUTES)),
        identifier=st.one_of(st.none(), st.sampled_from(IDENTS)),
    )
    def manual_action(
        self, action: Action, statuses: list[Status] | None, route: str | None, identifier: str | None
    ) -> None:
        selection = TaskFilter(statuses=statuses, route=route, identifier=identifier)
        matched = self.store.list_tasks(selection, limit=10_000)[0]
        can = [t for t in matched if t.status in TRANSITIONS[action].sources]
        result = self.store.apply_action(action, selection, actor="prop", reason="test", now=self.now)
        assert (result.matched, result.changed) == (len(matched), len(can))
        assert len(result.refused) == len({t.status for t in matched} - TRANSITIONS[action].sources)
        for t in can:
            after = self.store.get_task(t.id)
            assert after is not None
            if action is Action.RETRY and after.status is Status.SKIPPED:
                # a newer due task of the same record goes out instead (one pass sends a record once)
                assert t.identifier is not None and (after.error or "").startswith("superseded by task "), after
                continue
            assert after.status is TRANSITIONS[action].target
            if action is Action.RETRY:
                assert after.attempts == 0
        if action is Action.RETRY:
            retried = {(t.route, t.identifier) for t in can if t.identifier is not None}
            due = self.store.list_tasks(TaskFilter(statuses=[Status.NEW, Status.RETRY]), limit=10_000)[0]
            keys = [(t.route, t.identifier) for t in due if (t.route, t.identifier) in retried]
            assert len(keys) == len(set(keys)), "each retried record is due once"

    @rule(
        statuses=st.lists(st.sampled_from(ALL_STATUSES), min_size=1, max_size=4, unique=True),
        age=st.integers(0, 300),
    )
    def prune(self, statuses: list[Status], age: int) -> None:
        before = self.store.count_tasks(TaskFilter())
        deleted = self.store.prune(older_than=self.now - timedelta(seconds=age), statuses=statuses)
        assert self.store.count_tasks(TaskFilter()) == before - deleted

    @rule(route=st.sampled_from(ROUTES), identifier=st.one_of(st.none(), st.sampled_from(IDENTS)))
    def cache_clear(self, route: str, identifier: str | None) -> None:
        self.store.cache_clear(route, identifier)

    # --- invariants --------------------------------------------------------------------------------

    def status(self, task_id: int) -> Status:
        t = self.store.get_task(task_id)
        assert t is not None
        return t.status

    @invariant()
    def consistent(self) -> None:
        assert_counters_exact(self.store)
        tasks = self.store.list_tasks(TaskFilter(), limit=10_000)[0]
        for t in tasks:
            assert isinstance(t.status, Status) and t.status in ALL_STATUSES
            if t.status is Status.PROCESSING:
                assert t.lease_until is not None and t.worker is not None, t
                assert t.attempts >= 1, t
            if t.status in (Status.NEW, Status.RETRY):
                # otherwise it would never be claimed again
                assert t.next_attempt_at is not None, t
            logs = self.store.task_logs(t.id)
            for line in logs:
                assert (line.from_status, line.to_status) in ALLOWED_PAIRS, (t.id, line)
            if logs:
                last = logs[-1].to_status
                # claims are the only unlogged change
                assert t.status is last or (t.status is Status.PROCESSING and last in (Status.NEW, Status.RETRY)), (
                    t,
                    logs,
                )
        for route, ident in {(t.route, t.identifier) for t in tasks if t.identifier is not None}:
            entry = self.store.cache_show(route, ident)
            if entry is None:
                continue
            target = self.store.get_task(entry.task_id)
            assert target is not None, entry
            assert (target.route, target.identifier) == (route, ident)
            assert entry.task_status is target.status
            assert entry.fingerprint == target.fingerprint


STATEFUL_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _machine(backend: str) -> type[StoreMachine]:
    return STATEFUL_SETTINGS(type(f"StoreMachine_{backend}", (StoreMachine,), {"backend": backend}))


for _backend in sorted(BACKENDS):
    globals()[f"TestStoreStateful_{_backend}"] = _machine(_backend).TestCase
