-- Records without an identifier (a malformed line, a missing identifier) are compared by their content among the
-- route's tasks without one, so the same broken record polled every few minutes keeps one rejected task whose
-- seen count goes up, instead of adding a rejected task per poll. Only tasks without an identifier are in this
-- index, so the tasks of normal records pay nothing for it.
-- Fingerprints such tasks carry from before (written whether or not delta recorded them, delta: false included)
-- are not a record of delta, so they are cleared: the first import after the upgrade compares with nothing.
UPDATE tasks SET fingerprint = NULL WHERE identifier IS NULL AND fingerprint IS NOT NULL;
CREATE INDEX tasks_unkeyed ON tasks (route, fingerprint, id) WHERE identifier IS NULL;
