#!/usr/bin/env bash
# Measures what the release profile's knobs cost and buy: for each variant, a clean release build
# of the daemon (wall time), the binary's size, and `cargo bench --bench daemon`'s per-worker
# overhead and throughput lines (the same code built with that variant). Each variant builds in
# its own target dir.
# Usage: scripts/bench-profiles.sh [VARIANT...]   (default: all; see the table below)
# Slow: a clean release build per variant (several minutes each on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_PROFILES_DIR:-/tmp/mcp-workers-profiles}
mkdir -p "$out"
# name | environment overrides of the release profile
variants=(
  "shipped|"
  "debuginfo|CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only"
  "thin-lto|CARGO_PROFILE_RELEASE_LTO=thin"
  "fat-lto-cgu1|CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1"
)
want=("$@")
printf '%-14s %10s %12s\n' variant build_s size_MiB
for v in "${variants[@]}"; do
  name=${v%%|*}; envs=${v#*|}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  target="$out/target-$name"
  rm -rf "$target"
  start=$(date +%s.%N)
  env $envs CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet --bin mcp-workers
  end=$(date +%s.%N)
  size=$(stat -c %s "$target/release/mcp-workers")
  printf '%-14s %10.1f %12.1f\n' "$name" "$(echo "$end - $start" | bc)" "$(echo "scale=1; $size / 1048576" | bc)"
  env $envs CARGO_TARGET_DIR="$target" cargo bench --locked --quiet --bench daemon 2>/dev/null \
    | grep -E 'overhead|throughput' | sed "s/^/  $name: /"
done
