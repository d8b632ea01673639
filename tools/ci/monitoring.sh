#!/usr/bin/env bash
# Checks the monitoring files in deploy/: the Prometheus alert rules (promtool check rules), their
# unit tests (promtool test rules), the Prometheus configuration (promtool check config), every
# PromQL expression of the Grafana dashboard (each as a recording rule through promtool check
# rules, Grafana's variables substituted), the dashboard's data source against the provisioned
# one, and that every path docker-compose.yml mounts exists. That the metrics they name exist is
# tests/api/monitoring.rs (cargo test --test api monitoring).
# promtool: https://prometheus.io/docs/prometheus/latest/command-line/promtool/
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf -- '-- %s\n' "$*"; }

ensure_promtool() {
  command -v promtool >/dev/null && return
  log "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  # The package's maintainer scripts start the prometheus service; a policy-rc.d that refuses
  # every start keeps them from it (and from failing where there is no init system). One that is
  # already there is left as it is.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
  fi
  local rc=0
  { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; } || rc=$?
  if [ -n "$own_policy" ]; then rm -f "$policy"; fi
  if [ "$rc" -ne 0 ] && ! command -v promtool >/dev/null; then
    echo "could not install promtool (apt-get exited $rc)" >&2
    return 1
  fi
  command -v promtool >/dev/null
}

ensure_promtool
promtool --version | head -n1

log "alert rules: promtool check rules"
promtool check rules deploy/prometheus/rules/kycq.yml

log "alert rules' unit tests: promtool test rules"
promtool test rules deploy/prometheus/rules/kycq.test.yml

log "Prometheus configuration: promtool check config"
promtool check config deploy/prometheus/prometheus.yml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log "dashboard: every PromQL expression parses (as recording rules), data source as provisioned"
python3 - deploy/grafana/dashboards/kycq.json deploy/grafana/provisioning/datasources/prometheus.yml \
  "$tmp/dashboard-rules.yml" <<'PY'
import json, re, sys

dashboard_path, datasource_path, out_path = sys.argv[1:4]
dash = json.load(open(dashboard_path, encoding="utf-8"))
errors = []

# The provisioned data source's uid (a flat YAML file: read it with a regex, no PyYAML needed).
uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", open(datasource_path, encoding="utf-8").read(), re.M)
if len(uids) != 1:
    errors.append(f"{datasource_path}: expected one uid, found {uids}")
variables = {v["name"]: v for v in dash["templating"]["list"]}
ds_var = variables.get("datasource")
if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    errors.append("the dashboard needs a variable 'datasource' of type datasource (prometheus)")
elif uids and ds_var.get("current", {}).get("value") != uids[0]:
    errors.append(f"variable datasource defaults to {ds_var.get('current')}, not the provisioned uid {uids[0]}")

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

def substitute(expr):
    # Grafana's interval variables become a duration, the dashboard's own variables (used only in
    # regex matchers) ".*"; anything left starting with $ is a mistake.
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    expr = re.sub(r"\$\{(\w+)(:\w+)?\}|\$(\w+)", lambda m: ".*" if (m.group(1) or m.group(3)) in variables else m.group(0), expr)
    if "$" in expr:
        errors.append(f"unknown variable in {expr!r}")
    return expr

exprs = []
for p in panels(dash["panels"]):
    if p.get("type") == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"panel {p.get('title')!r}: datasource {p.get('datasource')} is not ${{datasource}}")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {p.get('title')!r} target {t.get('refId')}: datasource is not ${{datasource}}")
        exprs.append((f"panel_{p['id']}_{t['refId']}", t["expr"]))
for name, v in variables.items():
    if v.get("type") == "query":
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["definition"].strip())
        if not m:
            errors.append(f"variable {name}: expected label_values(selector, label), got {v['definition']!r}")
        else:
            exprs.append((f"variable_{name}", m.group(1)))

with open(out_path, "w", encoding="utf-8") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for name, expr in exprs:
        out.write(f"      - record: dashboard:{name}\n        expr: {json.dumps(substitute(expr))}\n")
if errors:
    sys.exit("\n".join(errors))
print(f"{len(exprs)} expressions")
PY
promtool check rules "$tmp/dashboard-rules.yml"

log "docker-compose.yml: every mounted path exists"
mounts=$(grep -oE '^\s*- \./[^:]+:' docker-compose.yml | sed -E 's/^\s*- //; s/:$//' || true)
[ -n "$mounts" ] || { echo "docker-compose.yml mounts nothing from the repository" >&2; exit 1; }
missing=0
while read -r src; do
  if [ -e "$src" ]; then echo "$src"; else echo "docker-compose.yml mounts $src, which does not exist" >&2; missing=1; fi
done <<<"$mounts"
[ "$missing" -eq 0 ]

log "monitoring files OK"
