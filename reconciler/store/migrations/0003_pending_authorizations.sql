-- 0003_pending_authorizations: authorizations started and not yet finished (single use).
-- The state is kept only as its SHA-256 (the lookup key); the PKCE verifier is sealed
-- like every other secret (AAD binds it to the state hash). A row is consumed once:
-- consumed_at is set in the same transaction that reads it.

CREATE TABLE pending_authorizations (
    state_hash    TEXT PRIMARY KEY,
    link_uid      TEXT NOT NULL REFERENCES links (uid) ON DELETE CASCADE,
    code_verifier BLOB NOT NULL,
    redirect_uri  TEXT NOT NULL,
    issuer        TEXT,
    require_iss   INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    consumed_at   REAL
);

CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at);
