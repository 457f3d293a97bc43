#!/usr/bin/env bash
# Installs everything mcp-workers and its tests need, pinned, into ./.tools, then builds the daemon.
# Idempotent: a second run only checks. `--tools-only` skips the build. Needs: cargo, node >= 20 with npm, python3 >= 3.10.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools

# Pinned versions (bump deliberately; see ../shared/reference/claude-code-cli.md for what was measured).
CLAUDE_CODE_VERSION=2.1.197
SERVER_FILESYSTEM_VERSION=2026.8.31
MCP_SERVER_FETCH_VERSION=2026.10.24
PYTHON_MCP_VERSION=2.3.0

say() { printf 'setup: %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing $1: $2"; exit 1; }; }
need cargo "install Rust (https://rustup.rs)"
need node "install Node.js 20 or newer"
need npm "install npm"
need python3 "install Python 3.10 or newer"

mkdir -p "$TOOLS"
stamp_npm="claude-code@$CLAUDE_CODE_VERSION server-filesystem@$SERVER_FILESYSTEM_VERSION"
if [ "$(cat "$TOOLS/.npm-stamp" 2>/dev/null)" != "$stamp_npm" ] || [ ! -x "$TOOLS/node_modules/.bin/claude" ]; then
  say "installing the Claude Code CLI $CLAUDE_CODE_VERSION and server-filesystem $SERVER_FILESYSTEM_VERSION (npm)"
  cat > "$TOOLS/package.json" <<JSON
{ "name": "mcp-workers-tools", "private": true,
  "dependencies": {
    "@anthropic-ai/claude-code": "$CLAUDE_CODE_VERSION",
    "@modelcontextprotocol/server-filesystem": "$SERVER_FILESYSTEM_VERSION"
  } }
JSON
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error >&2
  echo "$stamp_npm" > "$TOOLS/.npm-stamp"
fi
"$TOOLS/node_modules/.bin/claude" --version >/dev/null

stamp_py="mcp-server-fetch==$MCP_SERVER_FETCH_VERSION mcp==$PYTHON_MCP_VERSION"
if [ "$(cat "$TOOLS/.py-stamp" 2>/dev/null)" != "$stamp_py" ] || [ ! -x "$TOOLS/venv/bin/python" ]; then
  say "installing mcp-server-fetch $MCP_SERVER_FETCH_VERSION and the Python MCP SDK $PYTHON_MCP_VERSION (PyPI)"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
    "mcp-server-fetch==$MCP_SERVER_FETCH_VERSION" "mcp==$PYTHON_MCP_VERSION" >&2
  echo "$stamp_py" > "$TOOLS/.py-stamp"
fi
# mcp-server-fetch simplifies HTML with readabilipy, which runs `npm install` inside its own package
# on the first fetch when node is on PATH (and again on every fetch if that fails offline). Do it
# once here, so a worker never runs npm.
READABILIPY_JS=$("$TOOLS/venv/bin/python" -c 'import os, readabilipy; print(os.path.join(os.path.dirname(readabilipy.__file__), "javascript"))')
if [ ! -d "$READABILIPY_JS/node_modules" ]; then
  say "installing readabilipy's Node helpers for mcp-server-fetch (npm)"
  (cd "$READABILIPY_JS" && npm install --no-audit --no-fund --loglevel=error >&2)
fi

# Stable names for the registry: .tools/bin holds what .claude/mcp_servers.json runs.
mkdir -p "$TOOLS/bin"
ln -sf ../node_modules/.bin/claude "$TOOLS/bin/claude"
ln -sf ../node_modules/.bin/mcp-server-filesystem "$TOOLS/bin/mcp-server-filesystem"
ln -sf ../venv/bin/mcp-server-fetch "$TOOLS/bin/mcp-server-fetch"

if [ "${1:-}" = "--tools-only" ]; then
  say "tools ready in $TOOLS/bin"
  exit 0
fi
say "building mcp-workers (release)"
cargo build --release --quiet
say "ready: $ROOT/target/release/mcp-workers, tools in $TOOLS/bin"
