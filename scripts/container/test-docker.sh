#!/usr/bin/env bash
# The Docker image, built and run as a user would (issue 14). Starts the engine if none runs (and
# stops it again), makes the local base images (cached), builds the image from the Dockerfile
# (cached by the engine's layer cache), then checks:
#
#   image    non-root user, tini as the entrypoint, no secret in its environment, its history or
#            its layers (a canary .env in the build context must stay out of them)
#   serve    /healthz from the host on a loopback-published port, the HEALTHCHECK turns healthy,
#            the API refuses a request without the token, one action through
#            POST /v1/actions?wait=true ends in a worker_result from the real CLI and the real
#            filesystem server (the file it wrote is in the workspace volume), tini is PID 1
#   stop     `docker stop` with a worker running: exit 0 within the stop timeout, and after a
#            restart on the same volume the journal holds the worker's `shutdown` result
#   run      `docker run -i ... run` with two action lines on stdin: one worker_result each
#   check    `check` lists the bundled servers (filesystem, fetch, queue) ok
#   compose  `docker-compose up -d` with the real compose.yaml turns healthy; `down` stops it
#            with exit 0 within its stop_grace_period
#
# The stand-in model (examples/stand_in_model.rs) runs in a container of its own; the daemon's
# containers share its network namespace and reach it on their loopback. Nothing is published
# beyond the host's loopback and nothing the containers send leaves their bridge (lib.sh).
# Prints one line per check and ends with "container-test: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
CT_NAME=container-test
# shellcheck source=scripts/container/lib.sh
source scripts/container/lib.sh

IMAGE=mcp-workers:local
P=mcpw-test
SECRET_NAMES='ANTHROPIC_API_KEY|MCP_WORKERS_API_TOKEN|TELEGRAM_BOT_TOKEN'

engine_up
S=$(mktemp -d)
at_exit "rm -rf $S"
scripts/container/base-images.sh

# --- the image ------------------------------------------------------------------------------
# A canary secret in a .env in the build context (where users keep theirs): it must not reach a
# layer. Only when there is no .env already: a user's own is left alone (and that check skipped).
TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
canary=
CANARY_MARK='# canary of scripts/container/test-docker.sh: not a real secret'
# One that a killed run left behind is ours to remove.
if [ "$(head -n 1 .env 2>/dev/null)" = "$CANARY_MARK" ]; then rm -f .env; fi
if [ ! -e .env ]; then
  (umask 077 && printf '%s\nMCP_WORKERS_API_TOKEN=%s\nANTHROPIC_API_KEY=%s\n' "$CANARY_MARK" "$TOKEN" "$TOKEN" > .env)
  at_exit "rm -f '$PWD/.env'"
  canary=1
fi
t=$(now)
# shellcheck disable=SC2046 # the build arguments are words
if docker build -t "$IMAGE" $(scripts/container/base-images.sh --build-args) . > "$S/build.log" 2>&1; then
  pass "docker build ($(elapsed "$t") s)"
else
  tail -n 40 "$S/build.log" >&2
  fail "docker build"
  exit 1
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
cid=$(docker create "$IMAGE")
docker cp "$cid:/usr/local/bin/mcp-workers" "$S/mcp-workers" && docker rm "$cid" > /dev/null
say "image $IMAGE: $((size / 1000000)) MB; the daemon's binary $(($(stat -c %s "$S/mcp-workers") / 1000000)) MB"
# Stripped: no DWARF sections and no symbol table (.debug_gdb_scripts is loaded data and stays).
check "the image's binary is stripped" \
  sh -c "! readelf -SW '$S/mcp-workers' | grep -Eq '\.(debug_(info|line|str|abbrev|ranges|rnglists|loclists|aranges)|symtab) '"
check "runs as uid 10001" test "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = 10001:10001
check "tini is the entrypoint" test "$(docker image inspect -f '{{index .Config.Entrypoint 0}}' "$IMAGE")" = /usr/bin/tini
check "no secret in the image's environment" \
  sh -c "! docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' $IMAGE | grep -Eq '^($SECRET_NAMES)='"
check "no secret set in the image's history" \
  sh -c "! docker history --no-trunc --format '{{.CreatedBy}}' $IMAGE | grep -Eq '($SECRET_NAMES)='"
