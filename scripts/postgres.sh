#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use is up: MCP_WORKERS_TEST_PG (default
# postgres://postgres@127.0.0.1:5432/test). If nothing answers on 127.0.0.1:5432, starts this
# machine's cluster (pg_ctlcluster, Debian's postgresql-common) and creates the database `test`
# if missing. Without a PostgreSQL to start it fails loudly: the store's PostgreSQL tests never
# skip.
set -euo pipefail
url="${MCP_WORKERS_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}"
ready() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1; }
if [ -n "${MCP_WORKERS_TEST_PG:-}" ]; then
  echo "postgres.sh: using MCP_WORKERS_TEST_PG as given"
  exit 0
fi
if ! command -v pg_isready >/dev/null || ! command -v pg_lsclusters >/dev/null; then
  echo "postgres.sh: no PostgreSQL here (pg_isready / pg_lsclusters missing): install the postgresql package," >&2
  echo "  or point MCP_WORKERS_TEST_PG at a database the tests may create schemas in" >&2
  exit 1
fi
if ! ready; then
  read -r version cluster _ < <(pg_lsclusters --no-header | awk '$3 == 5432 { print $1, $2 }')  || true
  if [ -z "${version:-}" ]; then
    echo "postgres.sh: no PostgreSQL cluster on port 5432 (pg_lsclusters)" >&2
    exit 1
  fi
  echo "postgres.sh: starting PostgreSQL $version/$cluster"
  pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { echo "postgres.sh: PostgreSQL $version/$cluster did not come up" >&2; exit 1; }
fi
if ! psql "${url%/*}/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  psql "${url%/*}/postgres" -qc "CREATE DATABASE test"
fi
psql "$url" -Atqc "SELECT 1" >/dev/null
echo "postgres.sh: PostgreSQL ready at ${url}"
