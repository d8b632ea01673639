-- no-transaction
-- Billing figures (`kycq report billing`, `ops::billing`). Built CONCURRENTLY so that workers
-- keep journaling calls while the index is built on a large provider_calls (a plain CREATE
-- INDEX would block every insert, and so every provider call, until it is done); hence the
-- no-transaction directive above. Should a build fail half-way it leaves an INVALID index:
-- DROP INDEX CONCURRENTLY it and run `kycq migrate` again. One statement per file: Postgres runs
-- the statements of one query string in one transaction, where CONCURRENTLY is refused.

-- The report reads calls by a range of sent_at (the UTC bounds of the billing days) and needs
-- only these columns: an index-only scan over the range.
CREATE INDEX CONCURRENTLY IF NOT EXISTS provider_calls_billing_idx
    ON provider_calls (sent_at) INCLUDE (provider, action, billed, billed_by_operator);

