#!/usr/bin/env bash
# Install Claude Code from npm into <repo>/.tools/claude for the e2e tests; prints the binary path.
# Idempotent: does nothing when that version is already there. Needs only the npm registry.
set -euo pipefail

VERSION="${CLAUDE_CODE_VERSION:-2.1.197}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.tools/claude"
PKG_DIR="$PREFIX/node_modules/@anthropic-ai/claude-code"
BIN="$PREFIX/node_modules/.bin/claude"

installed_version() {
    "$BIN" --version 2>/dev/null | awk 'NR == 1 {print $1}' || true
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi

command -v npm >/dev/null || { echo "install-claude: npm not found on PATH" >&2; exit 1; }
command -v node >/dev/null || { echo "install-claude: node not found on PATH" >&2; exit 1; }

grep -qxF '.tools/' "$REPO/.gitignore" 2>/dev/null || echo '.tools/' >> "$REPO/.gitignore"
mkdir -p "$PREFIX"
# The package is a stub plus a postinstall (install.cjs) that hard-links the native binary
# from the platform package (@anthropic-ai/claude-code-linux-x64 etc., an optional
# dependency fetched from npm) over bin/claude.exe. No download outside npm happens.
npm install --prefix "$PREFIX" --save-exact --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$VERSION" >&2

if [ "$(installed_version)" != "$VERSION" ]; then
    # Install scripts were skipped (ignore-scripts / allowScripts): place the binary ourselves.
    (cd "$PKG_DIR" && node install.cjs) >&2
fi

got="$(installed_version)"
if [ "$got" != "$VERSION" ]; then
    echo "install-claude: $BIN reports '${got:-nothing}', expected $VERSION" >&2
    exit 1
fi
echo "$BIN"
