-- What the runtime and the web need: route state (active toggle, next fire times), API tokens, an audit log,
-- and per-minute throughput counters for the monitor's chart (sharded like the task counters).
CREATE TABLE route_state (
    route         text        PRIMARY KEY,
    active        boolean,
    incoming_next timestamptz,
    outgoing_next timestamptz,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE tokens (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    token_hash text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    last_used  timestamptz,
    revoked    boolean     NOT NULL DEFAULT false
);

CREATE TABLE audit (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    target  jsonb,
    changed integer,
    detail  text
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE throughput (
    minute bigint   NOT NULL,
    route  text     NOT NULL,
    kind   text     NOT NULL,
    shard  smallint NOT NULL,
    n      bigint   NOT NULL,
    PRIMARY KEY (minute, route, kind, shard)
);
