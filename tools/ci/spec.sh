#!/usr/bin/env bash
# The published contract (spec/asyncapi.yaml and spec/schemas/*.json) parsed by the AsyncAPI
# project's own parser, at the exact version pinned in tools/spec/package-lock.json. Fails on any
# error (and on warnings: see tools/spec/validate.mjs). The Rust side of the contract (schemas vs
# types, every example, every message the integration tests see) is `cargo test --test api schema`
# and the rest of the test suite. Needs Node.js 18+ and npm.
set -euo pipefail
cd "$(dirname "$0")/../spec"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tools/ci/spec.sh needs node and npm (Node.js 18 or later)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
node validate.mjs ../../spec/asyncapi.yaml
