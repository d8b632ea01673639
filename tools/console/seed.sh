#!/usr/bin/env bash
# Make a throwaway database filled with ROWS requests over DAYS days (tools/console/seed.sql),
# with kycq's schema, for measuring the console at volume:
#
#   tools/console/seed.sh 10000000 90            # -> database kycq_seed on 127.0.0.1
#   KYCQ__DATABASE__URL=postgres://postgres@127.0.0.1/kycq_seed kycq console
#   tools/console/time-pages.sh http://127.0.0.1:9470 "$TOKEN"
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-1000000}
DAYS=${2:-90}
DB=${SEED_DB:-kycq_seed}
ADMIN=${SEED_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
URL=${ADMIN%/*}/$DB
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\""
# The schema: the kycq binary's own migrations (KYCQ_BIN, default: build and run it).
if [ -n "${KYCQ_BIN:-}" ]; then
  KYCQ__DATABASE__URL=$URL "$KYCQ_BIN" migrate
else
  KYCQ__DATABASE__URL=$URL cargo run -q --release -- migrate
fi
time psql -q -v rows="$ROWS" -v days="$DAYS" -f tools/console/seed.sql "$URL"
psql -q "$URL" -c "SELECT pg_size_pretty(pg_database_size('$DB')) AS size"
