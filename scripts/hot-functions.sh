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

record() {  # record BINARY: appends the functions it ran to $work/names
  python3 - "$1" "$work" <<'PY'
import json, os, subprocess, sys, tempfile
bin_, work = sys.argv[1], sys.argv[2]

def session(args, calls):
    data = tempfile.mkdtemp(dir=work)
    out = os.path.join(work, f"callgrind.{args[1]}.out")
    env = dict(os.environ, MCP_WORKERS_DATA_DIR=data, RUST_LOG="warn")
    env.pop("TELEGRAM_BOT_TOKEN", None)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", bin_] + args,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    ids = iter(range(1, 1 << 30))
    def call(method, params=None):
        msg = {"jsonrpc": "2.0", "id": next(ids), "method": method}
        if params is not None:
            msg["params"] = params
        p.stdin.write((json.dumps(msg) + "\n").encode()); p.stdin.flush()
        reply = json.loads(p.stdout.readline())
        assert "result" in reply, reply
        return reply["result"]
    def tool(name, **arguments):
        text = call("tools/call", {"name": name, "arguments": arguments})["content"][0]["text"]
        try:
            return json.loads(text)
        except ValueError:
            return {"text": text}
    call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hot-functions", "version": "1"}})
    p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); p.stdin.flush()
    call("tools/list")
    calls(tool)
    p.stdin.close()
    p.wait()
    return out

def queue(tool):
    for _ in range(20):
        worker = tool("worker_create")["worker_id"]
    for _ in range(10):
        task = tool("worker_poll", worker_id=worker)
        if "task_id" in task:
            tool("worker_submit", worker_id=worker, task_id=task["task_id"], response="done")

def telegram(tool):
    for _ in range(20):
        tool("tg_get_chat", chat_id="@example")

for args, calls in ((["mcp", "queue", "--demo-tasks", "--demo-interval", "50ms", "--timeout", "5"], queue),
                    (["mcp", "telegram"], telegram)):
    print(session(args, calls))
PY
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
