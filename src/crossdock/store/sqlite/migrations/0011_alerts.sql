-- Alerts (top-level alerts: key): every message to every channel with its delivery state, so a message that could
-- not be sent is tried again after a restart and `crossdock alerts list` shows what went out; and what each rule
-- remembers between checks (how far it has looked, which problems it reported), so a new leader neither repeats
-- nor misses a message.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    created_at      REAL    NOT NULL,
    rule            TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    route           TEXT,
    channel         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    message         BLOB    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    sent_at         REAL,
    error           TEXT
);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE status = 'pending';

CREATE TABLE alert_state (
    key        TEXT PRIMARY KEY,
    state      BLOB NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- what the task_failed rule reads every few seconds: recently failed tasks, without a walk over every route
CREATE INDEX tasks_failed_updated ON tasks (updated_at) WHERE status = 'failed';
