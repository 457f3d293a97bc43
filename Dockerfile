# mcp-workers: the daemon, the pinned Claude Code CLI and the runtimes of the registry's servers.
#
#   docker build -t mcp-workers .
#   docker run -d -p 127.0.0.1:8787:8787 --env-file .env --stop-timeout 30 mcp-workers   # HTTP service
#   docker run --rm -i --no-healthcheck -e ANTHROPIC_API_KEY mcp-workers run   # JSON lines on stdin
#   docker run --rm -i --no-healthcheck mcp-workers mcp queue --timeout=59     # queue for an MCP client
#
# Pinned tool versions live in deploy/docker/ (package.json + package-lock.json, requirements.txt),
# the same versions scripts/setup.sh installs: Claude Code 2.1.197, server-filesystem 2026.8.31,
# mcp-server-fetch 2026.10.24 (with mcp 2.3.0). Bump both places together.
#
# Both stages use the same Debian release, so the binary's glibc matches the runtime's.
# Node 22 rather than 20: Node 20 reached end of life in April 2026 (the CLI itself is a native
# binary; Node runs server-filesystem and readabilipy's helper, which both support 20 and 22).

# No `# syntax=` line: it makes BuildKit pull a frontend image. The base images are arguments, so the
# image builds where no registry is reachable from base images made locally
# (scripts/container/base-images.sh makes them, and prints the --build-arg lines that select them).
ARG RUST_VERSION=1.95
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=bookworm
ARG RUST_IMAGE=rust:${RUST_VERSION}-${DEBIAN_RELEASE}
ARG NODE_IMAGE=node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Dependencies first, in a layer that stays cached until Cargo.toml or Cargo.lock change:
# stand-in sources for every declared target, then a build of the dependencies alone.
COPY Cargo.toml Cargo.lock build.rs ./
COPY deploy/docker/cargo-skeleton.sh /usr/local/bin/cargo-skeleton
RUN cargo-skeleton && cargo build --release --locked

# Then the real sources. `touch` makes them newer than the stand-ins, whatever mtimes COPY keeps.
# The benches' stand-ins go first: a stand-in `benches/NAME.rs` beside a real `benches/NAME/main.rs`
# is a manifest Cargo refuses. build/ holds the hot functions' link order (build.rs). The binary is
# installed stripped: the image carries no debug info.
RUN rm -rf benches
COPY src ./src
COPY schema ./schema
COPY build ./build
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/mcp-workers /usr/local/bin/mcp-workers \
 && strip /usr/local/bin/mcp-workers \
 && /usr/local/bin/mcp-workers --version

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini: PID 1, forwards SIGTERM to the daemon and reaps orphans (an MCP server that a killed CLI left
# behind is re-parented to PID 1). python3 + venv: mcp-server-fetch. Debian's own package versions
# are not pinned: the release is (DEBIAN_RELEASE), and a pinned point version disappears from the
# mirrors with the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv tini \
 && rm -rf /var/lib/apt/lists/*

# The tools, root-owned and read-only for the service user. /opt/mcp-workers/bin holds exactly the
# names the registry (.claude/mcp_servers.json) runs, like .tools/bin in a checkout.
WORKDIR /opt/mcp-workers
COPY deploy/docker/package.json deploy/docker/package-lock.json ./
COPY deploy/docker/requirements.txt deploy/docker/readabilipy-package-lock.json ./
# npm ci: exactly the lock (Claude Code's postinstall copies the platform's native binary in place).
# readabilipy (used by mcp-server-fetch) runs `npm install` in its own package directory on first
# use when that has no node_modules: do it here, from a lock, so a worker never runs npm.
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && python3 -m venv /opt/mcp-workers/venv \
 && /opt/mcp-workers/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      -r requirements.txt \
 && js_dir=$(/opt/mcp-workers/venv/bin/python -c 'import os, readabilipy; print(os.path.join(os.path.dirname(readabilipy.__file__), "javascript"))') \
 && cp readabilipy-package-lock.json "$js_dir/package-lock.json" \
 && npm ci --prefix "$js_dir" --omit=dev --no-audit --no-fund --loglevel=error \
 && npm cache clean --force \
 && rm -rf /root/.npm /root/.cache \
 && mkdir -p bin \
 && ln -s ../node_modules/.bin/claude bin/claude \
 && ln -s ../node_modules/.bin/mcp-server-filesystem bin/mcp-server-filesystem \
 && ln -s ../venv/bin/mcp-server-fetch bin/mcp-server-fetch \
 && bin/claude --version | grep -F '2.1.197' \
 && test -x bin/mcp-server-filesystem \
 && bin/mcp-server-fetch --help > /dev/null

ENV PATH=/opt/mcp-workers/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    MCP_WORKERS_DATA_DIR=/var/lib/mcp-workers

COPY --from=builder /usr/local/bin/mcp-workers /usr/local/bin/mcp-workers

# The service user. The CLI refuses --dangerously-skip-permissions as root; mcp-workers does not use
# it (workers get --permission-mode dontAsk with an allow-list), but nothing here needs root either.
RUN groupadd --system --gid 10001 mcp \
 && useradd --system --uid 10001 --gid mcp --home-dir /home/mcp --create-home --shell /usr/sbin/nologin mcp \
 && install -d -o mcp -g mcp -m 0700 /var/lib/mcp-workers

# The project directory (--root /app): registry, profiles, and the workers' working directory.
# The registry and profiles stay root-owned (read-only for the service); workspace is the service's.
WORKDIR /app
COPY .claude/ /app/.claude/
COPY profiles/ /app/profiles/
COPY --chown=mcp:mcp workspace/ /app/workspace/

# Numeric, so that a runtime (Kubernetes runAsNonRoot, for one) can tell it is not root.
USER 10001:10001
VOLUME ["/app/.claude", "/app/profiles", "/app/workspace", "/var/lib/mcp-workers"]
EXPOSE 8787

# The daemon stops on SIGTERM: it stops accepting, gives running workers a bounded grace, records
# their results, and exits. Give `docker stop` more time than that (see README: nested timeouts).
STOPSIGNAL SIGTERM

# No curl in the image: Node's built-in fetch. Sends the API token if one is set. Meaningful only
# for `serve`; run the stdin modes with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const h = process.env.MCP_WORKERS_API_TOKEN ? {authorization: 'Bearer ' + process.env.MCP_WORKERS_API_TOKEN} : {}; fetch('http://127.0.0.1:8787/healthz', {headers: h, signal: AbortSignal.timeout(4000)}).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# One entrypoint for every mode: `serve` (the default), `run` (stdin), `mcp queue` (stdio MCP).
ENTRYPOINT ["/usr/bin/tini", "--", "mcp-workers", "--root", "/app"]
CMD ["serve", "--listen", "0.0.0.0:8787"]
