//! `mcp-workers check`: starts each registry server once, as a worker would, and reports.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::worker_args::{NeedClaude, WorkerArgs};
use crate::args::{GlobalArgs, parse_duration};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check only these servers (default: all of the registry).
    pub servers: Vec<String>,
    /// How long one server may take to start and list its tools.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The same registry, directories and `--pass-env` a worker would get.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

pub async fn exec(global: &GlobalArgs, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = args.worker.settings(global, NeedClaude::No).await?;
    let reports = crate::check::run(&settings, &args.servers, args.timeout).await?;
    // How a daemon started like this process would contain its workers' processes.
    let containment = crate::worker::process::cgroup::detect().to_string();
    if args.json {
        let ok = !reports.iter().any(|r| r.status.is_problem());
        let registry = &settings.registry_path;
        let report =
            serde_json::json!({"ok": ok, "registry": registry, "servers": reports, "containment": containment});
        println!("{report}");
    } else {
        print!("{}", crate::check::table(&reports));
        println!("containment: {containment}");
    }
    let broken = reports.iter().any(|r| r.status.is_problem());
    Ok(if broken { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
