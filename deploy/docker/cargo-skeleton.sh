#!/bin/sh
# Writes an empty stand-in source file for every target that Cargo.toml (in the current directory)
# declares, so that `cargo build` can compile the dependencies alone, in an image layer that stays
# cached until Cargo.toml or Cargo.lock change. Used by the Dockerfile's builder stage, and checked by
# scripts/validate-deploy.sh (`cargo metadata` must accept the skeleton).
#
# Cargo refuses a manifest whose explicitly declared targets ([[bin]], [[bench]], [[test]],
# [[example]]) have no source file, so a new such section needs nothing here: it is read from the
# manifest. A new build.rs, however, must be copied in the Dockerfile's dependency layer.
set -eu

stub() {
  [ -e "$1" ] && return 0
  mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" > "$1"
}

stub src/lib.rs '// dependency-layer stand-in'
stub src/main.rs 'fn main() {}'

package=$(awk -F'"' '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^name *=/ { print $2; exit }' Cargo.toml)

# One line "kind name path" per declared target (path may be empty).
awk '
  function flush() { if (kind != "") print kind, name, path; kind = ""; name = ""; path = "" }
  /^\[\[(bin|bench|test|example)\]\]/ { flush(); kind = $0; gsub(/[][]/, "", kind); next }
  /^\[/ { flush(); next }
  kind != "" && /^name *=/ { split($0, a, "\""); name = a[2] }
  kind != "" && /^path *=/ { split($0, a, "\""); path = a[2] }
  END { flush() }
' Cargo.toml | while read -r kind name path; do
  if [ -z "$path" ]; then
    case $kind in
      bin) if [ "$name" = "$package" ]; then path=src/main.rs; else path=src/bin/$name.rs; fi ;;
      bench) path=benches/$name.rs ;;
      test) path=tests/$name.rs ;;
      example) path=examples/$name.rs ;;
    esac
  fi
  stub "$path" 'fn main() {}'
done
