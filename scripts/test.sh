#!/usr/bin/env bash
# The project's test command (README, CI): pinned tools, formatting, lints, the deployment files'
# validators (hadolint, docker-compose config, systemd-analyze verify), then every test. The
# end-to-end tests run the real Claude Code CLI and real MCP servers against local stand-ins.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tools-only
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
scripts/validate-deploy.sh
cargo test --locked "$@"
