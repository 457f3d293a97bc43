#!/usr/bin/env bash
# Sets up mcp-workers and runs one spawn_worker action through the real Claude Code CLI and the
# real filesystem MCP server. With ANTHROPIC_API_KEY set, a real model does the work; without it,
# a local stand-in model (examples/stand_in_model.rs) plays the model so the pipeline can be seen.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

stand_in_pid=
cleanup() { [ -n "$stand_in_pid" ] && kill "$stand_in_pid" 2>/dev/null; true; }
trap cleanup EXIT
if [ -z "${ANTHROPIC_API_KEY:-}" ] && [ -z "${ANTHROPIC_AUTH_TOKEN:-}" ]; then
  echo "demo: ANTHROPIC_API_KEY is not set; using the local stand-in model" >&2
  cargo build --release --quiet --example stand_in_model
  fifo=$(mktemp -u) && mkfifo "$fifo"
  target/release/examples/stand_in_model > "$fifo" &
  stand_in_pid=$!
  read -r line < "$fifo" && rm -f "$fifo"
  export "${line?}" ANTHROPIC_API_KEY=stand-in
fi

mkdir -p workspace
target="$PWD/workspace/hello.txt"
printf '{"actions":[{"type":"spawn_worker","taskId":"demo-1","task":"Write '"'"'Hello from an mcp-workers worker'"'"' to %s","servers":["filesystem"],"timeout":60000}]}\n' "$target" \
  | target/release/mcp-workers run
echo "demo: $target contains: $(cat "$target" 2>/dev/null || echo '(nothing)')" >&2
