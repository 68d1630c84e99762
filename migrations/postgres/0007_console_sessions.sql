-- Sessions of the web console (/console). A session stands for the back-office token that
-- signed in: every request re-reads that token, so revoking it (or signing out, which
-- deletes the row) takes effect on every instance at once. Only a SHA-256 of the session id
-- (the cookie) is kept, so a copy of this table opens no session. `csrf_token` is the
-- per-session value every console form must send back.
CREATE TABLE console_sessions (
    id_sha256     TEXT PRIMARY KEY,
    token_id      TEXT NOT NULL REFERENCES api_tokens (id),
    csrf_token    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at_ms);
CREATE INDEX console_sessions_token_idx ON console_sessions (token_id);
