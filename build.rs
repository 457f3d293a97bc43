//! Link options for the release binary (`cargo build --release`, the image, `cargo bench`).
//!
//! Every worker starts its own `mcp-workers mcp queue` or `mcp telegram`, so what one copy maps
//! and touches matters (BENCHMARKS.md, issue 13). Two linker options, on Linux with the toolchain's
//! own lld (the default linker of `x86_64-unknown-linux-gnu` since Rust 1.90):
//! - `--symbol-ordering-file=build/hot-functions.order`: the functions the stdio servers run
//!   (start, handshake, calls; listed by `scripts/hot-functions.sh`) are placed together at the
//!   start of `.text`. The kernel maps a binary's code in whole runs of pages around each one
//!   touched, so code spread over 19 MiB of text kept 10-13 MiB of it resident in an idle server;
//!   packed, 3-4 MiB. A listed name this build does not have is skipped (a dependency upgraded,
//!   a function renamed): the list goes stale gracefully, and the script makes it anew.
//! - `-z pack-relative-relocs` (DT_RELR, glibc 2.36 or newer on the building machine, which the
//!   image's two stages share): the PIE's 42,000 relative relocations in 12 KiB instead of 1 MiB
//!   that the loader reads at every start.
//!
//! Not used for a configured linker (`RUSTC_LINKER`, or linker flags in `RUSTFLAGS`), other
//! targets, debug builds, or with `MCP_WORKERS_PLAIN_LINK=1`.

use std::path::Path;
use std::process::Command;

const ORDER: &str = "build/hot-functions.order";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=MCP_WORKERS_PLAIN_LINK");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let default_lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("PROFILE") == "release"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && var("MCP_WORKERS_PLAIN_LINK") != "1";
    if !default_lld {
        return;
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    if order.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the building machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is this new.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
