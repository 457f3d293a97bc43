# shellcheck shell=bash
# The container engine for the container tests (scripts/container/*.sh source this file).
#
#   engine_up     install Docker 20.10, docker-compose v1 and debootstrap from Debian if absent
#                 (pinned to the bookworm versions below, the release's own where those are gone),
#                 and start dockerd if no engine answers; a dockerd started here is stopped by
#                 engine_down, which the caller runs from its EXIT trap
#   engine_down   stop what engine_up started, nothing else
#
# There is no systemd on the machines this runs on (CI included): dockerd is started by hand, its
# containerd with it, and SIGTERM stops both. Its log is $ENGINE_LOG.

ENGINE_PKGS=(docker.io=20.10.24+dfsg1-1+deb12u1+b6 docker-compose=1.29.2-3 debootstrap=1.0.128+nmu2+deb12u2
  jq=1.6-2.1+deb12u3)
ENGINE_LOG=${ENGINE_LOG:-${TMPDIR:-/tmp}/mcp-workers-dockerd.log}
ENGINE_PID=

engine_say() { printf 'engine: %s\n' "$*" >&2; }

engine_install() {
  local missing=() pkg name
  for pkg in "${ENGINE_PKGS[@]}"; do
    name=${pkg%%=*}
    case $name in
      docker.io) command -v dockerd > /dev/null 2>&1 || missing+=("$pkg") ;;
      jq) command -v jq > /dev/null 2>&1 || missing+=("$pkg") ;;
      *) command -v "$name" > /dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    engine_say "missing ${missing[*]%%=*}: run as root, or install the Debian packages yourself"
    return 1
  fi
  engine_say "installing ${missing[*]} (Debian)"
  apt-get update -qq
  local args=() p
  for p in "${missing[@]}"; do
    # A pinned point version disappears from the mirrors with the next update: then the release's own.
    if apt-cache show "$p" > /dev/null 2>&1; then args+=("$p"); else
      engine_say "$p is no longer in the archive: installing the release's ${p%%=*}"
      args+=("${p%%=*}")
    fi
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${args[@]}" \
    iptables ca-certificates > /dev/null
}

engine_answers() { docker info > /dev/null 2>&1; }

engine_up() {
  engine_install || return 1
  if engine_answers; then
    engine_say "using the running engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    engine_say "no container engine answers and only root can start one"
    return 1
  fi
  engine_say "starting dockerd (log: $ENGINE_LOG)"
  setsid dockerd > "$ENGINE_LOG" 2>&1 < /dev/null &
  ENGINE_PID=$!
  local i
  for i in $(seq 1 300); do
    engine_answers && { engine_say "dockerd $ENGINE_PID ready"; return 0; }
    kill -0 "$ENGINE_PID" 2> /dev/null || break
    sleep 0.1
  done
  engine_say "dockerd did not come up:"
  tail -n 20 "$ENGINE_LOG" >&2
  engine_down
  return 1
}

engine_down() {
  [ -n "$ENGINE_PID" ] || return 0
  engine_say "stopping dockerd $ENGINE_PID"
  kill -TERM "$ENGINE_PID" 2> /dev/null || true
  local i
  for i in $(seq 1 300); do
    kill -0 "$ENGINE_PID" 2> /dev/null || { ENGINE_PID=; return 0; }
    sleep 0.1
  done
  engine_say "dockerd $ENGINE_PID ignored SIGTERM for 30 s: SIGKILL"
  kill -KILL "$ENGINE_PID" 2> /dev/null || true
  ENGINE_PID=
}
