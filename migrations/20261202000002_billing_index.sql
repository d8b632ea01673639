-- Billing figures (`kycq report billing`, `ops::billing`).
--
-- Plain CREATE INDEX, in the migration's transaction: it blocks writes to provider_calls (and so
-- every worker's journal, i.e. every provider call) while it builds. CONCURRENTLY cannot be used
-- here: workers starting together run the migrations together, and a concurrent build waits for
-- the session that waits for the migration lock it holds (a deadlock). On a large journal,
-- build both indexes first by hand, without stopping anything:
--   CREATE INDEX CONCURRENTLY provider_calls_billing_idx ON provider_calls (sent_at)
--       INCLUDE (provider, action, billed, billed_by_operator);
--   CREATE INDEX CONCURRENTLY provider_calls_unresolved_idx ON provider_calls (provider, sent_at)
--       WHERE billed = 'unknown' AND billed_by_operator IS NULL;
-- (check that neither is left INVALID in \d provider_calls); this migration then finds them.

-- The report reads calls by a range of sent_at (the UTC bounds of its billing days) and needs
-- only these columns: an index-only scan over the range.
CREATE INDEX IF NOT EXISTS provider_calls_billing_idx
    ON provider_calls (sent_at) INCLUDE (provider, action, billed, billed_by_operator);

-- The calls awaiting an operator's billing finding (`ops::billing::unresolved`, the console's
-- "awaiting resolution" badge): few rows, counted without reading the journal.
CREATE INDEX IF NOT EXISTS provider_calls_unresolved_idx
    ON provider_calls (provider, sent_at) WHERE billed = 'unknown' AND billed_by_operator IS NULL;
