-- 0002_due_at (PostgreSQL): grants.due_at, written by the store from the one Python due
-- rule (reconciler.domain.schedule.due_at). The back-fill is the same CASE as
-- ../0002_due_at.sql in PostgreSQL's JSON syntax.

ALTER TABLE grants ADD COLUMN due_at double precision;

UPDATE grants SET due_at = CASE
    WHEN status IN ('pending_credentials', 'configuration_error') THEN NULL
    WHEN in_flight_since IS NOT NULL
        OR (access_token IS NULL
            AND (SELECT spec_json::jsonb ->> 'grant' FROM links WHERE links.uid = grants.link_uid)
                = 'client_credentials')
        THEN COALESCE(retry_at, 0)
    WHEN status = 'needs_authorization' THEN NULL
    ELSE COALESCE(retry_at, next_refresh_at)
END;

CREATE INDEX grants_due_at ON grants (due_at) WHERE due_at IS NOT NULL;
