-- 0004_server: what `linkctl serve` needs in the store, so that any number of server
-- processes on one store can answer any request (nothing lives in one process's memory).
--
-- api_keys: only the SHA-256 of a key is kept (keys are random, 256 bits: a plain hash
-- suffices, no password KDF); patterns are a JSON list of globs over link names.
-- sessions: an admin's browser session after /login; only the SHA-256 of the cookie
-- value is kept. csrf_secret is sealed like every other secret.
-- pending_authorizations.session_hash: an authorization started from a page is bound to
-- the admin session that started it (NULL for the CLI).
-- link_notifications / notification_outbox: the last status each link was announced
-- with, and the webhook deliveries still to make (retried with backoff, leased).

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    label         TEXT,
    patterns_json TEXT NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    expires_at    REAL,
    last_used_at  REAL,
    revoked_at    REAL
);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    api_key_id   TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_secret  BLOB NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    ended_at     REAL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);

ALTER TABLE pending_authorizations ADD COLUMN session_hash TEXT;

CREATE TABLE link_notifications (
    link_name   TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    notified_at REAL NOT NULL
);

CREATE TABLE notification_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target        TEXT NOT NULL,
    body_json     TEXT NOT NULL,
    created_at    REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_try_at   REAL NOT NULL,
    lease_owner   TEXT,
    lease_expires REAL,
    delivered_at  REAL,
    last_error    TEXT
);

CREATE INDEX notification_outbox_next_try_at ON notification_outbox (next_try_at);
