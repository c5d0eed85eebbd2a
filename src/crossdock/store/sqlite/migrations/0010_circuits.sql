-- Circuit breakers (outgoing.circuit, connections.NAME.circuit): one row per breaker key (a connection's name, or
-- a route's), shared by every process on this database. Written when a breaker counts transient failures, opens,
-- is probed or closes; never once per successful delivery.
CREATE TABLE circuits (
    key         TEXT PRIMARY KEY,
    state       TEXT NOT NULL DEFAULT 'closed',
    failures    INTEGER NOT NULL DEFAULT 0,
    opened_at   REAL,
    open_until  REAL,
    last_error  TEXT,
    probe_owner TEXT,
    probe_at    REAL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