if [ -n "$canary" ]; then
  found=$(docker save "$IMAGE" | grep -acF "$TOKEN" || true)
  check "the canary secret of .env is in no layer" test "$found" = 0
else
  say "skipped the layer check: a .env exists here, and it is yours"
fi

# --- serve ----------------------------------------------------------------------------------
ct_network "$P-net" mcpwtest0
ct_model "$P-model" "$P-net" 8787
PORT=$(host_port "$P-model" 8787)
ENVF=$S/env
(umask 077 && printf '%s\n' "MCP_WORKERS_API_TOKEN=$TOKEN" "ANTHROPIC_API_KEY=dummy-for-the-stand-in" \
  "ANTHROPIC_BASE_URL=$MODEL_URL" "MCP_WORKERS_SHUTDOWN_GRACE=3s" > "$ENVF")
(umask 077 && printf 'Authorization: Bearer %s\n' "$TOKEN" > "$S/auth")
api() { curl -sS -m 120 -H @"$S/auth" -H 'content-type: application/json' "$@"; }
url() { printf 'http://127.0.0.1:%s%s' "$PORT" "$1"; }
docker rm -f "$P-serve" > /dev/null 2>&1 || true   # left by a run that was killed
for v in data ws; do docker volume rm -f "$P-$v" > /dev/null 2>&1 || true; at_exit "docker volume rm -f $P-$v"; done
health() { test "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy; }

t=$(now)
docker run -d --name "$P-serve" --network "container:$P-model" --env-file "$ENVF" --stop-timeout 30 \
  --health-interval 1s -v "$P-data:/var/lib/mcp-workers" -v "$P-ws:/app/workspace" "$IMAGE" > /dev/null
at_exit "docker rm -f $P-serve"
if wait_until 30 curl -fsS "$(url /healthz)"; then pass "/healthz from the host $(elapsed "$t") s after docker run"; else
  fail "/healthz from the host"; docker logs "$P-serve" 2>&1 | tail -n 20 >&2; fi
if wait_until 60 health "$P-serve"; then pass "HEALTHCHECK healthy $(elapsed "$t") s after docker run (--health-interval 1s)"; else
  fail "HEALTHCHECK healthy"; fi
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$(url /v1/actions)" -d '{"actions":[]}')
check "the API refuses a request without the token (HTTP $code)" test "$code" = 401
check "PID 1 is tini" test "$(docker exec "$P-serve" cat /proc/1/comm)" = tini
check "tini and the daemon run as uid 10001" \
  sh -c "docker exec $P-serve sh -c 'grep -h ^Uid: /proc/[0-9]*/status' | awk '\$2 != 10001 { bad = 1 } END { exit bad }'"

t=$(now)
out=$(api -XPOST "$(url '/v1/actions?wait=true')" -d '{"actions":[{"type":"spawn_worker","taskId":"c1",
  "task":"Write '"'written in the container'"' to /app/workspace/from-container.txt","servers":["filesystem"]}]}')
result=$(json_get "$out" '.results[0]')
if [ "$(json_get "$result" '.type + " " + (.success|tostring)')" = "worker_result true" ]; then
  pass "one action through POST /v1/actions?wait=true: a successful worker_result ($(elapsed "$t") s)"
else
  fail "one action through POST /v1/actions?wait=true: $out"
fi
check "the filesystem server wrote the file in the workspace volume" \
  test "$(docker exec "$P-serve" cat /app/workspace/from-container.txt 2>/dev/null)" = "written in the container"

# --- docker stop with a worker running ----------------------------------------------------------
api -XPOST "$(url /v1/actions)" -d '{"actions":[{"type":"spawn_worker","taskId":"hold1",
  "task":"Hold until stopped","servers":["filesystem"],"timeout":300000}]}' > /dev/null
running() { test "$(api "$(url /v1/tasks/hold1)" | jq -r .state)" = running; }
check "a worker is running" wait_until 30 running
t=$(now)
docker stop -t 30 "$P-serve" > /dev/null
took=$(elapsed "$t")
check "docker stop with a worker running: exit $(docker inspect -f '{{.State.ExitCode}}' "$P-serve") in $took s (stop timeout 30 s)" \
  sh -c "test $(docker inspect -f '{{.State.ExitCode}}' "$P-serve") = 0 && awk 'BEGIN { exit !($took < 30) }'"
