-- A catalogue poll touches every unchanged record's latest task: its seen count and last-seen time go up. On the
-- task row that rewrote the whole row, entity included, so a poll of a million unchanged records wrote hundreds of
-- megabytes of pages. The touches now go to this narrow table. A task's seen count is tasks.seen_count (the times
-- it was seen in the batch that wrote it) plus task_seen.seen; its last-seen time is task_seen.last_seen_at when
-- there is one. Existing values stay where they are; nothing moves.
CREATE TABLE task_seen (
    task_id      INTEGER PRIMARY KEY,
    seen         INTEGER NOT NULL,
    last_seen_at REAL    NOT NULL
);
