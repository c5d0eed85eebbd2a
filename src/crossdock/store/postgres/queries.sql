-- Named queries of the PostgreSQL store. Placeholders are psycopg's %s; ``{where}`` blocks are filled with
-- store/filters.py output. Arrays travel as one parameter (unnest / ANY), so a batch is one statement.

-- name: lock_migrations
SELECT pg_advisory_xact_lock(%s, 0)

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%s, %s)

-- name: latest_for_identifiers
-- the newest fingerprinted task of each identifier: one probe of delta_latest (migration 0010) and one of the
-- task's own partition, however many partitions there are. The LATERAL ... LIMIT 1 keeps the probes: with
-- identifier = ANY(...) the generic plan of the prepared statement scanned all of delta_latest (17 ms per 1,000
-- records at 120,000 identifiers)
SELECT k.identifier, t.fingerprint, t.id, t.status
FROM unnest(%s::text[]) AS k(identifier)
CROSS JOIN LATERAL (
    SELECT l.task_id FROM delta_latest l WHERE l.route = %s AND l.identifier = k.identifier LIMIT 1
) AS l
JOIN tasks t ON t.id = l.task_id

-- name: point_latest
-- new fingerprinted tasks become their identifier's latest (written with the tasks, _insert_tasks)
INSERT INTO delta_latest (route, identifier, task_id)
SELECT %s, v.identifier, v.task_id FROM unnest(%s::text[], %s::bigint[]) AS v(identifier, task_id)
ON CONFLICT (route, identifier) DO UPDATE SET task_id = excluded.task_id
WHERE delta_latest.task_id < excluded.task_id

-- name: latest_unkeyed
-- the newest task without an identifier of each content fingerprint (migration 0003's partial index)
SELECT DISTINCT ON (fingerprint) fingerprint, id, status FROM tasks
WHERE route = %s AND identifier IS NULL AND fingerprint = ANY(%s::bytea[])
ORDER BY fingerprint, id DESC

-- name: reserve_ids
SELECT nextval('tasks_id_seq') FROM generate_series(1, %s)

-- name: created_at
SELECT id, created_at FROM tasks WHERE id = ANY(%s::bigint[])

-- name: copy_tasks
COPY tasks (id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until, worker,
            error, fingerprint, seen_count, last_seen_at, run_id, related_task_id, priority, entity, raw)
FROM STDIN (FORMAT BINARY)

-- name: touch_tasks
UPDATE tasks t SET seen_count = t.seen_count + v.n, last_seen_at = %s
FROM unnest(%s::bigint[], %s::integer[]) AS v(id, n)
WHERE t.id = v.id

-- name: supersede_tasks
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(newer)s::bigint[], %(reasons)s::text[]) AS v(id, newer, reason)
), old AS (
    SELECT t.id, t.status FROM tasks t JOIN v ON v.id = t.id
    WHERE t.status || '' = ANY(%(sources)s::text[])
    ORDER BY t.id
    FOR UPDATE OF t
)
UPDATE tasks t SET status = 'skipped', updated_at = %(now)s, error = v.reason, related_task_id = v.newer,
                   next_attempt_at = NULL
FROM v JOIN old ON old.id = v.id
WHERE t.id = v.id
RETURNING t.id, old.status

-- name: add_counters
INSERT INTO counters (route, status, shard, n)
SELECT v.route, v.status, mod(pg_backend_pid(), 16), v.n
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(route, status, n)
ON CONFLICT (route, status, shard) DO UPDATE SET n = counters.n + excluded.n

-- name: ensure_counters
INSERT INTO counters (route, status, shard, n)
SELECT r, s, 0, 0 FROM unnest(%s::text[]) AS r CROSS JOIN unnest(%s::text[]) AS s
ON CONFLICT (route, status, shard) DO NOTHING

-- name: copy_logs
COPY task_logs (task_id, at, level, phase, actor, from_status, to_status, message, details) FROM STDIN (FORMAT BINARY)

-- name: add_throughput
INSERT INTO throughput (minute, route, kind, shard, n)
SELECT %s, v.route, v.kind, mod(pg_backend_pid(), 16), v.n
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(route, kind, n)
ON CONFLICT (minute, route, kind, shard) DO UPDATE SET n = throughput.n + excluded.n

