-- Operator decisions on dead letters (retry, resolve, purge), and retries of a request under its
-- own request_id. Columns are only added: the names of `checks` and `provider_calls` are a contract.

-- Which run of the request is current (0 = the first; `kycq dlq retry` adds one), and the highest
-- journaled attempt of the superseded runs: the worker's journal view starts after it, so a
-- retried request starts fresh while every earlier call stays in provider_calls, and attempt
-- numbers keep increasing (UNIQUE (request_id, attempt)).
ALTER TABLE checks ADD COLUMN retry_round integer NOT NULL DEFAULT 0;
ALTER TABLE checks ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;

-- The run a call belongs to, and the billing an operator established for a call kycq recorded as
-- `billed = 'unknown'` (the observed `billed` is kept as it was).
ALTER TABLE provider_calls ADD COLUMN retry_round integer NOT NULL DEFAULT 0;
ALTER TABLE provider_calls ADD COLUMN billed_by_operator text
    CHECK (billed_by_operator IN ('yes', 'no'));

-- Every operator decision: who, when, what, why.
CREATE TABLE operator_decisions (
    id              bigserial PRIMARY KEY,
    request_id      text,            -- NULL for a dead letter without a usable request_id
    action          text NOT NULL CHECK (action IN ('retry', 'resolve', 'purge')),
    operator        text NOT NULL,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    dead_letter_reason text,         -- the dead letter's x-kycq-reason (or the broker's)
    dead_letter_key text,            -- identifies the dead letter acted on (its dead-lettering time)
    retry_round     integer,         -- the request's run the decision applies to
    billed          text CHECK (billed IN ('yes', 'no')),  -- resolve: the operator's finding
    note            text
);

CREATE INDEX operator_decisions_request_idx ON operator_decisions (request_id, decided_at);

-- A stored result replaced by a retry: kept as it was, with the decision that superseded it.
CREATE TABLE superseded_results (
    id              bigserial PRIMARY KEY,
    request_id      text NOT NULL REFERENCES checks (request_id),
    retry_round     integer NOT NULL,
    status          text NOT NULL,
    reason_code     text,
    billed          text,
    provider        text,
    attempts        integer NOT NULL,
    result          jsonb NOT NULL,
    completed_at    timestamptz NOT NULL,
    superseded_at   timestamptz NOT NULL DEFAULT now(),
    decision_id     bigint NOT NULL REFERENCES operator_decisions (id),
    UNIQUE (request_id, retry_round)
);
