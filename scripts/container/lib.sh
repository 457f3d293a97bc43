# shellcheck shell=bash
# What the container tests share (test-docker.sh and test-systemd.sh source this file): checks
# and their tally, clean-up on exit, a test network that reaches nothing beyond its own
# containers, the stand-in model in a container of its own, and waiting on state.
#
# Traffic: the tests' containers sit on a bridge of their own whose forwarding beyond it is dropped
# (DOCKER-USER), and talk to the stand-in model on the loopback of a network namespace they share
# with it. The host reaches them only through ports published on its own loopback.

# shellcheck source=scripts/container/engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"

CT_NAME=${CT_NAME:-container-test}
CT_PASSED=0
CT_FAILED=0
CT_FAILURES=()
CT_CLEANUPS=()
CT_T0=$(date +%s.%N)

say() { printf '%s: %s\n' "$CT_NAME" "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
now() { date +%s.%N; }

# pass/fail WHAT: tally a check.
pass() { CT_PASSED=$((CT_PASSED + 1)); say "ok: $*"; }
fail() { CT_FAILED=$((CT_FAILED + 1)); CT_FAILURES+=("$*"); say "FAIL: $*"; }
# check WHAT CMD...: run CMD, pass if it succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# at_exit CMD: run CMD (a string) on exit, the last registered first.
at_exit() { CT_CLEANUPS+=("$1"); }
ct_exit() {
  local rc=$? i
  set +e
  for ((i = ${#CT_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CT_CLEANUPS[$i]}" > /dev/null 2>&1; done
  engine_down
  if [ "$rc" != 0 ] && [ "$CT_FAILED" = 0 ]; then CT_FAILED=1; CT_FAILURES+=("stopped early (exit $rc)"); fi
  say "$(elapsed "$CT_T0") s"
  [ "$CT_FAILED" = 0 ] || printf '  - %s\n' "${CT_FAILURES[@]}" >&2
  printf '%s: %d passed, %d failed\n' "$CT_NAME" "$CT_PASSED" "$CT_FAILED"
  [ "$CT_FAILED" = 0 ] || exit 1
  exit 0
}
trap ct_exit EXIT

# wait_until SECONDS CMD...: poll CMD every 0.1 s until it succeeds; fails after SECONDS.
wait_until() {
  local limit=$1 t0
  shift
  t0=$(now)
  until "$@" > /dev/null 2>&1; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then return 1; fi
    sleep 0.1
  done
}

# ct_network NAME IFACE: a bridge network whose traffic cannot leave it (only the host's own
# loopback-published ports reach in). Removed on exit.
ct_network() {
  # Left by a run that was killed: its containers first, then the network.
  docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$1" 2> /dev/null | xargs -r docker rm -f > /dev/null 2>&1 || true
  docker network rm "$1" > /dev/null 2>&1 || true
  docker network create --driver bridge -o "com.docker.network.bridge.name=$2" "$1" > /dev/null
  at_exit "docker network rm $1"
  ct_drop_forwarding "$2"
}
# ct_drop_forwarding IFACE: drop whatever a container on IFACE sends beyond IFACE.
ct_drop_forwarding() {
  while iptables -D DOCKER-USER -i "$1" ! -o "$1" -j DROP 2> /dev/null; do :; done   # a killed run's
  iptables -I DOCKER-USER -i "$1" ! -o "$1" -j DROP
  at_exit "iptables -D DOCKER-USER -i $1 ! -o $1 -j DROP"
}

# ct_model NAME NETWORK PORTS...: the stand-in model (examples/stand_in_model.rs, built on this
# machine: same Debian release as the base image) in a container of its own, NAME, with PORTS
# (container ports) published on the host's loopback. Containers that join its network
# namespace (--network container:NAME) reach it at $MODEL_URL, on their loopback.
ct_model() {
  local name=$1 network=$2 bin
  shift 2
  bin=$(ct_model_binary) || return 1
  local publish=() p
  for p in "$@"; do publish+=(-p "127.0.0.1::$p"); done
  docker rm -f "$name" > /dev/null 2>&1 || true
  docker run -d --name "$name" --network "$network" "${publish[@]}" --init \
    -v "$bin:/usr/local/bin/stand-in-model:ro" mcp-workers-base/debian:bookworm \
    /usr/local/bin/stand-in-model > /dev/null
  at_exit "docker rm -f $name"
  wait_until 30 sh -c "docker logs $name 2>/dev/null | grep -q '^ANTHROPIC_BASE_URL='" || return 1
  MODEL_URL=$(docker logs "$name" 2>/dev/null | sed -n 's/^ANTHROPIC_BASE_URL=//p' | head -n 1)
  say "stand-in model in $name at $MODEL_URL (its loopback)"
}
ct_model_binary() {
  local target=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --quiet --locked --example stand_in_model >&2 || return 1
  printf '%s\n' "$target/debug/examples/stand_in_model"
}

# host_port CONTAINER PORT: the host's loopback port published for PORT.
host_port() { docker port "$1" "$2/tcp" | sed -n 's/^127\.0\.0\.1://p' | head -n 1; }

# json_get JSON FILTER: jq -r FILTER on JSON.
json_get() { jq -r "$2" <<< "$1"; }
