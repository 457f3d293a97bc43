//! `mcp-workers check`: starts each registry server once, as a worker would, and reports its tools.
//!
//! Each stdio server runs with the environment a worker's servers get (PATH with `<root>/.tools/bin`
//! first, the `MCP_WORKERS_*` paths, and only the daemon's variables that its `${VAR}` placeholders
//! name), with the placeholders expanded as the Claude Code CLI expands them. It is spoken to as a
//! real MCP client (rmcp): `initialize`, then `tools/list`. Every server is bounded by a timeout and
//! runs in its own process group, which is killed afterwards.

mod expand;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use rmcp::ServiceExt;
use rmcp::transport::TokioChildProcess;
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::registry::ServerEntry;
use crate::settings::DaemonSettings;
use crate::worker::command::environment;
pub use expand::Launch;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check only these servers (default: all of the registry).
    pub servers: Vec<String>,
    /// How long one server may take to start and list its tools.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The same registry, directories and `--pass-env` a worker would get.
    #[command(flatten)]
    pub worker: crate::cli::WorkerArgs,
}

/// What became of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started and listed its tools.
    Ok,
    /// Started and listed its tools, but a `${VAR}` it needs is not set: its calls will fail.
    MissingEnv,
    /// Its command (or the server behind `mcp no-roots`) is not installed.
    MissingCommand,
    /// Did not start, did not answer in time, or answered wrongly.
    Failed,
    /// Not a stdio server: not started by `check`.
    Skipped,
}

impl Status {
    fn is_problem(self) -> bool {
        matches!(self, Self::MissingEnv | Self::MissingCommand | Self::Failed)
    }
}

/// The report on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub status: Status,
    pub tools: Vec<String>,
    /// From spawn to the end of `initialize`.
    pub start_ms: Option<u64>,
    /// `${VAR}`s with no default that are not set.
    pub missing_env: Vec<String>,
    /// What went wrong, with the last lines of the server's stderr.
    pub detail: Option<String>,
}

impl Report {
    fn new(name: &str, status: Status, detail: Option<String>) -> Self {
        Self { name: name.to_owned(), status, tools: vec![], start_ms: None, missing_env: vec![], detail }
    }
}

pub async fn run(global: &crate::cli::GlobalArgs, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = DaemonSettings::without_claude(global, &args.worker)?;
    let (registry, registry_path) = (&settings.registry, &settings.registry_path);
    if let Some(unknown) = registry.first_unknown(&args.servers) {
        let known = registry.names().collect::<Vec<_>>().join(", ");
        anyhow::bail!("MCP server not found: {unknown} (the registry {} has: {known})", registry_path.display());
    }
    let (cli, daemon_env) = (&settings.worker.cli, &settings.worker.daemon_env);
    let home = tempfile::tempdir()?;
    let mut reports = Vec::new();
    for (name, entry) in registry.entries() {
        if !args.servers.is_empty() && !args.servers.iter().any(|s| s == name) {
            continue;
        }
        // Exactly what the CLI's environment would be for a worker that selected this server.
        let vars = environment(cli, &entry.variables, home.path(), args.timeout, daemon_env);
        reports.push(probe(name, entry, &vars, &cli.workspace, args.timeout).await);
    }
    // How a daemon started like this process would contain its workers' processes.
    let containment = crate::worker::process::cgroup::detect().to_string();
    if args.json {
        let ok = !reports.iter().any(|r| r.status.is_problem());
        let report =
            serde_json::json!({"ok": ok, "registry": registry_path, "servers": reports, "containment": containment});
        println!("{report}");
    } else {
        print!("{}", table(&reports));
        println!("containment: {containment}");
    }
    let broken = reports.iter().any(|r| r.status.is_problem());
    Ok(if broken { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Starts one server and lists its tools.
async fn probe(
    name: &str,
    entry: &ServerEntry,
    vars: &BTreeMap<String, String>,
    cwd: &Path,
    timeout: Duration,
) -> Report {
    let kind = entry.config.get("type").and_then(Value::as_str).unwrap_or("stdio");
    if kind != "stdio" {
        return Report::new(name, Status::Skipped, Some(format!("type {kind}: check starts stdio servers only")));
    }
    let launch = Launch::from_entry(entry, vars);
    let path = vars.get("PATH").map(String::as_str).unwrap_or_default();
    for program in launch.programs() {
        if expand::find_program(program, path, cwd).is_none() {
            let mut report = Report::new(
                name,
                Status::MissingCommand,
                Some(format!("command not found: {program} (is it installed? run scripts/setup.sh --tools-only)")),
            );
            report.missing_env = launch.missing.clone();
            return report;
        }
    }
    let mut command = tokio::process::Command::new(&launch.command);
    command.args(&launch.args).env_clear().envs(vars).envs(&launch.env).current_dir(cwd).process_group(0);
    let (transport, stderr) = match TokioChildProcess::builder(command).stderr(Stdio::piped()).spawn() {
        Ok(spawned) => spawned,
        Err(err) => return Report::new(name, Status::Failed, Some(format!("cannot start {}: {err}", launch.command))),
    };
    let pgid = transport.id().and_then(|pid| i32::try_from(pid).ok());
    let stderr_tail = tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        text
    });

    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        let client = ().serve(transport).await.map_err(|err| format!("initialize failed: {err}"))?;
        let start_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let tools = client.list_all_tools().await.map_err(|err| format!("tools/list failed: {err}"));
        let _ = tokio::time::timeout(Duration::from_secs(1), client.cancel()).await;
        tools.map(|tools| (start_ms, tools))
    })
    .await;
    if let Some(pgid) = pgid {
        // The server and anything it started: none of it outlives the check.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
    }
    let stderr = tokio::time::timeout(Duration::from_secs(2), stderr_tail).await.ok().and_then(Result::ok);
    let stderr = stderr.map(|text| redact_secrets(&last_lines(&text, 5), &launch.env)).unwrap_or_default();

    let mut report = Report::new(name, Status::Ok, None);
    report.missing_env = launch.missing.clone();
    match outcome {
        Ok(Ok((start_ms, tools))) => {
            report.start_ms = Some(start_ms);
            report.tools = tools.iter().map(|t| t.name.to_string()).collect();
            if report.tools.is_empty() {
                report.status = Status::Failed;
                report.detail = Some("the server lists no tools".into());
            } else if !launch.missing.is_empty() {
                report.status = Status::MissingEnv;
                report.detail = Some(missing_text(&launch.missing));
            }
        }
        Ok(Err(err)) => {
            report.status = Status::Failed;
            report.detail = Some(with_stderr(err, &stderr, &launch.missing));
        }
        Err(_) => {
            report.status = Status::Failed;
            let err = format!("no answer within {}", humantime::format_duration(timeout));
            report.detail = Some(with_stderr(err, &stderr, &launch.missing));
        }
    }
    report
}

