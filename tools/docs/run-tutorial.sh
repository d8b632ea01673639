#!/usr/bin/env bash
# Runs the book's tutorial (docs/src/tutorial.md) exactly as written: its ```sh blocks, in order,
# in one bash process (the blocks share variables and background jobs), with `set -e`, against
# this machine's RabbitMQ, PostgreSQL and Redis. Blocks fenced ```sh python need the Python
# client (clients/python): they are skipped, and said so, when it is not in the repository.
# Blocks with any other info string (text, console, …) are not run.
#
# Afterwards it leaves nothing behind, whatever happened: it stops every process the tutorial
# started (its process group), drops the database kycq_sandbox, and deletes the exchanges and
# queues of the default topology (kyc.*) and the clients' reply queues (kycq.*) that did not
# exist before it ran, and the .venv the tutorial made. CI runs it alone (it uses the default
# topology names). Exit code: the tutorial's.
#
#   bash tools/docs/run-tutorial.sh            # TUTORIAL_TIMEOUT=900 (seconds) by default
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
page=docs/src/tutorial.md
work=$(mktemp -d /tmp/kycq-tutorial.XXXXXX)
script=$work/tutorial.sh

have_python_client=no
[ -f clients/python/pyproject.toml ] || [ -f clients/python/setup.py ] && have_python_client=yes

# Extract the blocks.
python3 - "$page" "$script" "$have_python_client" <<'PY'
import re, sys
page, out, have_py = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
blocks, cur, info = [], None, None
for line in open(page, encoding="utf-8"):
    m = re.match(r"^```(.*)$", line.rstrip("\n"))
    if m and cur is None:
        cur, info = [], m.group(1).strip()
    elif m and cur is not None and m.group(1) == "":
        blocks.append((info, "".join(cur)))
        cur = None
    elif cur is not None:
        cur.append(line)
run, skipped = [], 0
with open(out, "w", encoding="utf-8") as f:
    f.write("set -e\n")
    for n, (info, text) in enumerate(blocks, 1):
        words = info.split()
        if not words or words[0] != "sh":
            continue
        if "python" in words[1:] and not have_py:
            skipped += 1
            f.write(f"echo '=== tutorial block {n} ({info}): SKIPPED, clients/python is not in this repository yet'\n")
            continue
        run.append(n)
        f.write(f"echo '=== tutorial block {n} ({info})'\n")
        f.write(text)
    f.write("echo '=== tutorial: every block ran'\n")
print(f"run-tutorial: {len(run)} sh blocks to run, {skipped} skipped (python client missing)", file=sys.stderr)
PY

queues_before=$(rabbitmqctl list_queues -q name 2>/dev/null | sort)
exchanges_before=$(rabbitmqctl list_exchanges -q name 2>/dev/null | sort)
venv_before=no
[ -e .venv ] && venv_before=yes

cleanup() {
  set +e
  if [ -n "${pgid:-}" ] && kill -0 -- "-$pgid" 2>/dev/null; then
    kill -- "-$pgid" 2>/dev/null
    sleep 2
    kill -9 -- "-$pgid" 2>/dev/null
  fi
  psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS kycq_sandbox WITH (FORCE)" >/dev/null 2>&1
  local q x
  for q in $(comm -13 <(echo "$queues_before") <(rabbitmqctl list_queues -q name 2>/dev/null | sort)); do
    case "$q" in
      kyc.*|kycq.*|kycq-*) rabbitmqctl delete_queue "$q" >/dev/null 2>&1 && echo "run-tutorial: deleted queue $q" ;;
    esac
  done
  for x in $(comm -13 <(echo "$exchanges_before") <(rabbitmqctl list_exchanges -q name 2>/dev/null | sort)); do
    case "$x" in
      kyc.*)
        if rabbitmqctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"run-tutorial\">>)." >/dev/null 2>&1; then
          echo "run-tutorial: deleted exchange $x"
        else
          echo "run-tutorial: could not delete exchange $x: delete it by hand"
        fi ;;
    esac
  done
  [ "$venv_before" = no ] && rm -rf "$root/.venv"
  rm -f /tmp/kycq-sandbox.log /tmp/kycq-worker.log
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Its own process group (setsid), so that cleanup can stop whatever it left running.
setsid timeout "${TUTORIAL_TIMEOUT:-900}" bash "$script" &
pgid=$!
wait "$pgid"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "run-tutorial: FAILED (exit code $rc); the worker's and the sandbox's logs:"
  tail -n 30 /tmp/kycq-worker.log /tmp/kycq-sandbox.log 2>/dev/null
fi
if [ "$have_python_client" = no ]; then
  echo "run-tutorial: the Python part was skipped: clients/python is not in this repository"
fi
exit "$rc"
