#!/usr/bin/env bash
# Run the whole test suite: lint, types, unit, CLI, peer, relay and end-to-end tests
# (the real Claude Code CLI, every version of CLAUDE_CODE_VERSIONS or of the harness's pins,
# installed into .tools/claude-<version>/ on first use, against a fake model server).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "no .venv: run the README's install command first" >&2
    exit 1
fi
bash scripts/install-claude.sh >/dev/null
bash scripts/install-codex.sh >/dev/null
bash scripts/install-gemini.sh >/dev/null
"$PY" -m ruff check commuter tests benchmarks
"$PY" -m ruff format --check commuter tests benchmarks
"$PY" -m mypy commuter
# Tests and benchmarks: the same config, relaxed for test code (unannotated tests and fixtures
# are fine, their bodies are still checked). tests/ is no package: each file is a top-level
# module (test_bundle, conftest, peerhelp, e2e.harness, ...), found as pytest finds it.
"$PY" -m mypy --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls \
    --no-warn-return-any --check-untyped-defs tests benchmarks
exec "$PY" -m pytest "$@"
