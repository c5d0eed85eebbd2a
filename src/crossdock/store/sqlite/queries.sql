-- Named queries of the SQLite store. Timestamps are Unix seconds (REAL); entities are compact JSON (BLOB).

-- name: reserve_ids
UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'next_task_id' RETURNING CAST(value AS INTEGER)

-- name: latest_for_identifiers
-- The newest task of each identifier: one backwards step in tasks_route_identifier. It is the latest for delta
-- unless it carries no fingerprint (delta: false, cache cleared); store.py asks latest_with_fingerprint for those.
-- One JSON row for the whole batch, so fetching it is one step of C work rather than one GIL round trip per row.
SELECT json_group_array(json_array(j.value, hex(t.fingerprint), t.id, t.status))
FROM json_each(?2) j
JOIN tasks t ON t.id = (SELECT max(l.id) FROM tasks l WHERE l.route = ?1 AND l.identifier = j.value)

-- name: latest_with_fingerprint
-- the latest task of each identifier for delta: its highest id that carries a fingerprint
SELECT json_group_array(json_array(j.value, hex(t.fingerprint), t.id, t.status))
FROM json_each(?2) j
JOIN tasks t ON t.id = (
    SELECT l.id FROM tasks l
    WHERE l.route = ?1 AND l.identifier = j.value AND l.fingerprint IS NOT NULL
    ORDER BY l.id DESC LIMIT 1
)

