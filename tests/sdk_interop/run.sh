#!/usr/bin/env bash
# Points the vendors' official Python SDKs (Alibaba cloudauth-intl, Tencent faceid) at
# `kycq sandbox` and checks every answer they parse. Usage: run.sh [path/to/kycq]
# (default: `cargo run --quiet --`). Needs python3 with venv and access to PyPI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [[ $# -ge 1 ]]; then
    kycq=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")")
else
    cargo build --quiet --bin kycq
    kycq=(cargo run --quiet --bin kycq --)
fi

venv="${KYCQ_SDK_VENV:-$root/target/sdk-interop-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    alibabacloud-cloudauth-intl20220809==3.23.1 tencentcloud-sdk-python-faceid==3.1.179

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"${kycq[@]}" sandbox --listen "127.0.0.1:$port" >"$log" 2>&1 &
sandbox_pid=$!

stop_sandbox() {
    kill "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
    rm -f "$log"
}
trap stop_sandbox EXIT

for _ in $(seq 1 300); do
    if ! kill -0 "$sandbox_pid" 2>/dev/null; then
        echo "kycq sandbox exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

if ! "$venv/bin/python" "$here/interop.py" --port "$port"; then
    echo "--- sandbox log ---" >&2
    cat "$log" >&2
    exit 1
fi
