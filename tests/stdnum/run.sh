#!/usr/bin/env bash
# Cross-checks kycq's resident ID number validation against python-stdnum (`stdnum.cn.ric`) over
# generated numbers, and checks that src/check/regions.rs is what tools/regions/generate.py makes
# of the pinned python-stdnum's data. Usage: run.sh [--count N] [--seed S] [--today YYYY-MM-DD]
# Needs python3 with venv and access to PyPI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${KYCQ_STDNUM_VENV:-$root/target/stdnum-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check python-stdnum==2.2

echo "regions table: regenerating from python-stdnum's data"
if ! diff -u src/check/regions.rs <("$venv/bin/python" tools/regions/generate.py); then
    echo "src/check/regions.rs is not what tools/regions/generate.py makes: regenerate it" >&2
    exit 1
fi

cargo build --quiet --example id_verdicts
"$venv/bin/python" "$here/compare.py" --kycq target/debug/examples/id_verdicts "$@"
