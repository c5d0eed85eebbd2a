-- One delta model on every backend, as on SQLite since its migration 0004: the latest task of a (route, identifier)
-- is its newest task that carries a fingerprint, found by a backward step in tasks_route_identifier. The separate
-- fingerprints table cost a second COPY and B-tree per imported record and could, in principle, drift from tasks.
-- Carry it over: only the task it named keeps its fingerprint as "latest"; newer tasks of the same identifier that
-- carry one without having recorded it (delta: false wrote it on every task), and every task of an identifier
-- whose cache was cleared, lose theirs, so delta compares exactly as before.
UPDATE tasks t SET fingerprint = NULL
WHERE t.fingerprint IS NOT NULL AND t.identifier IS NOT NULL
  AND t.id > COALESCE(
      (SELECT f.task_id FROM fingerprints f WHERE f.route = t.route AND f.identifier = t.identifier), 0);
DROP TABLE fingerprints;

-- (route, identifier, id): the newest task of an identifier is the last entry of its range, so the delta lookup
-- (latest_for_identifiers) and the history of one record read it in id order without a sort.
DROP INDEX tasks_route_identifier;
CREATE INDEX tasks_route_identifier ON tasks (route, identifier, id);
