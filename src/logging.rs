//! tracing to stderr, as text or JSON. stdout carries protocol only.

use crate::args::{GlobalArgs, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` wins over `-v`.
pub fn init(global: &GlobalArgs) {
    let default = match global.verbose {
        0 => "mcp_workers=info,warn",
        1 => "mcp_workers=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match global.log_format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
