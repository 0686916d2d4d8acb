-- 0002_due_at: the moment each grant becomes due, kept as data so the due query is plain SQL.
-- From now on the store writes grants.due_at on every grant write, computed by the one
-- Python rule reconciler.domain.schedule.due_at (NULL: never due by itself). The UPDATE
-- below fills existing rows once with the same rule, as the store computed it in SQL
-- before this migration (tests/unit/store/test_due_at.py holds the two equal).

ALTER TABLE grants ADD COLUMN due_at REAL;

UPDATE grants SET due_at = CASE
    WHEN status IN ('pending_credentials', 'configuration_error') THEN NULL
    WHEN in_flight_since IS NOT NULL
        OR (access_token IS NULL
            AND (SELECT json_extract(spec_json, '$.grant') FROM links WHERE links.uid = grants.link_uid)
                = 'client_credentials')
        THEN COALESCE(retry_at, 0)
    WHEN status = 'needs_authorization' THEN NULL
    ELSE COALESCE(retry_at, next_refresh_at)
END;

CREATE INDEX grants_due_at ON grants (due_at) WHERE due_at IS NOT NULL;
