#!/usr/bin/env bash
# Builds the book (mdBook, pinned) and checks every link: the built HTML's internal links and
# anchors, the relative links of README.md, CONTRIBUTING.md, CHANGELOG.md and clients/**/README.md.
# External links are checked for well-formedness only (CI has no network).
set -euo pipefail
cd "$(dirname "$0")/../.."

MDBOOK_VERSION=0.5.4
if [ "$(mdbook --version 2>/dev/null || true)" != "mdbook v$MDBOOK_VERSION" ]; then
  echo "installing mdbook $MDBOOK_VERSION (found: $(mdbook --version 2>/dev/null || echo none))"
  cargo install mdbook --version "$MDBOOK_VERSION" --locked
fi
rm -rf docs/book
mdbook build docs
python3 tools/docs/linkcheck.py --repo . --book docs/book
