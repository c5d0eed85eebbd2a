-- Circuit breakers (outgoing.circuit, connections.NAME.circuit): one row per breaker key (a connection's name, or
-- a route's), shared by every process on this database. Written when a breaker counts transient failures, opens,
-- is probed or closes; never once per successful delivery.
CREATE TABLE circuits (
    key         text        PRIMARY KEY,
    state       text        NOT NULL DEFAULT 'closed',
    failures    integer     NOT NULL DEFAULT 0,
    opened_at   timestamptz,
    open_until  timestamptz,
    last_error  text,
    probe_owner text,
    probe_at    timestamptz,
    updated_at  timestamptz NOT NULL
);
