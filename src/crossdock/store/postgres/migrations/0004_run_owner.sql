-- A run records which process owns it (host:pid) and when that process last showed it was alive, so a run whose
-- process died (SIGKILL, power loss) can be marked `abandoned` instead of staying `running` for ever. Runs from
-- before the upgrade have no owner; those still `running` are abandoned by the first process that starts.
ALTER TABLE runs ADD COLUMN owner text;
ALTER TABLE runs ADD COLUMN heartbeat_at timestamptz;
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
