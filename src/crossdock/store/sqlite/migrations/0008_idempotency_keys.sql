-- Idempotency-Key headers of webhook requests, so a request sent again (a sender's retry after a timeout, a
-- replay) is answered with the first answer instead of being imported twice. Kept in the database so keys survive
-- a restart and hold across every process sharing it. A row without a response is a request still in progress.
-- Rows past expires_at are pruned whenever a key is claimed.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    response    BLOB,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
