-- The operators' console (`kycq console`).

-- Every console action: sign-ins (and refused ones), dead-letter decisions, person searches,
-- billing exports. Never personal data: a person search records that one was made, not whom.
CREATE TABLE console_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    operator    text NOT NULL,          -- who (the account, or the name typed with the token)
    action      text NOT NULL,          -- login, login_refused, logout, retry, resolve, purge, person_search, billing_csv
    target      text,                   -- the request_id acted on, the CSV's date range, ...
    outcome     text NOT NULL,          -- ok, refused, failed
    detail      text,                   -- the report line, the operator's note
    client      text                    -- the client's address
);

CREATE INDEX console_audit_at_idx ON console_audit (at);

-- Console sessions: a signed cookie names one; signing out ends it here, so an ended session
-- stays ended across restarts and on every console sharing console.session_key.
CREATE TABLE console_sessions (
    id          text PRIMARY KEY,
    operator    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- The overview's "requests per minute per check" and "verdict mix today" read checks by the time
-- they were received.
--
-- On a large `checks` table this build blocks writes to it (every worker waits) until it is
-- done. Build it beforehand without blocking, and this statement then finds it in place:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS checks_received_idx ON checks (received_at);
CREATE INDEX IF NOT EXISTS checks_received_idx ON checks (received_at);
