-- Alerts (top-level alerts: key): every message to every channel with its delivery state, so a message that could
-- not be sent is tried again after a restart and `crossdock alerts list` shows what went out; and what each rule
-- remembers between checks (how far it has looked, which problems it reported), so a new leader neither repeats
-- nor misses a message.
CREATE TABLE alerts (
    id              bigserial   PRIMARY KEY,
    created_at      timestamptz NOT NULL,
    rule            text        NOT NULL,
    event           text        NOT NULL,
    route           text,
    channel         text        NOT NULL,
    subject         text        NOT NULL,
    message         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    sent_at         timestamptz,
    error           text
);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE status = 'pending';

CREATE TABLE alert_state (
    key        text        PRIMARY KEY,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);

-- what the task_failed rule reads every few seconds: recently failed tasks, without a walk over every route
CREATE INDEX tasks_failed_updated ON tasks (updated_at) WHERE status = 'failed';
