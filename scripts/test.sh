#!/usr/bin/env bash
# The project's test command (README, CI): pinned tools, formatting, lints, the deployment files'
# validators (hadolint, docker-compose config, systemd-analyze verify), then every test. The
# end-to-end tests run the real Claude Code CLI and real MCP servers against local stand-ins; the
# store's tests run on SQLite and on a real PostgreSQL (scripts/postgres.sh starts it).
# Then the container tests (scripts/container/): the Docker image and the systemd unit, built and
# run for real. They need root, and install and start a container engine when none runs (stopping
# it again); MCP_WORKERS_SKIP_CONTAINER_TESTS=1 skips them. CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tools-only
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
scripts/validate-deploy.sh
# The store's PostgreSQL backend is tested on a real server (started here if it is not running).
scripts/postgres.sh
cargo test --locked "$@"
if [ "${MCP_WORKERS_SKIP_CONTAINER_TESTS:-}" = 1 ]; then
  echo "container tests skipped (MCP_WORKERS_SKIP_CONTAINER_TESTS=1)"
else
  scripts/container/tests.sh
fi
