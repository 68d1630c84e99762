-- Callbacks out (Standard Webhooks): endpoints, the transactional outbox of events, one
-- delivery per (event, endpoint), and every HTTP attempt made.
--
-- Conventions shared with migrations/postgres (keep the two side by side): prefixed text
-- ids, BIGINT unix-ms times, TEXT enumerations with CHECKs. Applied migrations are never
-- edited: change the schema with a new file.

-- Where a facility's or subsidy office's system receives events. The owner is a facility
-- (`fac_...`) or an office, i.e. a region node (`reg_...`); `region_id` is the region that
-- scopes it (the facility's region, or the office itself) and never changes.
-- Secrets are AES-256-GCM ciphertexts bound to the endpoint id: the `whsec_` secret, the
-- previous one while a rotation's overlap lasts, and the optional Ed25519 key for `v1a`.
-- `consecutive_failures`/`failing_since_ms` are kept by the delivery worker to disable an
-- endpoint that has failed for too long.
CREATE TABLE callback_endpoints (
    id                        TEXT PRIMARY KEY,
    owner_kind                TEXT NOT NULL CHECK (owner_kind IN ('facility', 'office')),
    owner_id                  TEXT NOT NULL,
    region_id                 TEXT NOT NULL REFERENCES regions (id),
    url                       TEXT NOT NULL,
    event_types               TEXT NOT NULL,
    status                    TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    disabled_reason           TEXT CHECK (disabled_reason IN ('owner', 'gone', 'failing')),
    secret_sealed             TEXT NOT NULL,
    previous_secret_sealed    TEXT,
    previous_secret_until_ms  BIGINT,
    signing_key_sealed        TEXT,
    public_key                TEXT,
    consecutive_failures      BIGINT NOT NULL DEFAULT 0,
    failing_since_ms          BIGINT,
    version                   BIGINT NOT NULL,
    created_at_ms             BIGINT NOT NULL,
    updated_at_ms             BIGINT NOT NULL
);
CREATE INDEX callback_endpoints_owner_idx ON callback_endpoints (owner_kind, owner_id);
CREATE INDEX callback_endpoints_region_idx ON callback_endpoints (region_id);

-- The outbox. A use case inserts its event in the same transaction as the state change it
-- reports, so a committed change always has its event and a rolled-back one never does.
-- `body` is the exact JSON sent on every attempt; `id` is the `webhook-id`.
CREATE TABLE callback_events (
    id             TEXT PRIMARY KEY,
    owner_kind     TEXT NOT NULL CHECK (owner_kind IN ('facility', 'office')),
    owner_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    object_id      TEXT NOT NULL,
    object_version BIGINT NOT NULL,
    body           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

-- One row per (event, endpoint), written with the event (fan-out in the same transaction).
-- A worker claims due rows by setting `claimed_by`/`lease_until_ms` with a compare-and-set;
-- a claim whose lease ran out (the instance died) is claimed again by anyone.
CREATE TABLE callback_deliveries (
    event_id           TEXT NOT NULL REFERENCES callback_events (id),
    endpoint_id        TEXT NOT NULL REFERENCES callback_endpoints (id),
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    claimed_by         TEXT,
    lease_until_ms     BIGINT,
    last_status_code   BIGINT,
    last_error         TEXT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
);
-- What the claim scans: only pending rows, in due order.
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at_ms) WHERE status = 'pending';
-- What a worker reads back after claiming, by its claim token.
CREATE INDEX callback_deliveries_claim_idx ON callback_deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
-- Listing and replay per endpoint.
CREATE INDEX callback_deliveries_endpoint_idx ON callback_deliveries (endpoint_id, event_id);

-- Every HTTP attempt: what came back, how long it took, when the next one is due.
CREATE TABLE callback_attempts (
    id                 TEXT PRIMARY KEY,
    event_id           TEXT NOT NULL,
    endpoint_id        TEXT NOT NULL,
    attempt            BIGINT NOT NULL,
    started_at_ms      BIGINT NOT NULL,
    latency_ms         BIGINT NOT NULL,
    status_code        BIGINT,
    error              TEXT,
    response_excerpt   TEXT NOT NULL,
    next_attempt_at_ms BIGINT,
    FOREIGN KEY (event_id, endpoint_id) REFERENCES callback_deliveries (event_id, endpoint_id)
);
CREATE INDEX callback_attempts_endpoint_idx ON callback_attempts (endpoint_id, id);
