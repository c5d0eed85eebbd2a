-- The first schema: tasks, their logs, delta fingerprints, per-(route, status) counters, runs, storages.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    route           TEXT    NOT NULL,
    identifier      TEXT,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    -- when a new or retry task becomes due; the claim order
    next_attempt_at REAL,
    lease_until     REAL,
    worker          TEXT,
    error           TEXT,
    fingerprint     BLOB,
    seen_count      INTEGER NOT NULL DEFAULT 1,
    last_seen_at    REAL,
    run_id          INTEGER,
    related_task_id INTEGER,
    priority        INTEGER NOT NULL DEFAULT 0,
    entity          BLOB,
    raw             TEXT,
    result          BLOB
);
-- claiming new work per route in arrival order, listing and paging by route and status (newest first).
-- Partial: finished and skipped tasks (the bulk of any table) stay out of it, so settling a delivery and importing
-- an unchanged record cost no index work. Queries add the same condition (ACTIVE in store.py) to use it.
CREATE INDEX tasks_route_status ON tasks (route, status, id) WHERE status NOT IN ('finished', 'skipped');
-- the retry scheduler: due retries by time. Partial, so it stays as small as the retry backlog and costs
-- nothing when new tasks are imported
CREATE INDEX tasks_retry_due ON tasks (status, next_attempt_at, route) WHERE status = 'retry';
-- history of one record
CREATE INDEX tasks_route_identifier ON tasks (route, identifier);

CREATE TABLE task_logs (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL,
    at          REAL    NOT NULL,
    level       TEXT    NOT NULL,
    phase       TEXT    NOT NULL,
    actor       TEXT,
    from_status TEXT,
    to_status   TEXT,
    message     TEXT    NOT NULL,
    details     BLOB
);
CREATE INDEX task_logs_task ON task_logs (task_id);

-- the latest fingerprint and task per (route, identifier); written in the same transaction as the task
CREATE TABLE fingerprints (
    route       TEXT    NOT NULL,
    identifier  TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    task_id     INTEGER NOT NULL,
    PRIMARY KEY (route, identifier)
) WITHOUT ROWID;

-- exact counts per route and status, changed in the same transaction as every status change
CREATE TABLE counters (
    route  TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (route, status)
) WITHOUT ROWID;

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    route       TEXT NOT NULL,
    part        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    status      TEXT NOT NULL,
    summary     BLOB,
    error       TEXT,
    actor       TEXT
);
CREATE INDEX runs_route ON runs (route, part, id);

CREATE TABLE storage (
    name       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('next_task_id', '1');