-- Sent after the import's commit, as a transaction of its own without waiting for its WAL flush (#18). A
-- transaction that notifies holds one lock per database from its pre-commit to its end, its WAL flush included,
-- so notifying in the import transaction made concurrent imports commit one at a time (Lock:object was the top
-- wait with 8 concurrent importers). A wake-up lost in a crash costs nothing: workers poll as well.
-- name: notify_new
SELECT set_config('synchronous_commit', 'off', true), pg_notify('crossdock_new', r) FROM unnest(%s::text[]) AS r

-- name: listen_new
LISTEN crossdock_new

-- Right after a big import the statistics still describe a small table, and the planner would collect every
-- due row in a bitmap and sort it, on every claim. Within the claim's transaction only, ask for the ordered
-- index walk that stops at LIMIT.
-- name: claim_plan
SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true)

-- Claims of one route take turns (#18): the route's transaction advisory lock, held until the claim commits.
-- Without it every concurrent claim walked the same head of tasks_due_new: past the rows other claims held
-- (SKIP LOCKED, one tuple-lock try each) and into rows claimed after its snapshot, which FOR UPDATE locks in
-- their newest (processing) version before the recheck drops them, so their owner's settle waited for that
-- claim's whole transaction. Taking turns, each claim's snapshot sees the previous claim committed: it reads
-- from the first unclaimed row and locks only what it takes, so no settle waits for it. SKIP LOCKED stays (a
-- manual action or lease recovery may hold due rows). The wait for a turn is bounded by lock_timeout
-- (CLAIM_TURN_WAIT in store.py: a claimer frozen in its transaction must not stop the route); past it the store
-- claims without a turn, as before. The target list runs in order, so the session's own lock_timeout is back
-- before the claim.
-- name: claim_turn
WITH prev AS MATERIALIZED (SELECT current_setting('lock_timeout') AS lock_timeout)
SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('lock_timeout', %(wait)s, true), pg_advisory_xact_lock(%(ns)s, %(key)s),
       set_config('lock_timeout', prev.lock_timeout, true)
FROM prev

-- Claims name their status literally so the planner always proves their partial index (tasks_due_*) applies.
-- Statements that update tasks by id check their status as `status || ''` (here and in settle, recover, release,
-- extend, supersede and the bulk actions): a form no index can serve, so the rows are always found through the
-- primary key. Written plainly, the planner may instead walk a status index (tasks_status_id, tasks_leased) for
-- every id when its statistics are older than the last burst: right after 500,000 tasks were imported into a
-- partition analyzed before, one claim of 1,000 scanned the 500,000 new tasks once per claimed id and ran for
-- minutes (bench/partition_bench.py).

-- name: claim_retry
WITH due AS (
    SELECT id FROM tasks
    WHERE route = %(route)s AND status = 'retry' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET status = 'processing', worker = %(worker)s, lease_until = %(lease)s,
                   attempts = t.attempts + 1, updated_at = %(now)s
FROM due WHERE t.id = due.id AND t.status || '' = 'retry'
RETURNING t.id, t.route, t.identifier, t.status, t.attempts, t.created_at, t.updated_at, t.next_attempt_at,
          t.lease_until, t.worker, t.error, t.fingerprint, t.seen_count, t.last_seen_at, t.run_id,
          t.related_task_id, t.priority, t.entity, t.raw, t.result

-- name: claim_new
WITH due AS (
    SELECT id FROM tasks
    WHERE route = %(route)s AND status = 'new' AND next_attempt_at <= %(now)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET status = 'processing', worker = %(worker)s, lease_until = %(lease)s,
                   attempts = t.attempts + 1, updated_at = %(now)s
FROM due WHERE t.id = due.id AND t.status || '' = 'new'
RETURNING t.id, t.route, t.identifier, t.status, t.attempts, t.created_at, t.updated_at, t.next_attempt_at,
          t.lease_until, t.worker, t.error, t.fingerprint, t.seen_count, t.last_seen_at, t.run_id,
          t.related_task_id, t.priority, t.entity, t.raw, t.result

-- name: settle_tasks
UPDATE tasks t SET status = v.status, updated_at = %s, error = v.error, next_attempt_at = v.next_at,
                   lease_until = NULL, result = v.result
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::bytea[], %s::text[])
     AS v(id, status, error, next_at, result, worker)
WHERE t.id = v.id AND t.status || '' = 'processing' AND t.worker = v.worker
RETURNING t.id, t.route

-- name: tasks_of_identifiers
SELECT id, identifier, status FROM tasks
WHERE route = %s AND identifier = ANY(%s::text[]) AND status = ANY(%s::text[])
ORDER BY id
FOR UPDATE

-- name: extend_leases
UPDATE tasks SET lease_until = %s WHERE id = ANY(%s::bigint[]) AND status || '' = 'processing' AND worker = %s

-- name: expired_leases
SELECT id, route, attempts, worker FROM tasks
WHERE status = 'processing' AND lease_until < %(now)s AND (%(route)s::text IS NULL OR route = %(route)s)
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: recover_tasks
UPDATE tasks t SET status = v.status, updated_at = %s, lease_until = NULL, next_attempt_at = v.next_at,
                   error = v.error
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[]) AS v(id, status, next_at, error)
WHERE t.id = v.id AND t.status || '' = 'processing' AND t.lease_until < %s
RETURNING t.id

-- name: release_tasks
UPDATE tasks t SET status = v.status, updated_at = %(now)s, next_attempt_at = %(now)s, lease_until = NULL,
                   attempts = GREATEST(t.attempts - 1, 0)
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[]) AS v(id, status)
WHERE t.id = v.id AND t.status || '' = 'processing' AND t.worker = %(worker)s
RETURNING t.id, t.route

