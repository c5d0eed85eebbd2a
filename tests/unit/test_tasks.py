"""The status machine of DESIGN section 2, exhaustively: every allowed transition, every refused one, and the
import decision table."""

from __future__ import annotations

import pytest

from crossdock.errors import TransitionRefused
from crossdock.tasks import (
    ALL_STATUSES,
    MANUAL_ACTIONS,
    TRANSITIONS,
    Action,
    ImportOutcome,
    Status,
    allowed_actions,
    decide_import,
    is_allowed,
    transition,
)

S = Status

#: DESIGN section 2, written out independently of tasks.py
EXPECTED: dict[Action, tuple[set[Status], Status]] = {
    Action.CLAIM: ({S.NEW, S.RETRY}, S.PROCESSING),
    Action.DELIVERED: ({S.PROCESSING}, S.FINISHED),
    Action.DELIVERED_WAITING: ({S.PROCESSING}, S.WAITING),
    Action.SCHEDULE_RETRY: ({S.PROCESSING}, S.RETRY),
    Action.DELIVERY_FAILED: ({S.PROCESSING}, S.FAILED),
    Action.FILTERED_OUT: ({S.PROCESSING}, S.SKIPPED),
    Action.LEASE_EXPIRED_NEW: ({S.PROCESSING}, S.NEW),
    Action.LEASE_EXPIRED_RETRY: ({S.PROCESSING}, S.RETRY),
    Action.LEASE_EXPIRED_FAILED: ({S.PROCESSING}, S.FAILED),
    Action.RELEASE: ({S.PROCESSING}, S.NEW),
    Action.RELEASE_RETRY: ({S.PROCESSING}, S.RETRY),
    Action.SUPERSEDE: ({S.NEW, S.RETRY}, S.SKIPPED),
    Action.RETRY: ({S.FINISHED, S.FAILED, S.SKIPPED}, S.NEW),
    Action.SKIP: ({S.NEW, S.RETRY, S.FAILED, S.WAITING}, S.SKIPPED),
    Action.FINISH: ({S.WAITING}, S.FINISHED),
    Action.FAIL: ({S.WAITING}, S.FAILED),
}

ALLOWED = [(a, s) for a, (sources, _t) in EXPECTED.items() for s in sorted(sources)]
REFUSED = [(a, s) for a, (sources, _t) in EXPECTED.items() for s in ALL_STATUSES if s not in sources]


def test_statuses_are_the_eight_lower_case_strings() -> None:
    assert [s.value for s in ALL_STATUSES] == [
        "new",
        "processing",
        "finished",
        "failed",
        "skipped",
        "rejected",
        "waiting",
        "retry",
    ]
    assert str(S.NEW) == "new"


def test_the_table_is_the_design_table() -> None:
    assert set(TRANSITIONS) == set(EXPECTED) == set(Action)
    for action, (sources, target) in EXPECTED.items():
        assert set(TRANSITIONS[action].sources) == sources, action
        assert TRANSITIONS[action].target is target, action


@pytest.mark.parametrize(("action", "current"), ALLOWED, ids=[f"{a}-{s}" for a, s in ALLOWED])
def test_every_allowed_transition(action: Action, current: Status) -> None:
    assert is_allowed(action, current)
    assert transition(action, current) is EXPECTED[action][1]


@pytest.mark.parametrize(("action", "current"), REFUSED, ids=[f"{a}-{s}" for a, s in REFUSED])
def test_every_refused_transition_names_what_is_allowed(action: Action, current: Status) -> None:
    assert not is_allowed(action, current)
    with pytest.raises(TransitionRefused) as info:
        transition(action, current)
    message = str(info.value)
    assert f"cannot {action.value}" in message
    assert f"status {current.value}" in message
    for source in EXPECTED[action][0]:
        assert source.value in message
    manual = [a for a in MANUAL_ACTIONS if current in EXPECTED[a][0]]
    if manual:
        for a in manual:
            assert f"{a.value} (→ {EXPECTED[a][1].value})" in message, message
    else:
        assert "none" in message


