#!/usr/bin/env bash
# Install the pinned Gemini CLI from npm into <repo>/.tools/gemini-<version>/ for the e2e
# tests; prints the binary's path. GEMINI_CLI_VERSION picks the version (default: the one
# the e2e tests pin, GEMINI_VERSION in tests/e2e/test_gemini_moves_e2e.py). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/npm-cli.sh"

PINNED="$(sed -n 's/^GEMINI_VERSION = "\(.*\)"$/\1/p' "$REPO/tests/e2e/test_gemini_moves_e2e.py" 2>/dev/null || true)"
install_npm_cli gemini @google/gemini-cli "${GEMINI_CLI_VERSION:-${PINNED:-0.61.0}}" gemini 1
