-- 0003_pending_authorizations (PostgreSQL): as ../0003_pending_authorizations.sql.

CREATE TABLE pending_authorizations (
    state_hash    text PRIMARY KEY,
    link_uid      text NOT NULL REFERENCES links (uid) ON DELETE CASCADE,
    code_verifier bytea NOT NULL,
    redirect_uri  text NOT NULL,
    issuer        text,
    require_iss   integer NOT NULL DEFAULT 0,
    created_at    double precision NOT NULL,
    expires_at    double precision NOT NULL,
    consumed_at   double precision
);

CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at);