def test_rejected_and_processing_allow_no_manual_action() -> None:
    assert allowed_actions(S.REJECTED) == []
    assert allowed_actions(S.PROCESSING) == []
    assert allowed_actions(S.NEW) == [Action.SKIP]
    assert allowed_actions(S.WAITING) == [Action.SKIP, Action.FINISH, Action.FAIL]
    assert allowed_actions(S.FAILED) == [Action.RETRY, Action.SKIP]


# --- decide_import ---------------------------------------------------------------------------------------------

C, CU, T = ImportOutcome.CREATE, ImportOutcome.CREATE_UNCHANGED, ImportOutcome.TOUCH

#: (intended, latest status, same fingerprint, supersede) -> (outcome, supersede latest)
DECISIONS = [
    # never seen
    (S.NEW, None, False, True, C, False),
    (S.REJECTED, None, False, True, C, False),
    (S.SKIPPED, None, False, True, C, False),
    # unchanged after it was sent: a skipped task, once
    (S.NEW, S.FINISHED, True, True, CU, False),
    (S.PROCESSING, S.FINISHED, True, True, CU, False),
    # unchanged while not sent yet, or already skipped: no row
    (S.NEW, S.NEW, True, True, T, False),
    (S.NEW, S.PROCESSING, True, True, T, False),
    (S.NEW, S.RETRY, True, True, T, False),
    (S.NEW, S.WAITING, True, True, T, False),
    (S.NEW, S.SKIPPED, True, True, T, False),
    # unchanged after a failure or rejection: the latest task is touched (resend_failed: false, the default)
    (S.NEW, S.FAILED, True, True, T, False),
    (S.NEW, S.REJECTED, True, True, T, False),
    # changed: a new task; unsent older ones are superseded
    (S.NEW, S.NEW, False, True, C, True),
    (S.NEW, S.RETRY, False, True, C, True),
    (S.NEW, S.NEW, False, False, C, False),
    (S.NEW, S.PROCESSING, False, True, C, False),
    (S.NEW, S.FINISHED, False, True, C, False),
    (S.NEW, S.FAILED, False, True, C, False),
    (S.NEW, S.WAITING, False, True, C, False),
    (S.NEW, S.SKIPPED, False, True, C, False),
    # filtered or rejected again, identical: no row
    (S.SKIPPED, S.SKIPPED, True, True, T, False),
    (S.REJECTED, S.REJECTED, True, True, T, False),
    # filtered, changed, while a version is unsent: that version is superseded
    (S.SKIPPED, S.NEW, False, True, C, True),
    (S.SKIPPED, S.NEW, False, False, C, False),
    (S.SKIPPED, S.FINISHED, False, True, C, False),
    # rejected, changed: a new rejected row; the unsent older version stays
    (S.REJECTED, S.NEW, False, True, C, False),
    (S.REJECTED, S.FINISHED, True, True, C, False),
]


@pytest.mark.parametrize(
    ("intended", "latest", "same", "supersede", "outcome", "supersede_latest"),
    DECISIONS,
    ids=[f"{i}-{lt}-{'same' if s else 'diff'}-{'sup' if sp else 'nosup'}" for i, lt, s, sp, *_ in DECISIONS],
)
def test_decide_import(
    intended: Status,
    latest: Status | None,
    same: bool,
    supersede: bool,
    outcome: ImportOutcome,
    supersede_latest: bool,
) -> None:
    decision = decide_import(intended, latest, same, supersede=supersede)
    assert decision.outcome is outcome
    assert decision.supersede_latest is supersede_latest


@pytest.mark.parametrize("latest", [S.FAILED, S.REJECTED])
@pytest.mark.parametrize("intended", [S.NEW, S.PROCESSING])
def test_an_unchanged_failed_record_gets_a_new_task_only_when_resend_allows(intended: Status, latest: Status) -> None:
    assert decide_import(intended, latest, True, supersede=True).outcome is T
    assert decide_import(intended, latest, True, supersede=True, resend=True).outcome is C
    # changed data always gets a new task
    assert decide_import(intended, latest, False, supersede=True).outcome is C
