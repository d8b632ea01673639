-- One row per request: the claim (lease), the stored result, the masked subject.
CREATE TABLE checks (
    request_id          text PRIMARY KEY,
    check_kind          text,
    status              text NOT NULL CHECK (status IN ('pending', 'completed', 'rejected', 'failed')),
    verdict             text,
    reason_code         text,
    billed              text CHECK (billed IN ('yes', 'no', 'unknown')),
    provider            text,
    attempts            integer NOT NULL DEFAULT 0,
    result              jsonb,
    subject_masked      jsonb NOT NULL,
    subject_fingerprint text,
    lease_owner         text,
    lease_until         timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((completed_at IS NULL) = (result IS NULL))
);

CREATE INDEX checks_subject_fingerprint_idx ON checks (subject_fingerprint);
CREATE INDEX checks_unfinished_idx ON checks (lease_until) WHERE completed_at IS NULL;

-- One row per outbound provider call, written before it is sent and completed after:
-- the billing audit trail, and what stops a redelivered request from being billed twice.
CREATE TABLE provider_calls (
    id                  bigserial PRIMARY KEY,
    request_id          text NOT NULL REFERENCES checks (request_id),
    provider            text NOT NULL,
    action              text NOT NULL,
    attempt             integer NOT NULL,
    worker              text NOT NULL,
    sent_at             timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    http_status         integer,
    provider_code       text,
    provider_request_id text,
    outcome             text,
    billed              text NOT NULL DEFAULT 'unknown' CHECK (billed IN ('yes', 'no', 'unknown')),
    reply               jsonb,
    UNIQUE (request_id, attempt)
);

CREATE INDEX provider_calls_request_idx ON provider_calls (request_id);
CREATE INDEX provider_calls_sent_idx ON provider_calls (provider, sent_at);
