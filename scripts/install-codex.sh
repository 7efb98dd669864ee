#!/usr/bin/env bash
# Install the pinned Codex CLI versions from npm side by side into
# <repo>/.tools/codex-<version>/ for the e2e tests; prints one binary path per line.
# CODEX_VERSIONS (space-separated) picks the versions; by default the ones the codex e2e
# tests run against (CODEX_PINNED in tests/e2e/test_codex_moves_e2e.py).
# Idempotent: a version already there is not installed again. Needs only the npm registry.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINNED="$(sed -n 's/^CODEX_PINNED = (\(.*\))$/\1/p' "$REPO/tests/e2e/test_codex_moves_e2e.py" 2>/dev/null | tr -d '",' || true)"
VERSIONS="${CODEX_VERSIONS:-${PINNED:-0.169.0}}"

installed_version() {
    "$1" --version 2>/dev/null | awk 'NR == 1 {print $2}' || true
}

install_one() {
    local version="$1"
    local prefix="$REPO/.tools/codex-$version"
    local bin="$prefix/node_modules/.bin/codex"
    if [ -x "$bin" ] && [ "$(installed_version "$bin")" = "$version" ]; then
        echo "$bin"
        return 0
    fi
    command -v npm >/dev/null || { echo "install-codex: npm not found on PATH" >&2; exit 1; }
    command -v node >/dev/null || { echo "install-codex: node not found on PATH" >&2; exit 1; }
    grep -qxF '.tools/' "$REPO/.gitignore" 2>/dev/null || echo '.tools/' >> "$REPO/.gitignore"
    mkdir -p "$prefix"
    # The package is a node launcher plus the native binary of this platform (an optional
    # dependency, @openai/codex-linux-x64 etc., fetched from npm). No download outside npm.
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "@openai/codex@$version" >&2
    local got
    got="$(installed_version "$bin")"
    if [ "$got" != "$version" ]; then
        echo "install-codex: $bin reports '${got:-nothing}', expected $version" >&2
        exit 1
    fi
    echo "$bin"
}

for version in $VERSIONS; do
    install_one "$version"
done