-- name: action_matched
SELECT status, COUNT(*) FROM tasks WHERE {where} GROUP BY status

-- The batch locks its rows first, so the old status it returns is the one the update replaced.
-- name: action_batch
WITH batch AS (
    SELECT id, route, identifier, status FROM tasks
    WHERE {where} AND status = ANY(%s::text[]) AND id > %s
    ORDER BY id
    LIMIT %s
    FOR UPDATE
)
UPDATE tasks t SET status = %s, updated_at = %s, error = %s, next_attempt_at = %s, lease_until = NULL{reset}
FROM batch WHERE t.id = batch.id AND t.status || '' = ANY(%s::text[])
RETURNING t.id, batch.route, batch.identifier, batch.status

-- name: get_task
SELECT id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until,
       worker, error, fingerprint, seen_count, last_seen_at, run_id, related_task_id, priority, entity, raw,
       result
FROM tasks WHERE id = %s

-- name: get_tasks
SELECT id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until,
       worker, error, fingerprint, seen_count, last_seen_at, run_id, related_task_id, priority, entity, raw,
       result
FROM tasks WHERE id = ANY(%s::bigint[]) ORDER BY id

-- name: list_plan
SELECT set_config('enable_sort', 'off', true)

-- name: list_tasks
SELECT id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until,
       worker, error, fingerprint, seen_count, last_seen_at, run_id, related_task_id, priority, entity, raw,
       result
FROM tasks WHERE {where} ORDER BY id DESC LIMIT %s

-- name: count_tasks
SELECT COUNT(*) FROM tasks WHERE {where}

-- name: task_logs
SELECT at, level, phase, actor, from_status, to_status, message, details
FROM task_logs WHERE task_id = %s ORDER BY id

-- name: counters_all
SELECT route, status, SUM(n)::bigint FROM counters GROUP BY route, status

-- name: counters_route
SELECT route, status, SUM(n)::bigint FROM counters WHERE route = %s GROUP BY route, status

-- name: recount
SELECT route, status, COUNT(*) FROM tasks GROUP BY route, status

-- name: start_run
INSERT INTO runs (route, part, started_at, status, actor, owner, heartbeat_at)
VALUES (%(route)s, %(part)s, %(now)s, 'running', %(actor)s, %(owner)s, %(now)s) RETURNING id

-- name: touch_run
UPDATE runs SET heartbeat_at = %s WHERE id = %s AND status = 'running'

-- name: running_runs
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE status = 'running' ORDER BY id

-- name: abandon_run
UPDATE runs SET status = 'abandoned', finished_at = %s, error = %s WHERE id = %s AND status = 'running'

-- name: finish_run
UPDATE runs SET finished_at = %s, status = %s, summary = %s::jsonb, error = %s WHERE id = %s

-- name: list_runs
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
ORDER BY id DESC LIMIT %s

-- name: list_runs_route
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE route = %s ORDER BY id DESC LIMIT %s

-- name: last_successful_run
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE route = %s AND part = %s AND status = 'ok' ORDER BY id DESC LIMIT 1

-- name: latest_entities
-- the newest task in the given statuses of each identifier: one step in tasks_route_identifier per identifier;
-- a dry run diffs against its entity
SELECT k.identifier, l.id, l.status, l.entity
FROM unnest(%s::text[]) AS k(identifier)
CROSS JOIN LATERAL (
    SELECT t.id, t.status, t.entity FROM tasks t
    WHERE t.route = %s AND t.identifier = k.identifier AND t.status = ANY(%s::text[])
    ORDER BY t.id DESC
    LIMIT 1
) l

