-- Fill a kycq database with :rows requests (and about 1.2 calls each) spread over the last
-- :days days, for measuring the console's page times at volume. Run on a throwaway database
-- (tools/console/seed.sh does): it never touches rows it did not make (request ids `seed-…`).
--
--   psql -v rows=10000000 -v days=90 -f tools/console/seed.sql postgres://…/kycq_seed
--
-- Shapes follow production: 3 checks (mobile3 on all 3 providers, id2 and id2_period on alibaba), most calls billed, a few unknown; 2 % of
-- requests rejected before any call (no provider_calls row), 5 % retried once.

\set ON_ERROR_STOP on
SET synchronous_commit = off;
SELECT set_config('seed.rows', :'rows', false), set_config('seed.days', :'days', false);

-- Requests: id, check, provider, status and times, in batches of a million (memory stays flat).
DO $$
DECLARE
    total bigint := current_setting('seed.rows')::bigint;
    days  int    := current_setting('seed.days')::int;
    batch bigint := 1000000;
    lo    bigint := 0;
BEGIN
    WHILE lo < total LOOP
        INSERT INTO checks (request_id, check_kind, status, verdict, reason_code, billed, provider,
                            attempts, result, subject_masked, subject_fingerprint,
                            received_at, completed_at, updated_at)
        SELECT 'seed-' || g,
               (ARRAY['mobile3','id2','id2_period'])[1 + g % 3],
               s.status,
               s.verdict,
               s.reason,
               s.billed,
               CASE WHEN s.status = 'rejected' THEN NULL
                    WHEN g % 3 <> 0 THEN 'alibaba'
                    ELSE (ARRAY['tencent','alibaba','alimarket'])[1 + (g / 3) % 3] END,
               CASE WHEN s.status = 'rejected' THEN 0 WHEN g % 20 = 0 THEN 2 ELSE 1 END,
               jsonb_build_object('request_id', 'seed-' || g, 'status', s.status,
                                  'verdict', s.verdict, 'reason_code', s.reason),
               jsonb_build_object('name', '张*', 'id_number', '110***********' || lpad((g % 10000)::text, 4, '0')),
               md5('seed-person-' || (g % (total / 3 + 1))),
               t.at,
               t.at + interval '180 milliseconds',
               t.at + interval '180 milliseconds'
          FROM generate_series(lo + 1, least(lo + batch, total)) g
          CROSS JOIN LATERAL (SELECT now() - (days * interval '1 day') * ((g * 7919) % total)::float8 / total AS at) t
          CROSS JOIN LATERAL (SELECT
               CASE WHEN g % 50 = 0 THEN 'rejected' WHEN g % 97 = 0 THEN 'failed' ELSE 'completed' END AS status,
               CASE WHEN g % 50 = 0 OR g % 97 = 0 THEN NULL WHEN g % 10 = 0 THEN 'mismatch' ELSE 'match' END AS verdict,
               CASE WHEN g % 50 = 0 THEN 'invalid_id_number' WHEN g % 97 = 0 THEN 'billing_unknown'
                    WHEN g % 10 = 0 THEN 'mismatch' ELSE 'match' END AS reason,
               CASE WHEN g % 50 = 0 THEN 'no' WHEN g % 97 = 0 THEN 'unknown' ELSE 'yes' END AS billed) s;
        -- One call per request that reached a provider; a second, failed-and-unbilled one first
        -- for one request in 20.
        INSERT INTO provider_calls (request_id, provider, action, attempt, worker, sent_at,
                                    finished_at, http_status, provider_code, outcome, billed)
        SELECT c.request_id, c.provider,
               CASE c.provider WHEN 'tencent' THEN 'PhoneVerification'
                               WHEN 'alimarket' THEN 'mobile3/check'
                               ELSE CASE c.check_kind WHEN 'mobile3' THEN 'Mobile3MetaVerifyIntl'
                                    WHEN 'id2' THEN 'Id2MetaVerifyIntl' ELSE 'Id2MetaPeriodVerifyIntl' END END,
               a.attempt, 'seed-worker',
               c.received_at + (a.attempt - 1) * interval '60 milliseconds',
               c.received_at + (a.attempt - 1) * interval '60 milliseconds' + interval '40 milliseconds',
               200,
               CASE WHEN a.attempt < c.attempts THEN 'Busy' ELSE c.reason_code END,
               CASE WHEN a.attempt < c.attempts THEN 'transient' ELSE 'final' END,
               CASE WHEN a.attempt < c.attempts THEN 'no' ELSE c.billed END
          FROM checks c
          CROSS JOIN LATERAL generate_series(1, c.attempts) AS a(attempt)
         WHERE c.request_id IN (SELECT 'seed-' || g FROM generate_series(lo + 1, least(lo + batch, total)) g)
           AND c.status <> 'rejected';
        lo := lo + batch;
        RAISE NOTICE 'seeded % of % requests', least(lo, total), total;
        COMMIT;
    END LOOP;
END
$$;

ANALYZE checks;
ANALYZE provider_calls;
VACUUM (ANALYZE) checks, provider_calls;
SELECT (SELECT count(*) FROM checks) AS checks, (SELECT count(*) FROM provider_calls) AS provider_calls;
