"""End-to-end tests that run the real Claude Code CLI against a fake model server."""
