#!/usr/bin/env bash
# Install the pinned Claude Code versions from npm side by side into
# <repo>/.tools/claude-<version>/ for the e2e tests; prints one binary path per line.
# CLAUDE_CODE_VERSIONS (space-separated) picks the versions; by default the ones the e2e
# tests run against (PINNED_VERSIONS in tests/e2e/harness.py, the one list of them).
# CLAUDE_CODE_VERSION (one version) still works. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/npm-cli.sh"

PINNED="$(sed -n 's/^PINNED_VERSIONS = (\(.*\))$/\1/p' "$REPO/tests/e2e/harness.py" | tr -d '",')"
VERSIONS="${CLAUDE_CODE_VERSIONS:-${CLAUDE_CODE_VERSION:-$PINNED}}"
[ -n "$VERSIONS" ] || { echo "install-claude: no versions (PINNED_VERSIONS not found)" >&2; exit 1; }

# The package is a stub plus a postinstall (install.cjs) that hard-links the native binary
# from the platform package (@anthropic-ai/claude-code-linux-x64 etc.) over bin/claude.exe.
for version in $VERSIONS; do
    install_npm_cli claude @anthropic-ai/claude-code "$version" claude 1 @anthropic-ai/claude-code
done
