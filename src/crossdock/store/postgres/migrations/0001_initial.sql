-- The first schema: tasks, their logs, delta fingerprints, sharded counters, runs, storages.
-- Keys compare bytewise (COLLATE "C"): index upkeep on imports is the hot path, and no key is sorted for people.
-- Timestamps are timestamptz (the session runs in UTC). Entities, results and fingerprints are bytea: the store
-- receives compact JSON bytes and hands them back to orjson, so PostgreSQL never parses them (jsonb would cost
-- a parse on every COPY row and a json.loads on every read, on the hottest paths).

-- ids are reserved in one call (nextval over generate_series) so fingerprints can name them in the same transaction
CREATE SEQUENCE tasks_id_seq;

CREATE TABLE tasks (
    id              bigint      PRIMARY KEY DEFAULT nextval('tasks_id_seq'),
    route           text        COLLATE "C" NOT NULL,
    identifier      text        COLLATE "C",
    status          text        COLLATE "C" NOT NULL CHECK (status IN ('new', 'processing', 'finished', 'failed', 'skipped',
                                                           'rejected', 'waiting', 'retry')),
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- when a new or retry task becomes due; the claim order
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    worker          text,
    error           text,
    fingerprint     bytea,
    seen_count      integer     NOT NULL DEFAULT 1,
    last_seen_at    timestamptz,
    run_id          bigint,
    related_task_id bigint,
    priority        integer     NOT NULL DEFAULT 0,
    entity          bytea,
    raw             text,
    result          bytea
);
ALTER SEQUENCE tasks_id_seq OWNED BY tasks.id;

-- due work only: claims read them with FOR UPDATE SKIP LOCKED; finished history never bloats them.
-- New work goes out in arrival order, retries by their next attempt time.
CREATE INDEX tasks_due_new ON tasks (route, id) WHERE status = 'new';
CREATE INDEX tasks_due_retry ON tasks (route, next_attempt_at, id) WHERE status = 'retry';
-- lease recovery scans only what is in flight
CREATE INDEX tasks_leased ON tasks (lease_until) WHERE status = 'processing';
-- history of one record
CREATE INDEX tasks_route_identifier ON tasks (route, identifier);
-- listing and counting by status newest first, the top-errors panel. Finished and skipped tasks (most of the
-- table) stay out, and so do processing ones (tasks_leased has them): a claim and a settlement each write one
-- index entry less. Listing finished tasks walks the primary key backwards.
CREATE INDEX tasks_status_id ON tasks (status, id) WHERE status NOT IN ('finished', 'skipped', 'processing');

-- Append-only and only ever read per task, in id order: (task_id, id) is its one index. A primary key on id
-- alone would cost an index entry per line on the busiest insert path and serve no query.
CREATE TABLE task_logs (
    id          bigserial   NOT NULL,
    task_id     bigint      NOT NULL,
    at          timestamptz NOT NULL,
    level       text        NOT NULL,
    phase       text        NOT NULL,
    actor       text,
    from_status text,
    to_status   text,
    message     text        NOT NULL,
    details     jsonb
);
CREATE INDEX task_logs_task ON task_logs (task_id, id);

-- the latest fingerprint and task per (route, identifier); written in the same transaction as the task
CREATE TABLE fingerprints (
    route       text   COLLATE "C" NOT NULL,
    identifier  text   COLLATE "C" NOT NULL,
    fingerprint bytea  NOT NULL,
    task_id     bigint NOT NULL,
    PRIMARY KEY (route, identifier)
);

-- exact counts per route and status, changed in the same transaction as every status change. Each connection
-- writes its own shard (backend pid mod 16), so concurrent workers never queue on one hot row; reads sum them.
CREATE TABLE counters (
    route  text     COLLATE "C" NOT NULL,
    status text     COLLATE "C" NOT NULL,
    shard  smallint NOT NULL,
    n      bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (route, status, shard)
);

CREATE TABLE runs (
    id          bigserial   PRIMARY KEY,
    route       text        NOT NULL,
    part        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text        NOT NULL,
    summary     jsonb,
    error       text,
    actor       text
);
CREATE INDEX runs_route ON runs (route, part, id);

CREATE TABLE storage (
    name       text        NOT NULL,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (name, key)
);
