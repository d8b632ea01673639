-- Live workers: each worker process upserts its row at start and at every heartbeat
-- (`worker.heartbeat_secs`, one statement per beat) and sets stopped_at on a clean stop.
-- A worker is alive while its heartbeat is less than three beats old and stopped_at is NULL.
-- Rows whose heartbeat is older than 24 hours are deleted by the heartbeats of the workers
-- still running, so the table holds one row per process of the last day. Operational facts
-- only: no personal data (provider states carry codes, never reply text or request fields).
CREATE TABLE workers (
    -- worker.id when it is generated (<host>-<pid>-<random>: unique per process); a configured
    -- worker.id may repeat across processes, so it gets "#<random>" appended.
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,              -- kycq's version
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,       -- database clock
    stopped_at   timestamptz,                -- set on a clean stop
    concurrency  integer NOT NULL,           -- worker.concurrency (slots)
    in_flight    integer NOT NULL,           -- deliveries being processed at the last heartbeat
    consuming    boolean NOT NULL,           -- consuming from the work queue at the last heartbeat
    -- One object per configured provider, as of the last heartbeat:
    -- {"provider": "tencent", "circuit": "closed" | "open", "closes_in_secs": 12 | null,
    --  "open_until": timestamptz | null,
    --  "why": {"class": "provider_wide", "code": "AuthFailure.SignatureFailure",
    --          "http_status": 200, "refusal": "credentials" | null, "at": timestamptz} | null,
    --  "refusal": {"kind": "credentials" | "account" | "quota", "code": "..."} | null}
    providers    jsonb NOT NULL DEFAULT '[]'
);

CREATE INDEX workers_heartbeat_at ON workers (heartbeat_at);