docker start "$P-serve" > /dev/null
wait_until 30 curl -fsS "$(url /healthz)" || true
kind=$(api "$(url /v1/tasks/hold1)" | jq -r '.result.error.kind // "none"')
check "after a restart on the same volume the journal holds the worker's result: $kind" test "$kind" = shutdown

# --- run: action lines on stdin -----------------------------------------------------------------
t=$(now)
printf '%s\n' '{"actions":[{"type":"spawn_worker","taskId":"r1","task":"Say hello","servers":["filesystem"]}]}' \
  '{"actions":[{"type":"spawn_worker","taskId":"r2","task":"Say hello again","servers":["filesystem"]}]}' |
  docker run -i --rm --no-healthcheck --network "container:$P-model" --env-file "$ENVF" "$IMAGE" run \
    > "$S/run.out" 2> "$S/run.err" || true
ids=$(jq -r 'select(.type == "worker_result") | .taskId' "$S/run.out" | sort | tr '\n' ' ')
check "docker run -i ... run: one worker_result per action line (${ids}in $(elapsed "$t") s)" test "$ids" = "r1 r2 "

# --- check --------------------------------------------------------------------------------------
docker run --rm --no-healthcheck --network none "$IMAGE" check --json filesystem fetch queue > "$S/check.json" 2>&1 || true
oks=$(jq -r '.servers[] | select(.status == "ok") | .name' "$S/check.json" 2>/dev/null | sort | tr '\n' ' ')
check "check lists the bundled servers ok: $oks" test "$oks" = "fetch filesystem queue "

# --- docker-compose -----------------------------------------------------------------------------
C=$S/compose
mkdir "$C"
cp -r compose.yaml .claude profiles "$C/"
(umask 077 && printf 'MCP_WORKERS_API_TOKEN=%s\nANTHROPIC_API_KEY=dummy-for-the-stand-in\n' "$TOKEN" > "$C/.env")
# Only what the test needs on top of the real file: a quick health interval, volumes and a bridge
# of the test's own.
cat > "$C/compose.test.yaml" <<'YAML'
services:
  mcp-workers:
    healthcheck:
      interval: 1s
networks:
  default:
    driver_opts:
      com.docker.network.bridge.name: mcpwcompose0
volumes:
  data:
    name: mcpw-test-compose-data
  workspace:
    name: mcpw-test-compose-workspace
YAML
compose() { (cd "$C" && docker-compose -p "$P" -f compose.yaml -f compose.test.yaml "$@"); }
ct_drop_forwarding mcpwcompose0
at_exit "(cd '$C' && docker-compose -p $P -f compose.yaml -f compose.test.yaml down -v -t 5)"
compose down -v -t 5 > /dev/null 2>&1 || true   # left by a run that was killed
if curl -s -m 1 -o /dev/null http://127.0.0.1:8787/; then
  fail "docker-compose: 127.0.0.1:8787 (compose.yaml's port) is taken on this machine"
else
  t=$(now)
  compose up -d > "$S/compose.log" 2>&1 || { tail -n 20 "$S/compose.log" >&2; fail "docker-compose up -d"; }
  cid=$(compose ps -q mcp-workers)
  if [ -n "$cid" ] && wait_until 60 health "$cid"; then pass "docker-compose up -d: healthy in $(elapsed "$t") s"; else
    fail "docker-compose up -d: healthy"; fi
  check "compose: /healthz on the host's 127.0.0.1:8787" curl -fsS -o /dev/null http://127.0.0.1:8787/healthz
  check "compose: capabilities dropped, no-new-privileges" \
    sh -c "docker inspect -f '{{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' $cid | grep -q 'ALL.*no-new-privileges'"
  since=$(date +%s)
  t=$(now)
  compose down > "$S/compose.log" 2>&1 || true
  took=$(elapsed "$t")
  codes=$(docker events --since "$since" --until "$(($(date +%s) + 1))" --filter "container=$cid" \
    --filter event=die --format '{{.Actor.Attributes.exitCode}}')
  check "docker-compose down: the daemon exited ${codes:-?} in $took s (stop_grace_period 30 s)" \
    sh -c "test '$codes' = 0 && awk 'BEGIN { exit !($took < 30) }'"
fi
