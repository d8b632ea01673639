#!/usr/bin/env bash
# The Python client (clients/python): a venv under target/, the package installed with its test
# extra (versions pinned in clients/python/constraints.txt), `mypy --strict`, then pytest against
# a real `kycq worker` and `kycq sandbox` (child processes of the tests) on the local RabbitMQ,
# PostgreSQL and Redis. Run after `cargo build` / `cargo test` (it needs target/debug/kycq, or
# KYCQ_BIN). Needs python3 (>= 3.9) with venv, and PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"

kycq="${KYCQ_BIN:-target/debug/kycq}"
case "$kycq" in /*) ;; *) kycq="$root/$kycq" ;; esac
if [[ ! -x "$kycq" ]]; then
    echo "tools/ci/python.sh: no kycq binary at $kycq: run cargo build (or set KYCQ_BIN)" >&2
    exit 1
fi

python="${PYTHON:-python3}"
venv="${KYCQ_PY_VENV:-$root/target/py-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
constraints="$root/clients/python/constraints.txt"
echo "== installing clients/python[test] into $venv"
"${pip[@]}" install -c "$constraints" "$root/clients/python[test]"
# Always the package as it is in this checkout (same version number as an earlier install).
"${pip[@]}" install --no-deps --force-reinstall "$root/clients/python"

cd "$root/clients/python"
export PYTHONDONTWRITEBYTECODE=1
echo "== mypy --strict (the package and its tests)"
"$venv/bin/mypy" --strict --cache-dir "$root/target/py-mypy-cache" src/kycq tests

echo "== pytest (KYCQ_BIN=$kycq)"
# The tests import the installed package (src/ is not on the path).
KYCQ_BIN="$kycq" "$venv/bin/python" -m pytest -q -o cache_dir="$root/target/py-pytest-cache" tests "$@"
