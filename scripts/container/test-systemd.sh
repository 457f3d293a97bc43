#!/usr/bin/env bash
# The systemd unit under a real systemd (issue 15): systemd 252 boots as PID 1 in a container made
# from the local Debian base image, the unit is installed with deploy/systemd/README.md's own
# steps (its shell block, run as written), the daemon is the binary of the Docker image
# (scripts/container/test-docker.sh builds it first), then:
#
#   start     `systemctl start` (the README's `enable --now`) succeeds, the unit is Type=notify and
#             says READY with a status line, /healthz answers, the README's `check` line finds the
#             queue server ok
#   stop      `systemctl stop` with a worker running ends within TimeoutStopSec, nothing is left in
#             the unit's cgroup, and after the next start the journal holds the worker's `shutdown`
#   kill      SIGKILL: systemd restarts the daemon
#   watchdog  SIGSTOP: the watchdog (WatchdogSec=3s in a test drop-in) restarts the daemon
#   broken    a start with a broken registry makes `systemctl start` itself fail
#
# The stand-in model runs in a container of its own, which the systemd container joins (the same
# network namespace: the daemon reaches it on loopback). Ends with "systemd-test: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
CT_NAME=systemd-test
# shellcheck source=scripts/container/lib.sh
source scripts/container/lib.sh

DAEMON_IMAGE=mcp-workers:local
IMAGE=mcp-workers-systemd:test
P=mcpw-sdtest
C=$P-systemd

engine_up
S=$(mktemp -d)
at_exit "rm -rf $S"
scripts/container/base-images.sh
# MCP_WORKERS_TEST_BINARY=target/release/mcp-workers: test that binary instead (built on a system
# with bookworm's glibc or an older one).
BINARY=${MCP_WORKERS_TEST_BINARY:-}
if [ -z "$BINARY" ] && ! docker image inspect "$DAEMON_IMAGE" > /dev/null 2>&1; then
  fail "no $DAEMON_IMAGE: run scripts/container/test-docker.sh first (it builds the image)"
  exit 1
fi

# --- the image: systemd + Node + Python, then the README's steps --------------------------------
# The README's shell block, split at its numbered steps. Step 3 (the tools, from the locks) runs in
# a layer of its own that only the locks invalidate; 1, 2 and 4 in the next; 5 (the unit) at run time.
awk '/^## Steps/ { on = 1 } on && /^```sh/ { inside = 1; next } inside && /^```/ { exit } inside' \
  deploy/systemd/README.md > "$S/steps.sh"
step() { awk -v n="# $1." 'index($0, n) == 1 { on = 1 } on && /^# [0-9]\./ && index($0, n) != 1 { on = 0 } on' "$S/steps.sh"; }
mkdir -p "$S/ctx/src/target/release" "$S/ctx/src/deploy"
for n in 1 2 3 4 5; do
  { echo 'set -euxo pipefail'; echo 'sudo() { "$@"; }'; echo 'sudoedit() { :; }'; step "$n"; } > "$S/ctx/step$n.sh"
  grep -q "^# $n\." "$S/ctx/step$n.sh" || { fail "deploy/systemd/README.md has no step $n"; exit 1; }
done
cp -r .claude profiles .env.example "$S/ctx/src/"
cp -r deploy/docker deploy/systemd "$S/ctx/src/deploy/"
if [ -n "$BINARY" ]; then cp "$BINARY" "$S/ctx/src/target/release/mcp-workers"; else
  cid=$(docker create "$DAEMON_IMAGE")
  docker cp "$cid:/usr/local/bin/mcp-workers" "$S/ctx/src/target/release/mcp-workers"
  docker rm "$cid" > /dev/null
