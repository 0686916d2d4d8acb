-- 0001_initial: the first store schema (links, grants, events, lock, meta, provider metadata).
-- Applied by reconciler.store.sqlite inside one transaction, which then records
-- meta.schema_version = 1. Rules for later files (0002_*.sql, ...): one statement
-- per ';', no BEGIN/COMMIT, no PRAGMA (foreign_keys cannot change inside a transaction).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);

INSERT INTO meta (key, value) VALUES ('serial', 0);

CREATE TABLE links (
    uid                      TEXT PRIMARY KEY,
    name                     TEXT NOT NULL UNIQUE,
    provider                 TEXT NOT NULL,
    spec_json                TEXT NOT NULL,
    spec_hash                TEXT NOT NULL,
    secret_fingerprints_json TEXT NOT NULL DEFAULT '{}',
    generation               INTEGER NOT NULL DEFAULT 1,
    source_file              TEXT,
    source_line              INTEGER,
    managed_by               TEXT NOT NULL DEFAULT 'linkctl',
    deletion_policy          TEXT NOT NULL DEFAULT 'delete',
    created_at               REAL NOT NULL,
    updated_at               REAL NOT NULL
);

CREATE TABLE secrets (
    link_uid   TEXT NOT NULL REFERENCES links (uid) ON DELETE CASCADE,
    field      TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (link_uid, field)
);

CREATE TABLE grants (
    link_uid         TEXT PRIMARY KEY REFERENCES links (uid) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    token_version    INTEGER NOT NULL DEFAULT 0,
    access_token     BLOB,
    refresh_token    BLOB,
    token_type       TEXT,
    scope            TEXT,
    access_expires_at REAL,
    obtained_at      REAL,
    last_refresh_at  REAL,
    next_refresh_at  REAL,
    retry_at         REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    error_class      TEXT,
    lease_owner      TEXT,
    lease_expires_at REAL,
    in_flight_since  REAL,
    lost_response    INTEGER NOT NULL DEFAULT 0,
    details_json     TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX grants_next_refresh_at ON grants (next_refresh_at);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    link        TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX events_link ON events (link, id);

-- The audit log is append-only: refuse edits at the database level too.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE locks (
    id        TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    host      TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    since     REAL NOT NULL,
    user      TEXT NOT NULL
);

CREATE TABLE provider_metadata (
    issuer        TEXT PRIMARY KEY,
    metadata_json TEXT NOT NULL,
    fetched_at    REAL NOT NULL
);
