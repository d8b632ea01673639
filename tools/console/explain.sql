-- The plans of the console's reads (the SQL of src/console/*.rs and src/ops/billing.rs, with
-- today's and this month's bounds filled in), for docs/src/guides/console.md:
--   psql -f tools/console/explain.sql postgres://postgres@127.0.0.1:5432/kycq_seed
\set ON_ERROR_STOP on
SELECT (date_trunc('day', now() AT TIME ZONE 'UTC' + interval '8 hours') - interval '8 hours') AT TIME ZONE 'UTC' AS day_start \gset
SELECT (date_trunc('month', now() AT TIME ZONE 'UTC' + interval '8 hours') - interval '8 hours') AT TIME ZONE 'UTC' AS month_start \gset

\echo '== overview: calls per second (last 60 s)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT provider, count(*) FILTER (WHERE sent_at > now() - interval '10 seconds') AS last10, count(*) AS last60
  FROM provider_calls WHERE sent_at > now() - interval '60 seconds' GROUP BY provider;

\echo '== overview: latency (most recent 20,000 calls of the last 15 minutes)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT provider, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), count(*)
  FROM (SELECT provider, extract(epoch FROM finished_at - sent_at)::float8 * 1000 AS ms FROM provider_calls
         WHERE sent_at > now() - interval '15 minutes' AND finished_at IS NOT NULL
         ORDER BY sent_at DESC LIMIT 20000) recent GROUP BY provider;

\echo '== overview: results today per provider and verdict'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT COALESCE(provider, '-'), COALESCE(verdict, status), count(*)
  FROM checks WHERE received_at >= :'day_start' AND completed_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC;

\echo '== overview: per check today'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT COALESCE(check_kind, '(unreadable)'), count(*) FILTER (WHERE received_at > now() - interval '5 minutes'),
       count(*), count(*) FILTER (WHERE status = 'rejected')
  FROM checks WHERE received_at >= :'day_start' GROUP BY 1 ORDER BY 1;

\echo '== overview: billed today'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT provider, count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'yes'),
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'unknown')
  FROM provider_calls WHERE sent_at >= :'day_start' GROUP BY provider;

\echo '== overview and billing: the billing report, this month to yesterday (cached 5 min by the overview)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT ((sent_at AT TIME ZONE 'UTC') + 28800 * interval '1 second')::date AS day, provider, action,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'yes') AS billed,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'unknown') AS unknown
  FROM provider_calls WHERE sent_at >= :'month_start' AND sent_at < :'day_start'
   AND COALESCE(billed_by_operator, billed) IN ('yes', 'unknown')
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

\echo '== billing: the report over the last 30 days'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT ((sent_at AT TIME ZONE 'UTC') + 28800 * interval '1 second')::date AS day, provider, action,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'yes') AS billed,
       count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'unknown') AS unknown
  FROM provider_calls WHERE sent_at >= :'day_start'::timestamptz - interval '29 days'
   AND COALESCE(billed_by_operator, billed) IN ('yes', 'unknown')
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

\echo '== billing: awaiting resolution'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT provider, count(*), min(sent_at) FROM provider_calls
 WHERE billed = 'unknown' AND billed_by_operator IS NULL GROUP BY provider;

\echo '== story: a person (fingerprint) and a request'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT request_id FROM checks WHERE subject_fingerprint = md5('seed-person-4242') ORDER BY received_at DESC LIMIT 200;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM provider_calls WHERE request_id = 'seed-4242' ORDER BY attempt;