fi
cat > "$S/ctx/Dockerfile" <<DOCKERFILE
FROM mcp-workers-base/debian:bookworm
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd systemd-sysv dbus curl ca-certificates \\
      python3 python3-venv procps jq \\
 && rm -rf /var/lib/apt/lists/* \\
 && systemctl mask getty.target console-getty.service systemd-udevd.service systemd-firstboot.service \\
      systemd-logind.service
COPY --from=mcp-workers-base/node:22-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=mcp-workers-base/node:22-bookworm-slim /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ENV container=docker NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY src/deploy/docker /src/deploy/docker
COPY step3.sh /steps/
RUN bash /steps/step3.sh
COPY src /src
COPY step1.sh step2.sh step4.sh step5.sh /steps/
RUN bash /steps/step1.sh && bash /steps/step2.sh && bash /steps/step4.sh
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
DOCKERFILE
t=$(now)
if docker build -t "$IMAGE" "$S/ctx" > "$S/build.log" 2>&1; then pass "systemd image with the README's steps 1-4 ($(elapsed "$t") s)"; else
  tail -n 40 "$S/build.log" >&2
  fail "systemd image with the README's steps 1-4"
  exit 1
fi

# --- boot -------------------------------------------------------------------------------------
ct_network "$P-net" mcpwsdtest0
ct_model "$P-model" "$P-net"
docker rm -f "$C" > /dev/null 2>&1 || true
# Not --privileged (refused here: the machine's bounding set lacks CAP_SYS_RESOURCE); every other
# capability, so that the unit's sandbox is really applied (see shared/reference).
t=$(now)
docker run -d --name "$C" --network "container:$P-model" --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt systempaths=unconfined --cgroupns=host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock "$IMAGE" > /dev/null
at_exit "docker rm -f $C"
in_c() { docker exec "$C" "$@"; }
booted() { case $(in_c systemctl is-system-running 2>/dev/null) in running | degraded) return 0 ;; esac; return 1; }
if wait_until 60 booted; then pass "systemd booted ($(elapsed "$t") s)"; else
  fail "systemd booted: $(in_c systemctl is-system-running 2>&1)"; exit 1; fi

# The secrets file of step 4 gets the test's settings; a drop-in shortens the watchdog for the test.
printf '%s\n' "ANTHROPIC_API_KEY=dummy-for-the-stand-in" "ANTHROPIC_BASE_URL=$MODEL_URL" \
  "MCP_WORKERS_SHUTDOWN_GRACE=3s" | docker exec -i "$C" sh -c 'umask 077 && cat > /etc/mcp-workers/env'
in_c sh -c 'mkdir -p /etc/systemd/system/mcp-workers.service.d && printf "[Service]\nWatchdogSec=3s\n" \
  > /etc/systemd/system/mcp-workers.service.d/test-watchdog.conf'
prop() { in_c systemctl show -p "$1" --value mcp-workers; }
healthz() { in_c curl -fsS -m 2 -o /dev/null http://127.0.0.1:8787/healthz; }
api() { in_c curl -sS -m 60 -H 'content-type: application/json' "$@"; }

# --- start (step 5) ---------------------------------------------------------------------------
t=$(now)
if in_c bash /steps/step5.sh > "$S/step5.log" 2>&1; then pass "README step 5: systemctl enable --now ($(elapsed "$t") s)"; else
  tail -n 20 "$S/step5.log" >&2; fail "README step 5: systemctl enable --now"; fi
check "the unit is active, Type=$(prop Type)" sh -c "test \"\$(docker exec $C systemctl is-active mcp-workers)\" = active"
check "Type=notify" test "$(prop Type)" = notify
check "/healthz answers once systemctl start returns" healthz
status() { prop StatusText | grep -q "$1"; }
# check_status PATTERN: the unit's status line comes to match PATTERN.
check_status() {
  if wait_until 10 status "$1"; then pass "STATUS= line: '$(prop StatusText)'"; else
    fail "STATUS= line '$(prop StatusText)' does not match '$1'"; fi
}
check_status '^0 running, 0 waiting$'
# Delegate=yes: the daemon's start-up line names the mechanism it picked. On a unified (cgroup v2)
# host that is one child cgroup per worker; on a v1 host delegation gives nothing to write, and it is
# the process tree.
check "Delegate=$(prop Delegate)" test "$(prop Delegate)" = yes
containment=$(in_c journalctl -u mcp-workers -b --no-pager -o cat | grep -F 'containment of worker processes' | tail -n 1)
if [ "$(in_c stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then want='cgroup v2, one child cgroup per worker'; else
  want='process tree'; fi
check "containment ($(in_c stat -fc %T /sys/fs/cgroup)): '${containment:0:120}'" \
  sh -c "printf '%s' \"\$1\" | grep -qF \"\$2\"" _ "$containment" "$want"
# ReadOnlyPaths=/run: in the daemon's mount namespace /run and /run/lock are read-only (the last
# mount at a path is the one on top).
rw_run=$(in_c awk '$5 == "/run" || $5 == "/run/lock" { top[$5] = $6 } END { for (m in top) print m " " top[m] }' \
  "/proc/$(prop MainPID)/mountinfo")
check "/run and /run/lock read-only for the service: $(echo "$rw_run" | tr '\n' ';')" \
  sh -c "[ -n '$rw_run' ] && ! printf '%s\n' '$rw_run' | grep -Eqv ' ro(,|\$)'"
readme_check=$(sed -n '/^sudo systemd-run --pipe --wait/,/check$/p' deploy/systemd/README.md | sed 's/^sudo //; s/\\$//' | tr -d '\n')
in_c sh -c "$readme_check" > "$S/check.out" 2>&1 || true
check "the README's check line: the queue server ok" grep -Eq '^queue +ok ' "$S/check.out"

# --- a worker under the unit's sandbox: the real CLI, Node's server-filesystem ---------------------
out=$(api -XPOST 'http://127.0.0.1:8787/v1/actions?wait=true' -d '{"actions":[{"type":"spawn_worker",
  "taskId":"w1","task":"Write '"'written under systemd'"' to /opt/mcp-workers/workspace/from-systemd.txt",
  "servers":["filesystem"]}]}')
if [ "$(json_get "$out" '.results[0].success')" = true ]; then pass "a worker under the unit: success"; else
  fail "a worker under the unit: $(json_get "$out" '.results[0].error // .')"; fi
check "its filesystem server wrote the file" \
  test "$(in_c cat /opt/mcp-workers/workspace/from-systemd.txt 2>/dev/null)" = "written under systemd"

# --- stop with a worker running -----------------------------------------------------------------
api -XPOST http://127.0.0.1:8787/v1/actions -d '{"actions":[{"type":"spawn_worker","taskId":"hold1",
  "task":"Hold until stopped","servers":["filesystem"],"timeout":300000}]}' > /dev/null
running() { test "$(api http://127.0.0.1:8787/v1/tasks/hold1 | jq -r .state)" = running; }
check "a worker is running under the unit" wait_until 30 running
check_status '^1 running, 0 waiting$'
# The unit's cgroup as the kernel names it (the host's cgroup namespace: see the docker run above).
cg=$(in_c sed -n 's/^[0-9]*:name=systemd://p' "/proc/$(prop MainPID)/cgroup")
n=$(in_c cat "/sys/fs/cgroup/systemd$cg/cgroup.procs" 2>/dev/null | wc -l)
check "the unit's cgroup holds the daemon and its worker ($n processes)" test "$n" -ge 2
t=$(now)
in_c systemctl stop mcp-workers
took=$(elapsed "$t")
check "systemctl stop with a worker running: $took s (TimeoutStopSec $(prop TimeoutStopUSec))" \
  awk "BEGIN { exit !($took < 30) }"
check "the stop was clean: Result=$(prop Result)" test "$(prop Result)" = success
left=$(in_c sh -c "cat /sys/fs/cgroup/systemd$cg/cgroup.procs 2>/dev/null; pgrep -u mcp-workers" || true)
check "nothing left in the unit's cgroup ($cg) or of its user" test -z "$left"
in_c systemctl start mcp-workers
got=$(api http://127.0.0.1:8787/v1/tasks/hold1)
kind=$(json_get "$got" '.result.error.kind // "none"')
if [ "$kind" = shutdown ]; then pass "after the next start the journal holds the worker's result: shutdown"; else
  fail "after the next start the journal holds the worker's result: $(json_get "$got" '.result.error // .')"; fi

# --- SIGKILL ------------------------------------------------------------------------------------
restarted() { # OLD_PID: a new main process that is active and answers
  local pid
  pid=$(prop MainPID)
  [ "$pid" != 0 ] && [ "$pid" != "$1" ] && [ "$(in_c systemctl is-active mcp-workers)" = active ] && healthz
}
check "no restart so far (the watchdog is fed): NRestarts=$(prop NRestarts)" test "$(prop NRestarts)" = 0
pid=$(prop MainPID)
t=$(now)
in_c systemctl kill -s SIGKILL mcp-workers
if wait_until 30 restarted "$pid"; then pass "SIGKILL: restarted in $(elapsed "$t") s"; else fail "SIGKILL: restarted"; fi

# --- the watchdog -------------------------------------------------------------------------------
pid=$(prop MainPID)
t=$(now)
in_c systemctl kill -s SIGSTOP --kill-who=main mcp-workers
if wait_until 60 restarted "$pid"; then pass "SIGSTOP: the watchdog restarted the daemon in $(elapsed "$t") s"; else
  fail "SIGSTOP: the watchdog restarted the daemon"; fi
check "the journal says why" sh -c "docker exec $C journalctl -u mcp-workers --no-pager | grep -q 'Watchdog timeout'"

# --- a broken configuration -----------------------------------------------------------------------
in_c systemctl stop mcp-workers
in_c cp /opt/mcp-workers/.claude/mcp_servers.json /root/mcp_servers.json
in_c sh -c 'echo "{ broken" > /opt/mcp-workers/.claude/mcp_servers.json'
t=$(now)
if in_c systemctl start mcp-workers > "$S/broken.log" 2>&1; then fail "systemctl start with a broken registry succeeded"; else
  pass "systemctl start with a broken registry fails at once ($(elapsed "$t") s)"; fi
in_c systemctl stop mcp-workers || true
in_c cp /root/mcp_servers.json /opt/mcp-workers/.claude/mcp_servers.json
in_c systemctl reset-failed mcp-workers || true
check "and starts again once it is fixed" sh -c "docker exec $C systemctl start mcp-workers && docker exec $C curl -fsS -m 2 http://127.0.0.1:8787/healthz > /dev/null"
