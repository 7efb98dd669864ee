#!/usr/bin/env bash
# Install the pinned Gemini CLI from npm into <repo>/.tools/gemini-<version>/ for the e2e
# tests; prints the binary's path. GEMINI_CLI_VERSION picks the version (default: the one
# the e2e tests pin, GEMINI_VERSION in tests/e2e/test_gemini_moves_e2e.py).
# Idempotent: a version already there is not installed again. Needs only the npm registry.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINNED="$(sed -n 's/^GEMINI_VERSION = "\(.*\)"$/\1/p' "$REPO/tests/e2e/test_gemini_moves_e2e.py" 2>/dev/null || true)"
VERSION="${GEMINI_CLI_VERSION:-${PINNED:-0.61.0}}"
PREFIX="$REPO/.tools/gemini-$VERSION"
BIN="$PREFIX/node_modules/.bin/gemini"

installed_version() {
    "$1" --version 2>/dev/null | awk 'NR == 1 {print $1}' || true
}

if [ -x "$BIN" ] && [ "$(installed_version "$BIN")" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi
command -v npm >/dev/null || { echo "install-gemini: npm not found on PATH" >&2; exit 1; }
grep -qxF '.tools/' "$REPO/.gitignore" 2>/dev/null || echo '.tools/' >> "$REPO/.gitignore"
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --save-exact --no-audit --no-fund --loglevel=error \
    "@google/gemini-cli@$VERSION" >&2
got="$(installed_version "$BIN")"
if [ "$got" != "$VERSION" ]; then
    echo "install-gemini: $BIN reports '${got:-nothing}', expected $VERSION" >&2
    exit 1
fi
echo "$BIN"
