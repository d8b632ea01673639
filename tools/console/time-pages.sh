#!/usr/bin/env bash
# Sign in to a running console with its operator token and time each page RUNS times (median,
# min, max in ms): tools/console/time-pages.sh http://127.0.0.1:9470 TOKEN [RUNS]
set -euo pipefail
BASE=$1 TOKEN=$2 RUNS=${3:-7}
JAR=$(mktemp); trap 'rm -f "$JAR"' EXIT
csrf() { grep -o 'name="csrf" value="[0-9a-f]*"' | head -n1 | sed 's/.*value="//; s/"$//'; }
C=$(curl -s -c "$JAR" -b "$JAR" "$BASE/login" | csrf)
curl -s -o /dev/null -c "$JAR" -b "$JAR" --data-urlencode "csrf=$C" --data-urlencode "token=$TOKEN" \
  --data-urlencode "name=timing" "$BASE/login"
FROM=$(date -u -d '-29 days' +%F); FROM90=$(date -u -d '-89 days' +%F); TO=$(date -u +%F)
for page in "/" "/billing" "/billing?from=$FROM&to=$TO" "/billing.csv?from=$FROM&to=$TO" \
            "/billing.csv?from=$FROM90&to=$TO" \
            "/story/seed-4242" "/dead-letters"; do
  times=()
  for _ in $(seq "$RUNS"); do
    t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -b "$JAR" "$BASE$page")
    [ "${t%% *}" = 200 ] || { echo "$page: HTTP ${t%% *}" >&2; exit 1; }
    times+=("$(awk -v s="${t#* }" 'BEGIN{printf "%.1f", s*1000}')")
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  printf '%-45s median %7s ms  min %7s  max %7s\n' "$page" \
    "$(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")" "$(echo "$sorted" | head -n1)" "$(echo "$sorted" | tail -n1)"
done