-- name: latest_unkeyed
-- the newest task without an identifier of each content fingerprint (migration 0006's partial index): ?2 holds the
-- 16-byte fingerprints end to end, ?3 is the JSON array of their positions; one statement for a whole batch
SELECT json_group_array(json_array(j.value, t.id, t.status))
FROM json_each(?3) j
JOIN tasks t ON t.id = (
    SELECT max(l.id) FROM tasks l
    WHERE l.route = ?1 AND l.identifier IS NULL AND l.fingerprint = substr(?2, j.value * 16 + 1, 16)
)

-- name: touch_unchanged
-- A catalogue poll decided inside SQLite: each identifier whose latest task has the same fingerprint and is one
-- tasks.TOUCH_ON_SAME (store.py writes that set into {touch_on_same} as literals, which SQLite compares fastest)
-- keeps it (no new row), and that task's seen count and last-seen time go up (in task_seen, a narrow row, rather
-- than rewriting the task's). ?2 is the JSON array of the batch's identifiers
-- (distinct), ?4 their 16-byte fingerprints end to end in the same order. Deciding here spares the writer thread the Python work per
-- record that would otherwise hold the GIL the importer parses with.
INSERT INTO task_seen (task_id, seen, last_seen_at)
SELECT t.id, 1, ?3 FROM json_each(?2) j
JOIN tasks t ON t.id = (SELECT max(l.id) FROM tasks l WHERE l.route = ?1 AND l.identifier = j.value)
WHERE t.fingerprint = substr(?4, j.key * 16 + 1, 16)
  AND t.status IN ({touch_on_same})
ON CONFLICT (task_id) DO UPDATE SET seen = seen + 1, last_seen_at = excluded.last_seen_at

-- name: latest_untouched
-- after touch_unchanged, in the same transaction: every identifier it did not touch, with its newest task as in
-- latest_for_identifiers (NULLs when it has none), for the full import plan
SELECT json_group_array(json_array(j.value, hex(t.fingerprint), t.id, t.status))
FROM json_each(?2) j
LEFT JOIN tasks t ON t.id = (SELECT max(l.id) FROM tasks l WHERE l.route = ?1 AND l.identifier = j.value)
WHERE t.id IS NULL
   OR NOT (t.fingerprint IS substr(?3, j.key * 16 + 1, 16)
           AND t.status IN ({touch_on_same}))

-- name: created_at
SELECT id, created_at FROM tasks WHERE id IN (SELECT value FROM json_each(?))

-- name: insert_task
-- the column list; store.py builds multi-row statements on it (_insert_sql), binding what the rows of one batch
-- share once per statement (the single-row VALUES here documents the order)
INSERT INTO tasks (id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until,
                   worker, error, fingerprint, seen_count, last_seen_at, run_id, related_task_id, priority, entity, raw)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: touch_tasks
-- ?3 is a JSON list of distinct task ids, each seen ?1 more times (see touch_unchanged)
INSERT INTO task_seen (task_id, seen, last_seen_at)
SELECT value, ?1, ?2 FROM json_each(?3) WHERE true
ON CONFLICT (task_id) DO UPDATE SET seen = seen + excluded.seen, last_seen_at = excluded.last_seen_at

-- name: supersede_task
UPDATE tasks SET status = 'skipped', updated_at = ?, error = ?, related_task_id = ?, next_attempt_at = NULL
WHERE id = ? AND status IN (SELECT value FROM json_each(?))
RETURNING status

-- name: add_counter
INSERT INTO counters (route, status, n) VALUES (?, ?, ?)
ON CONFLICT (route, status) DO UPDATE SET n = n + excluded.n

-- name: ensure_counter
INSERT INTO counters (route, status, n) VALUES (?, ?, 0) ON CONFLICT (route, status) DO NOTHING

-- name: insert_log
INSERT INTO task_logs (task_id, at, level, phase, actor, from_status, to_status, message, details)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: claim_new
-- claims and reads in one statement: the due ids, the guarded update and the columns a delivery needs.
-- route, status, updated_at, lease_until and worker are the claim's own values, so they are not read back.
-- The subquery is the guard (same statement, same write transaction); a status term out here would let the
-- planner walk a status index instead of the claimed ids
UPDATE tasks SET status = 'processing', worker = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?
WHERE id IN (
    SELECT id FROM tasks
    WHERE route = ? AND status = 'new' AND next_attempt_at <= ?
    ORDER BY id
    LIMIT ?
)
RETURNING id, identifier, attempts, created_at, error, fingerprint,
          seen_count + COALESCE((SELECT s.seen FROM task_seen s WHERE s.task_id = tasks.id), 0),
          COALESCE((SELECT s.last_seen_at FROM task_seen s WHERE s.task_id = tasks.id), last_seen_at),
          run_id, related_task_id, priority, entity, raw, result

-- name: claim_retry
UPDATE tasks SET status = 'processing', worker = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?
WHERE id IN (
    SELECT id FROM tasks
    WHERE status = 'retry' AND next_attempt_at <= ? AND route = ?
    ORDER BY next_attempt_at
    LIMIT ?
)
RETURNING id, identifier, attempts, created_at, error, fingerprint,
          seen_count + COALESCE((SELECT s.seen FROM task_seen s WHERE s.task_id = tasks.id), 0),
          COALESCE((SELECT s.last_seen_at FROM task_seen s WHERE s.task_id = tasks.id), last_seen_at),
          run_id, related_task_id, priority, entity, raw, result

-- name: settle_many
UPDATE tasks SET status = ?, updated_at = ?, error = NULL, next_attempt_at = NULL, lease_until = NULL
WHERE id IN (SELECT value FROM json_each(?)) AND status = 'processing' AND worker = ?
RETURNING id, route

-- name: insert_logs_alike
-- one log line for each task id of a JSON list, all alike: one statement instead of a row per line
INSERT INTO task_logs (task_id, at, level, phase, actor, from_status, to_status, message, details)
SELECT value, ?, ?, ?, ?, ?, ?, ?, ? FROM json_each(?)

-- name: settle_task
UPDATE tasks SET status = ?, updated_at = ?, error = ?, next_attempt_at = ?, lease_until = NULL, result = ?
WHERE id = ? AND status = 'processing' AND worker = ?
RETURNING route

-- name: tasks_of_identifiers
SELECT id, identifier, status FROM tasks
WHERE route = ?1 AND identifier IN (SELECT value FROM json_each(?2)) AND status IN (SELECT value FROM json_each(?3))

-- name: extend_lease
UPDATE tasks SET lease_until = ? WHERE id = ? AND status = 'processing' AND worker = ?

-- name: expired_leases
-- (route, status) index ranges of the in-flight tasks of each route that has any
SELECT id, route, attempts, worker FROM tasks
WHERE route IN (SELECT route FROM counters WHERE status = 'processing' AND (?2 IS NULL OR route = ?3))
  AND status = 'processing' AND lease_until < ?1
ORDER BY id LIMIT ?4

-- name: recover_task
UPDATE tasks SET status = ?, updated_at = ?, lease_until = NULL, next_attempt_at = ?, error = ?
WHERE id = ? AND status = 'processing' AND lease_until < ?

-- name: release_task
UPDATE tasks SET status = ?, updated_at = ?, next_attempt_at = ?, lease_until = NULL,
                 attempts = MAX(attempts - 1, 0)
WHERE id = ? AND status = 'processing' AND worker = ?
RETURNING route

-- name: task_logs
SELECT at, level, phase, actor, from_status, to_status, message, details
FROM task_logs WHERE task_id = ? ORDER BY id

-- name: counters_all
SELECT route, status, n FROM counters

-- name: counters_route
SELECT route, status, n FROM counters WHERE route = ?

-- name: recount
SELECT route, status, COUNT(*) FROM tasks GROUP BY route, status

-- name: start_run
INSERT INTO runs (route, part, started_at, status, actor, owner, heartbeat_at) VALUES (?, ?, ?, 'running', ?, ?, ?)
RETURNING id

-- name: touch_run
UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'

-- name: running_runs
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE status = 'running' ORDER BY id

-- name: abandon_run
UPDATE runs SET status = 'abandoned', finished_at = ?, error = ? WHERE id = ? AND status = 'running'

-- name: finish_run
UPDATE runs SET finished_at = ?, status = ?, summary = ?, error = ? WHERE id = ?

-- name: list_runs
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
ORDER BY id DESC LIMIT ?

-- name: list_runs_route
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE route = ? ORDER BY id DESC LIMIT ?

-- name: last_successful_run
SELECT id, route, part, started_at, finished_at, status, summary, error, actor, owner, heartbeat_at FROM runs
WHERE route = ? AND part = ? AND status = 'ok' ORDER BY id DESC LIMIT 1

-- name: latest_entities
-- the newest task in the statuses ?3 (a JSON array) of each identifier in ?2: a backwards walk of
-- tasks_route_identifier (route, identifier, rowid) per identifier; a dry run diffs against its entity
SELECT j.value, t.id, t.status, t.entity
FROM json_each(?2) j
JOIN tasks t ON t.id = (
    SELECT l.id FROM tasks l
    WHERE l.route = ?1 AND l.identifier = j.value AND l.status IN (SELECT value FROM json_each(?3))
    ORDER BY l.id DESC LIMIT 1
)

-- name: cache_show
SELECT route, identifier, fingerprint, id, status,
       COALESCE((SELECT s.last_seen_at FROM task_seen s WHERE s.task_id = tasks.id), last_seen_at, created_at)
FROM tasks
WHERE route = ? AND identifier = ? AND fingerprint IS NOT NULL
ORDER BY id DESC LIMIT 1

-- name: cache_count_route
SELECT COUNT(DISTINCT identifier) FROM tasks WHERE route = ? AND identifier IS NOT NULL AND fingerprint IS NOT NULL

-- name: cache_clear_route
UPDATE tasks SET fingerprint = NULL WHERE route = ? AND fingerprint IS NOT NULL

-- name: cache_clear_identifier
UPDATE tasks SET fingerprint = NULL WHERE route = ? AND identifier = ? AND fingerprint IS NOT NULL

-- name: storage_get
SELECT value FROM storage WHERE name = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)

