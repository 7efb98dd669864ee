#!/usr/bin/env bash
# Install the pinned Claude Code versions from npm side by side into
# <repo>/.tools/claude-<version>/ for the e2e tests; prints one binary path per line.
# CLAUDE_CODE_VERSIONS (space-separated) picks the versions; by default the ones the e2e
# tests run against (PINNED_VERSIONS in tests/e2e/harness.py, the one list of them).
# CLAUDE_CODE_VERSION (one version) still works.
# Idempotent: a version already there is not installed again. Needs only the npm registry.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINNED="$(sed -n 's/^PINNED_VERSIONS = (\(.*\))$/\1/p' "$REPO/tests/e2e/harness.py" | tr -d '",')"
VERSIONS="${CLAUDE_CODE_VERSIONS:-${CLAUDE_CODE_VERSION:-$PINNED}}"
[ -n "$VERSIONS" ] || { echo "install-claude: no versions (PINNED_VERSIONS not found)" >&2; exit 1; }

installed_version() {
    "$1" --version 2>/dev/null | awk 'NR == 1 {print $1}' || true
}

install_one() {
    local version="$1"
    local prefix="$REPO/.tools/claude-$version"
    local pkg_dir="$prefix/node_modules/@anthropic-ai/claude-code"
    local bin="$prefix/node_modules/.bin/claude"
    if [ -x "$bin" ] && [ "$(installed_version "$bin")" = "$version" ]; then
        echo "$bin"
        return 0
    fi
    command -v npm >/dev/null || { echo "install-claude: npm not found on PATH" >&2; exit 1; }
    command -v node >/dev/null || { echo "install-claude: node not found on PATH" >&2; exit 1; }
    grep -qxF '.tools/' "$REPO/.gitignore" 2>/dev/null || echo '.tools/' >> "$REPO/.gitignore"
    mkdir -p "$prefix"
    # The package is a stub plus a postinstall (install.cjs) that hard-links the native binary
    # from the platform package (@anthropic-ai/claude-code-linux-x64 etc., an optional
    # dependency fetched from npm) over bin/claude.exe. No download outside npm happens.
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$version" >&2
    if [ "$(installed_version "$bin")" != "$version" ]; then
        # Install scripts were skipped (ignore-scripts / allowScripts): place the binary ourselves.
        (cd "$pkg_dir" && node install.cjs) >&2
    fi
    local got
    got="$(installed_version "$bin")"
    if [ "$got" != "$version" ]; then
        echo "install-claude: $bin reports '${got:-nothing}', expected $version" >&2
        exit 1
    fi
    echo "$bin"
}

for version in $VERSIONS; do
    install_one "$version"
done