-- name: cache_show
SELECT t.route, t.identifier, t.fingerprint, t.id, t.status, COALESCE(t.last_seen_at, t.created_at)
FROM delta_latest l JOIN tasks t ON t.id = l.task_id
WHERE l.route = %s AND l.identifier = %s

-- name: cache_count_route
SELECT COUNT(*) FROM delta_latest WHERE route = %s

-- Clearing takes the fingerprints off the tasks too, so a copy to SQLite (which has no delta_latest) agrees.
-- name: cache_clear_route
WITH gone AS (DELETE FROM delta_latest WHERE route = %(route)s RETURNING route)
UPDATE tasks SET fingerprint = NULL WHERE route = %(route)s AND fingerprint IS NOT NULL

-- name: cache_clear_identifier
WITH gone AS (DELETE FROM delta_latest WHERE route = %(route)s AND identifier = %(identifier)s RETURNING 1)
UPDATE tasks SET fingerprint = NULL WHERE route = %(route)s AND identifier = %(identifier)s AND fingerprint IS NOT NULL

-- name: storage_get
SELECT value FROM storage WHERE name = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)

-- name: storage_put
INSERT INTO storage (name, key, value, expires_at) VALUES (%s, %s, %s::jsonb, %s)
ON CONFLICT (name, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at

-- name: prune_batch
SELECT t.id FROM tasks t
JOIN unnest(%(statuses)s::text[], %(befores)s::timestamptz[]) AS c(status, before) ON c.status = t.status
WHERE t.updated_at < c.before
  AND (%(route)s::text IS NULL OR t.route = %(route)s)
  -- never the latest fingerprinted task of an identifier: delta compares with it
  AND NOT EXISTS (SELECT 1 FROM delta_latest l WHERE l.route = t.route AND l.identifier = t.identifier
                                                AND l.task_id = t.id)
  AND t.id > %(after)s AND t.id < %(until)s
ORDER BY t.id
LIMIT %(limit)s
FOR UPDATE OF t SKIP LOCKED

-- name: prune_logs
DELETE FROM task_logs WHERE task_id = ANY(%s::bigint[])

-- the holes row deletes leave per partition: retention rewrites a partition once they and what goes make a third
-- name: count_deleted
UPDATE task_partitions p SET deleted = p.deleted + d.n
FROM (SELECT p2.lo, COUNT(*) AS n FROM unnest(%s::bigint[]) AS i(id)
      JOIN task_partitions p2 ON i.id >= p2.lo AND i.id < p2.hi GROUP BY p2.lo) d
WHERE p.lo = d.lo

-- name: prune_tasks
DELETE FROM tasks WHERE id = ANY(%s::bigint[]) RETURNING route, status

-- name: throughput_since
SELECT minute, kind, SUM(n)::bigint FROM throughput WHERE minute >= %s GROUP BY minute, kind ORDER BY minute

-- name: throughput_since_route
SELECT minute, kind, SUM(n)::bigint FROM throughput WHERE minute >= %s AND route = %s
GROUP BY minute, kind ORDER BY minute

-- name: top_errors
SELECT route, status, error, COUNT(*) AS n, MAX(id) FROM tasks
WHERE status IN ('failed', 'retry') AND updated_at >= %s AND error IS NOT NULL
GROUP BY route, status, error ORDER BY n DESC LIMIT %s

-- name: oldest_due
SELECT route, status, MIN(CASE WHEN status = 'waiting' THEN updated_at ELSE next_attempt_at END) FROM tasks
WHERE status IN ('new', 'waiting', 'retry') GROUP BY route, status

-- name: route_states
SELECT route, active, incoming_next, outgoing_next, paused_reason, paused_at FROM route_state

-- name: set_route_active
-- %(reason)s is why crossdock paused the route (NULL for a person's switch, which clears an earlier pause)
INSERT INTO route_state (route, active, paused_reason, paused_at, updated_at)
VALUES (%(route)s, %(active)s, %(reason)s, CASE WHEN %(reason)s::text IS NOT NULL THEN %(now)s END, %(now)s)
ON CONFLICT (route) DO UPDATE SET active = excluded.active, paused_reason = excluded.paused_reason,
                                  paused_at = excluded.paused_at, updated_at = excluded.updated_at

-- name: set_incoming_next
INSERT INTO route_state (route, incoming_next, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (route) DO UPDATE SET incoming_next = excluded.incoming_next, updated_at = excluded.updated_at

-- name: set_outgoing_next
INSERT INTO route_state (route, outgoing_next, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (route) DO UPDATE SET outgoing_next = excluded.outgoing_next, updated_at = excluded.updated_at

-- name: create_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES (%s, %s, %s, %s) RETURNING id

-- name: find_token
SELECT id, name, role, created_at, last_used, revoked FROM tokens WHERE token_hash = %s AND NOT revoked

-- name: touch_token
UPDATE tokens SET last_used = %s WHERE id = %s

-- name: list_tokens
SELECT id, name, role, created_at, last_used, revoked FROM tokens ORDER BY id

-- name: revoke_token
UPDATE tokens SET revoked = true WHERE id = %s

-- name: record_audit
INSERT INTO audit (at, actor, action, target, changed, detail) VALUES (%s, %s, %s, %s::jsonb, %s, %s)

-- name: list_audit
SELECT id, at, actor, action, target, changed, detail FROM audit WHERE id < %s ORDER BY id DESC LIMIT %s

-- name: try_lock
SELECT pg_try_advisory_lock(%s, %s)

-- name: unlock
SELECT pg_advisory_unlock(%s, %s)

-- name: ping
SELECT 1

-- name: prune_idempotency_keys
DELETE FROM idempotency_keys WHERE expires_at <= %s

-- name: claim_idempotency_key
INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (scope, key) DO NOTHING

-- name: get_idempotency_key
SELECT fingerprint, created_at, expires_at, response FROM idempotency_keys WHERE scope = %s AND key = %s

-- name: settle_idempotency_key
UPDATE idempotency_keys SET response = %s::jsonb, expires_at = COALESCE(%s::timestamptz, expires_at)
WHERE scope = %s AND key = %s AND response IS NULL

-- name: forget_idempotency_key
DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND response IS NULL

-- name: failure_groups
-- what an alert counts: failed tasks last updated in (since, until]
SELECT route, error, COUNT(*)::bigint, MIN(updated_at), MAX(id) FROM tasks
WHERE status = 'failed' AND updated_at > %(since)s AND updated_at <= %(until)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
GROUP BY route, error ORDER BY COUNT(*) DESC LIMIT 1000

-- name: add_alert
INSERT INTO alerts (created_at, rule, event, route, channel, subject, message, next_attempt_at)
VALUES (%(now)s, %(rule)s, %(event)s, %(route)s, %(channel)s, %(subject)s, %(message)s, %(now)s) RETURNING id

-- name: due_alerts
SELECT id, created_at, rule, event, route, channel, subject, message, status, attempts, next_attempt_at, sent_at, error
FROM alerts WHERE status = 'pending' AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s

-- name: alert_attempted
UPDATE alerts SET attempts = attempts + 1, status = %(status)s, error = %(error)s, next_attempt_at = %(next)s,
  sent_at = %(sent)s WHERE id = %(id)s

-- name: list_alerts
SELECT id, created_at, rule, event, route, channel, subject, message, status, attempts, next_attempt_at, sent_at, error
FROM alerts WHERE id < %(cursor)s AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(route)s::text IS NULL OR route = %(route)s) ORDER BY id DESC LIMIT %(limit)s

-- name: prune_alerts
DELETE FROM alerts WHERE created_at < %s AND status != 'pending'

-- name: alert_state
SELECT state FROM alert_state WHERE key = %s

-- name: set_alert_state
INSERT INTO alert_state (key, state, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at

-- name: circuits
SELECT key, state, failures, opened_at, open_until, last_error, probe_owner, probe_at, updated_at
FROM circuits ORDER BY key

-- name: circuit_create
INSERT INTO circuits (key, updated_at) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING

-- The row stays locked until the write's transaction ends, so concurrent processes change a breaker in turn.
-- name: circuit_lock
SELECT key, state, failures, opened_at, open_until, last_error, probe_owner, probe_at, updated_at
FROM circuits WHERE key = %s FOR UPDATE

-- name: circuit_put
UPDATE circuits SET state = %s, failures = %s, opened_at = %s, open_until = %s, last_error = %s, probe_owner = %s,
                    probe_at = %s, updated_at = %s
WHERE key = %s

-- name: where_candidates
-- the next batch of tasks a --where expression's SQL conditions let through, for the Python check (the selection
-- with those conditions, then the last id seen and the batch size)
SELECT id, entity FROM tasks WHERE {where} AND id > %s ORDER BY id LIMIT %s
