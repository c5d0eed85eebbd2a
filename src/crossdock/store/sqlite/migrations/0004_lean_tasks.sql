-- Fewer B-trees to write per imported task (each one costs about as much as the row itself on SQLite).
--
-- 1. The delta cache lives on the task rows: the latest task of a (route, identifier) is its highest id that carries
--    a fingerprint, found by a backwards step in tasks_route_identifier. The separate fingerprints table cost a
--    second B-tree write per record and was a second copy that could, in principle, drift from the tasks.
--    Carry it over: only the task it named keeps its fingerprint as "latest"; later tasks of the same identifier
--    written without recording one (delta: false), and identifiers whose cache was cleared, lose theirs so they stay
--    out of the comparison exactly as before.
UPDATE tasks SET fingerprint = NULL
WHERE fingerprint IS NOT NULL AND identifier IS NOT NULL
  AND id > COALESCE(
      (SELECT f.task_id FROM fingerprints f WHERE f.route = tasks.route AND f.identifier = tasks.identifier), 0);
DROP TABLE fingerprints;

-- 2. One full (route, status, id) index replaces the partial (route, status, id), the partial (status, id) and the
--    (route, id) indexes. A new task is one index entry instead of three. Listings that span several statuses or
--    routes merge one index range per (route, status) pair (store.py, list_tasks); a claim moves one entry instead
--    of two, and settling moves one entry instead of deleting two.
DROP INDEX tasks_route_status;
DROP INDEX tasks_status_id;
DROP INDEX tasks_route_id;
CREATE INDEX tasks_route_status_id ON tasks (route, status, id);
