#!/usr/bin/env bash
# Install the pinned Codex CLI versions from npm side by side into
# <repo>/.tools/codex-<version>/ for the e2e tests; prints one binary path per line.
# CODEX_VERSIONS (space-separated) picks the versions; by default the ones the codex e2e
# tests run against (CODEX_PINNED in tests/e2e/test_codex_moves_e2e.py). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/npm-cli.sh"

PINNED="$(sed -n 's/^CODEX_PINNED = (\(.*\))$/\1/p' "$REPO/tests/e2e/test_codex_moves_e2e.py" 2>/dev/null | tr -d '",' || true)"
VERSIONS="${CODEX_VERSIONS:-${PINNED:-0.169.0}}"

# `codex --version` prints "codex-cli 0.169.0": the version is the second word.
for version in $VERSIONS; do
    install_npm_cli codex @openai/codex "$version" codex 2
done
