#!/usr/bin/env bash
# Both container tests, on one engine: the Docker image (test-docker.sh, which builds it) and the
# systemd unit (test-systemd.sh, which uses that image's binary). Starts the engine if none runs and
# stops it at the end. scripts/test.sh runs this unless MCP_WORKERS_SKIP_CONTAINER_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/container/engine.sh
source scripts/container/engine.sh
trap engine_down EXIT
engine_up
rc=0
scripts/container/test-docker.sh || rc=1
if [ "$rc" = 0 ]; then scripts/container/test-systemd.sh || rc=1; else
  echo "systemd-test: not run (the image did not pass)" >&2
fi
exit "$rc"
