-- #18: tasks and task_logs become range partitions of the task id, so retention drops or rewrites whole partitions
-- instead of deleting rows one by one (docs/deploy.md, "Large task tables"). Ids come from one sequence, so an id
-- range is an age range: the newest partition takes every insert, the old ones only see status changes of old
-- tasks (a retry, a touch) and retention. store/postgres/partitions.py creates each next partition ahead of the
-- sequence; the size of the new ones is task_partitioning.size (CROSSDOCK_PG_PARTITION_SIZE when this migration
-- ran, else 1,000,000 ids; `crossdock db partitions --size` changes it).

-- The delta pointer: the newest fingerprinted task of each (route, identifier). With partitions, finding it in
-- tasks_route_identifier probes every partition for every imported record (20 µs instead of 3.5 µs per unknown
-- identifier with 10 partitions); this table is probed once. Written in the same transaction as the tasks it names
-- (PostgresStore._insert_tasks), and retention never deletes a task it names. The task_id index lets retention
-- find a partition's named tasks by range.
CREATE TABLE delta_latest (
    route      text   COLLATE "C" NOT NULL,
    identifier text   COLLATE "C" NOT NULL,
    task_id    bigint NOT NULL,
    PRIMARY KEY (route, identifier)
);
INSERT INTO delta_latest (route, identifier, task_id)
SELECT DISTINCT ON (route, identifier) route, identifier, id FROM tasks
WHERE identifier IS NOT NULL AND fingerprint IS NOT NULL
ORDER BY route, identifier, id DESC;
CREATE INDEX delta_latest_task ON delta_latest (task_id);

-- one row: the size in ids of the partitions created from now on
CREATE TABLE task_partitioning (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint  NOT NULL CHECK (size > 0)
);

-- every partition pair (tasks_<lo>, task_logs_<lo>), its id range [lo, hi), and how many of its tasks were
-- deleted row by row since it was created or rewritten (their space is only reused by the partition's own
-- updates, so retention rewrites a partition once a third of it is gone or going)
CREATE TABLE task_partitions (
    lo      bigint PRIMARY KEY,
    hi      bigint NOT NULL,
    deleted bigint NOT NULL DEFAULT 0,
    CHECK (hi > lo)
);

DO $$
DECLARE
    size  bigint := COALESCE(NULLIF(current_setting('crossdock.partition_size', true), ''), '1000000')::bigint;
    high  bigint;
    bound bigint;
BEGIN
    SELECT GREATEST(COALESCE(MAX(id), 0), (SELECT last_value FROM tasks_id_seq)) INTO high FROM tasks;
    -- the tasks there are (and the ids already handed out) form the first partition
    bound := (high / size + 1) * size;
    INSERT INTO task_partitioning (size) VALUES (size);
    INSERT INTO task_partitions (lo, hi) VALUES (0, bound);

    ALTER TABLE tasks RENAME TO tasks_0;
    ALTER TABLE tasks_0 RENAME CONSTRAINT tasks_pkey TO tasks_0_pkey;
    ALTER INDEX tasks_due_new RENAME TO tasks_0_due_new;
    ALTER INDEX tasks_due_retry RENAME TO tasks_0_due_retry;
    ALTER INDEX tasks_leased RENAME TO tasks_0_leased;
    ALTER INDEX tasks_status_id RENAME TO tasks_0_status_id;
    ALTER INDEX tasks_unkeyed RENAME TO tasks_0_unkeyed;
    ALTER INDEX tasks_route_identifier RENAME TO tasks_0_route_identifier;
    ALTER INDEX tasks_failed_updated RENAME TO tasks_0_failed_updated;

    CREATE TABLE tasks (LIKE tasks_0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (id)) PARTITION BY RANGE (id);
    ALTER SEQUENCE tasks_id_seq OWNED BY tasks.id;
    -- the same indexes as before (0001, 0003, 0006, 0009): attaching the old table adopts its own
    CREATE INDEX tasks_due_new ON tasks (route, id) WHERE status = 'new';
    CREATE INDEX tasks_due_retry ON tasks (route, next_attempt_at, id) WHERE status = 'retry';
    CREATE INDEX tasks_leased ON tasks (lease_until) WHERE status = 'processing';
    CREATE INDEX tasks_status_id ON tasks (status, id) WHERE status NOT IN ('finished', 'skipped', 'processing');
    CREATE INDEX tasks_unkeyed ON tasks (route, fingerprint, id) WHERE identifier IS NULL;
    CREATE INDEX tasks_route_identifier ON tasks (route, identifier, id);
    CREATE INDEX tasks_failed_updated ON tasks (updated_at) WHERE status = 'failed';
    EXECUTE format('ALTER TABLE tasks ATTACH PARTITION tasks_0 FOR VALUES FROM (0) TO (%s)', bound);

    ALTER TABLE task_logs RENAME TO task_logs_0;
    ALTER INDEX task_logs_task RENAME TO task_logs_0_task;
    CREATE TABLE task_logs (LIKE task_logs_0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (task_id);
    ALTER SEQUENCE task_logs_id_seq OWNED BY task_logs.id;
    CREATE INDEX task_logs_task ON task_logs (task_id, id);
    EXECUTE format('ALTER TABLE task_logs ATTACH PARTITION task_logs_0 FOR VALUES FROM (0) TO (%s)', bound);
END
$$;