-- name: storage_put
INSERT INTO storage (name, key, value, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at

-- name: add_throughput
INSERT INTO throughput (minute, route, kind, n) VALUES (?, ?, ?, ?)
ON CONFLICT (minute, route, kind) DO UPDATE SET n = n + excluded.n

-- name: throughput_since
SELECT minute, kind, SUM(n) FROM throughput WHERE minute >= ? GROUP BY minute, kind ORDER BY minute

-- name: throughput_since_route
SELECT minute, kind, SUM(n) FROM throughput WHERE minute >= ? AND route = ? GROUP BY minute, kind ORDER BY minute

-- name: top_errors
SELECT route, status, error, COUNT(*) AS n, MAX(id) FROM tasks
WHERE route IN (SELECT DISTINCT route FROM counters) AND status IN ('failed', 'retry') AND updated_at >= ?
  AND error IS NOT NULL
GROUP BY route, status, error ORDER BY n DESC LIMIT ?

-- name: oldest_due
SELECT route, status, MIN(CASE WHEN status = 'waiting' THEN updated_at ELSE next_attempt_at END) FROM tasks
WHERE route IN (SELECT DISTINCT route FROM counters) AND status IN ('new', 'waiting', 'retry')
GROUP BY route, status

-- name: route_states
SELECT route, active, incoming_next, outgoing_next, paused_reason, paused_at FROM route_state

-- name: set_route_active
-- ?3 is why crossdock paused the route (NULL for a person's switch, which clears an earlier pause)
INSERT INTO route_state (route, active, paused_reason, paused_at, updated_at)
VALUES (?1, ?2, ?3, CASE WHEN ?3 IS NOT NULL THEN ?4 END, ?4)
ON CONFLICT (route) DO UPDATE SET active = excluded.active, paused_reason = excluded.paused_reason,
                                  paused_at = excluded.paused_at, updated_at = excluded.updated_at

-- name: set_incoming_next
INSERT INTO route_state (route, incoming_next, updated_at) VALUES (?, ?, ?)
ON CONFLICT (route) DO UPDATE SET incoming_next = excluded.incoming_next, updated_at = excluded.updated_at

-- name: set_outgoing_next
INSERT INTO route_state (route, outgoing_next, updated_at) VALUES (?, ?, ?)
ON CONFLICT (route) DO UPDATE SET outgoing_next = excluded.outgoing_next, updated_at = excluded.updated_at

-- name: create_token
INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?) RETURNING id

-- name: find_token
SELECT id, name, role, created_at, last_used, revoked FROM tokens WHERE token_hash = ? AND revoked = 0

-- name: touch_token
UPDATE tokens SET last_used = ? WHERE id = ?

-- name: list_tokens
SELECT id, name, role, created_at, last_used, revoked FROM tokens ORDER BY id

-- name: revoke_token
UPDATE tokens SET revoked = 1 WHERE id = ?

-- name: record_audit
INSERT INTO audit (at, actor, action, target, changed, detail) VALUES (?, ?, ?, ?, ?, ?)

-- name: list_audit
SELECT id, at, actor, action, target, changed, detail FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?

-- name: prune_idempotency_keys
DELETE FROM idempotency_keys WHERE expires_at <= ?

-- name: claim_idempotency_key
INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (scope, key) DO NOTHING

-- name: get_idempotency_key
SELECT fingerprint, created_at, expires_at, response FROM idempotency_keys WHERE scope = ? AND key = ?

-- name: settle_idempotency_key
UPDATE idempotency_keys SET response = ?, expires_at = COALESCE(?, expires_at)
WHERE scope = ? AND key = ? AND response IS NULL

-- name: forget_idempotency_key
DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND response IS NULL

-- name: failure_groups
-- what an alert counts: failed tasks last updated in (?1, ?2] (index tasks_failed_updated)
SELECT route, error, COUNT(*), MIN(updated_at), MAX(id) FROM tasks
WHERE status = 'failed' AND updated_at > ?1 AND updated_at <= ?2
GROUP BY route, error ORDER BY COUNT(*) DESC LIMIT 1000

-- name: failure_groups_route
SELECT route, error, COUNT(*), MIN(updated_at), MAX(id) FROM tasks
WHERE route = ?3 AND status = 'failed' AND updated_at > ?1 AND updated_at <= ?2
GROUP BY route, error ORDER BY COUNT(*) DESC LIMIT 1000

-- name: add_alert
INSERT INTO alerts (created_at, rule, event, route, channel, subject, message, next_attempt_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?1) RETURNING id

-- name: due_alerts
SELECT id, created_at, rule, event, route, channel, subject, message, status, attempts, next_attempt_at, sent_at, error
FROM alerts WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?

-- name: alert_attempted
UPDATE alerts SET attempts = attempts + 1, status = ?2, error = ?3, next_attempt_at = ?4, sent_at = ?5 WHERE id = ?1

-- name: list_alerts
SELECT id, created_at, rule, event, route, channel, subject, message, status, attempts, next_attempt_at, sent_at, error
FROM alerts WHERE id < ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR route = ?3) ORDER BY id DESC LIMIT ?4

-- name: prune_alerts
DELETE FROM alerts WHERE created_at < ? AND status != 'pending'

-- name: alert_state
SELECT state FROM alert_state WHERE key = ?

-- name: set_alert_state
INSERT INTO alert_state (key, state, updated_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at

-- name: circuits
SELECT key, state, failures, opened_at, open_until, last_error, probe_owner, probe_at, updated_at
FROM circuits ORDER BY key

-- name: circuit_create
INSERT INTO circuits (key, updated_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING

-- The write transaction (BEGIN IMMEDIATE) already holds the only write lock: no row lock to take.
-- name: circuit_lock
SELECT key, state, failures, opened_at, open_until, last_error, probe_owner, probe_at, updated_at
FROM circuits WHERE key = ?

-- name: circuit_put
UPDATE circuits SET state = ?, failures = ?, opened_at = ?, open_until = ?, last_error = ?, probe_owner = ?,
                    probe_at = ?, updated_at = ?
WHERE key = ?
