#!/usr/bin/env bash
# Writes build/hot-functions.order: the functions the stdio servers run, which build.rs has the
# linker place together at the start of the binary's code (see build.rs; BENCHMARKS.md, issue 13).
#
#   scripts/hot-functions.sh           # build, record, write the list (a few minutes: valgrind)
#   scripts/hot-functions.sh --check   # how many listed functions the current release binary has
#
# The record: `mcp queue` (handshake, tools/list, worker_create, full worker_poll/worker_submit
# cycles on demo tasks) and `mcp telegram` (handshake, tools/list, tg_get_chat) run under
# `valgrind --tool=callgrind`; every function of the binary that ran is listed, by mangled name,
# the costliest first. Symbol names carry hashes of their crates' build settings, which differ
# between `cargo build --release` and the binary `cargo bench` builds (dev-dependencies turn on
# more features), so both builds are recorded and the list holds the union. Run it again after a
# dependency upgrade (--check tells how much of the list still matches).
set -euo pipefail
cd "$(dirname "$0")/.."
order=build/hot-functions.order
bin=target/release/mcp-workers

present() {  # listed names present in the binary's symbol table, of all listed
  local have listed
  listed=$(grep -cv '^#' "$order" || true)
  have=$(nm --defined-only "$bin" | awk '{print $3}' | sort -u | comm -12 - <(grep -v '^#' "$order" | sort -u) | wc -l)
  echo "$have of $listed listed functions are in $bin"
}

if [ "${1:-}" = "--check" ]; then
  present
  exit 0
fi

command -v valgrind >/dev/null || { echo "hot-functions: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

record() {  # record BINARY: prints the callgrind profiles of its sessions (scripts/callgrind_stdio.py)
  python3 scripts/callgrind_stdio.py record "$1" "$work"
}

names() {  # names PROFILE-OUTPUT: the binary's functions that ran, costliest first
  local abs
  abs=$(realpath "$bin")
  callgrind_annotate --threshold=100 "$1" 2>/dev/null | grep -F " [$abs]" \
    | sed -nE 's/^ *[0-9,]+ \([ 0-9.]+%\)  \?\?\?:([^ ]+) \[.*$/\1/p'
}

: > "$work/names"
echo "hot-functions: the cargo bench build" >&2
cargo bench --locked --no-run --bench mcp_stdio >&2
for out in $(record "$(realpath "$bin")"); do names "$out" >> "$work/names"; done
echo "hot-functions: the release build" >&2
cargo build --locked --release >&2
for out in $(record "$(realpath "$bin")"); do names "$out" >> "$work/names"; done
{
  echo "# Functions the stdio servers run, for the linker (build.rs). Made by scripts/hot-functions.sh; do not edit."
  awk '!seen[$0]++' "$work/names"
} > "$order"
echo "hot-functions: $(grep -cv '^#' "$order") functions in $order" >&2
cargo build --locked --release >&2
present
