-- What the runtime and the web need: route state (active toggle, next fire times), API tokens, an audit log,
-- and per-minute throughput counters for the monitor's chart.
CREATE TABLE route_state (
    route         TEXT PRIMARY KEY,
    active        INTEGER,
    incoming_next REAL,
    outgoing_next REAL,
    updated_at    REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used  REAL,
    revoked    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  BLOB,
    changed INTEGER,
    detail  TEXT
);
CREATE INDEX audit_at ON audit (at);

-- counts per minute, route and kind (imported, finished, failed, retry); written with the batch that caused them
CREATE TABLE throughput (
    minute INTEGER NOT NULL,
    route  TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (minute, route, kind)
) WITHOUT ROWID;

-- listing by status across routes newest first, the top-errors panel, pruning by status
CREATE INDEX tasks_status_id ON tasks (status, id) WHERE status NOT IN ('finished', 'skipped');