fn missing_text(missing: &[String]) -> String {
    let names: Vec<String> = missing.iter().map(|v| format!("{v} is not set")).collect();
    format!("{} (set it in the daemon's environment)", names.join(", "))
}

fn with_stderr(err: String, stderr: &str, missing: &[String]) -> String {
    let mut text = err;
    if !missing.is_empty() {
        text = format!("{text}; {}", missing_text(missing));
    }
    if !stderr.is_empty() {
        text = format!("{text}; stderr: {stderr}");
    }
    text
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Values of the entry's own `env` (tokens) never reach the report.
fn redact_secrets(text: &str, env: &BTreeMap<String, String>) -> String {
    env.values().filter(|v| v.len() >= 8).fold(text.to_owned(), |acc, v| acc.replace(v.as_str(), "<redacted>"))
}

/// The human table.
pub fn table(reports: &[Report]) -> String {
    let width = reports.iter().map(|r| r.name.len()).max().unwrap_or(4).max(6);
    let mut out = format!("{:<width$}  {:<15}  {:>5}  {:>8}  DETAIL\n", "SERVER", "STATUS", "TOOLS", "START");
    for r in reports {
        let status =
            serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let start = r.start_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        let detail = r.detail.clone().unwrap_or_else(|| r.tools.join(", "));
        out.push_str(&format!("{:<width$}  {:<15}  {:>5}  {:>8}  {detail}\n", r.name, status, r.tools.len(), start));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows() {
        let mut ok = Report::new("fetch", Status::Ok, None);
        ok.tools = vec!["fetch".into()];
        ok.start_ms = Some(812);
        let mut tg = Report::new("telegram", Status::MissingEnv, Some(missing_text(&["TELEGRAM_BOT_TOKEN".into()])));
        tg.tools = vec!["tg_send".into(); 5];
        let text = table(&[ok, tg]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVER"), "{text}");
        assert!(lines[1].contains("fetch") && lines[1].contains("ok") && lines[1].contains("812 ms"), "{text}");
        assert!(lines[2].contains("missing_env") && lines[2].contains("TELEGRAM_BOT_TOKEN is not set"), "{text}");
    }

    #[test]
    fn stderr_is_trimmed_and_scrubbed() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        let env = BTreeMap::from([("TOKEN".to_owned(), "123:secret-value".to_owned())]);
        assert_eq!(redact_secrets("bad token 123:secret-value", &env), "bad token <redacted>");
    }
}
