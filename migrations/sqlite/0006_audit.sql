-- Append-only, hash-chained audit trail of every state-changing back-office action.
-- Each record carries the hash of the one before it, so editing, deleting or inserting a
-- record anywhere breaks the chain from that point (`carepay audit verify` names it).
-- `audit_head` is the single row appends go through: taking it with an UPDATE serialises
-- appends across instances without advisory locks, so the chain has no forks.

CREATE TABLE audit_head (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    last_seq  BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, last_seq, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    seq             BIGINT PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    actor_role      TEXT NOT NULL,
    actor_region_id TEXT,
    action          TEXT NOT NULL,
    object_kind     TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    -- The object's region path, so auditors see only records within their scope.
    region_path     TEXT,
    summary         TEXT NOT NULL,
    request_id      TEXT,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at_ms);
