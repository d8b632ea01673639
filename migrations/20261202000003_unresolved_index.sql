-- no-transaction
-- The calls awaiting an operator's billing finding (`ops::billing::unresolved`, the console's
-- "awaiting resolution" badge): few rows, counted without reading the journal. Built
-- CONCURRENTLY for the reason given in 20261202000002_billing_index.sql.
CREATE INDEX CONCURRENTLY IF NOT EXISTS provider_calls_unresolved_idx
    ON provider_calls (provider, sent_at) WHERE billed = 'unknown' AND billed_by_operator IS NULL;
