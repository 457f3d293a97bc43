//! The flags that say how workers run (`run`, `serve`, `check`), and their translation into the
//! one checked [`DaemonSettings`]. **Every start-up error is found here**, as one line, before any
//! input is read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::args::{GlobalArgs, parse_duration, parse_positive_duration};
use crate::pool::budget::{BudgetSettings, Policy, Window, parse_window};
use crate::protocol::governance::GovernanceLimits;
use crate::protocol::parse::Limits;
use crate::registry::Registry;
use crate::scratch::Scratch;
use crate::settings::{DaemonSettings, find_claude};
use crate::worker::WorkerSettings;
use crate::worker::command::CliSettings;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How many workers run at once; further actions wait in order.
    #[arg(long, env = "MCP_WORKERS_MAX_WORKERS", default_value_t = default_max_workers())]
    pub max_workers: usize,
    /// The Claude Code CLI to run. Default: `claude` next to the project's `.tools`, else on PATH.
    #[arg(long, env = "MCP_WORKERS_CLAUDE")]
    pub claude: Option<PathBuf>,
    /// The server registry. Default: `<root>/.claude/mcp_servers.json`.
    #[arg(long, env = "MCP_WORKERS_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// The workers' working directory. Default: `<root>/workspace`.
    #[arg(long, env = "MCP_WORKERS_WORKSPACE")]
    pub workspace: Option<PathBuf>,
    /// Worker profiles (`NAME.md`). Default: `<root>/profiles`.
    #[arg(long, env = "MCP_WORKERS_PROFILES")]
    pub profiles: Option<PathBuf>,
    /// The largest `timeout` an action may ask for.
    #[arg(long, env = "MCP_WORKERS_MAX_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub max_timeout: Duration,
    /// After SIGTERM, how long a worker may take to exit before its process group is killed.
    #[arg(long, env = "MCP_WORKERS_KILL_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Retries the CLI itself makes on API errors (CLAUDE_CODE_MAX_RETRIES).
    #[arg(long, env = "MCP_WORKERS_API_RETRIES", default_value_t = 2)]
    pub api_retries: u32,
    /// Connect timeout per MCP server (MCP_TIMEOUT).
    #[arg(long, env = "MCP_WORKERS_MCP_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub mcp_connect_timeout: Duration,
    /// Extra environment variables to pass to every worker, by name (repeatable).
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Run the CLI without `--bare` (then user/project settings are still ignored, but CLAUDE.md
    /// files are read, and auth may come from ANTHROPIC_AUTH_TOKEN or an OAuth token).
    #[arg(long, env = "MCP_WORKERS_NO_BARE")]
    pub no_bare: bool,
    /// How long workers' transcripts and sessions are kept in the data directory (swept at start-up).
    #[arg(long, env = "MCP_WORKERS_TRANSCRIPT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub transcript_retention: Duration,
    /// `maxBudgetUsd` (USD) of an action that names none.
    #[arg(long, env = "MCP_WORKERS_DEFAULT_MAX_BUDGET_USD", value_parser = parse_usd)]
    pub default_max_budget_usd: Option<f64>,
    /// The largest `maxBudgetUsd` (USD) an action may ask for; above it the action is refused.
    #[arg(long, env = "MCP_WORKERS_MAX_BUDGET_USD_CEILING", value_parser = parse_usd)]
    pub max_budget_usd_ceiling: Option<f64>,
    /// `idleTimeout` of an action that names none: the longest silence while the model works.
    #[arg(long, env = "MCP_WORKERS_IDLE_TIMEOUT", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// `toolTimeout` of an action that names none: the longest one tool call may stay open.
    #[arg(long, env = "MCP_WORKERS_TOOL_TIMEOUT", value_parser = parse_positive_duration)]
    pub tool_timeout: Option<Duration>,
    /// The first wait before an action's retry (`retries`); it doubles with each attempt, plus
    /// jitter.
    #[arg(long, env = "MCP_WORKERS_RETRY_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Do not pause the starting of workers when one meets the account's rate limit (each worker
    /// then finds out on its own; for comparison, see BENCHMARKS.md).
    #[arg(long, env = "MCP_WORKERS_NO_RATE_LIMIT_BREAKER")]
    pub no_rate_limit_breaker: bool,
    /// A daemon-wide budget window, AMOUNT/PERIOD (repeatable: `5usd/hour`, `50usd/day`): rolling
    /// over the costs recorded in the data directory's store, so a restart does not reset it.
    #[arg(long = "budget", value_name = "AMOUNT/PERIOD", value_parser = parse_window)]
    pub budgets: Vec<Window>,
    /// What happens to an action no budget window has room for: it waits, or it is refused
    /// (`budget_exhausted`, with `retryAfterMs`).
    #[arg(long, env = "MCP_WORKERS_BUDGET_POLICY", value_enum, default_value = "wait")]
    pub budget_policy: Policy,
    /// What an action without `maxBudgetUsd` reserves from the budget (and its cap then).
    #[arg(long, env = "MCP_WORKERS_BUDGET_ESTIMATE_USD", default_value = "0.1", value_parser = parse_usd)]
    pub budget_estimate_usd: f64,
    /// The longest input line (one JSON document) accepted, in bytes.
    #[arg(long, env = "MCP_WORKERS_MAX_LINE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_line_bytes: usize,
}

/// The workers tools' flags (`mcp workers`, and `serve`'s `/mcp`).
#[derive(Debug, Clone, Args)]
pub struct WorkerToolArgs {
    /// How long `spawn_worker` and `worker_wait` wait for a result when the call names no `wait`.
    #[arg(long, env = "MCP_WORKERS_DEFAULT_WAIT", default_value = "25s", value_parser = parse_duration)]
    pub default_wait: Duration,
    /// The deepest level of workers that spawn workers: the workers tools inside a worker of this
    /// depth refuse `spawn_worker` (kind `depth_exceeded`).
    #[arg(long, env = "MCP_WORKERS_MAX_DEPTH", default_value_t = 2)]
    pub max_depth: u32,
}

impl WorkerToolArgs {
    /// Checked settings; `depth` is this process's own (`MCP_WORKERS_DEPTH`).
    pub fn settings(&self, progress_interval: Duration) -> anyhow::Result<crate::mcp::workers::WorkersSettings> {
        let max = crate::mcp::workers::server::MAX_WAIT;
        if self.default_wait > max {
            bail!("--default-wait must be at most {} s", max.as_secs());
        }
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Ok(crate::mcp::workers::WorkersSettings {
            default_wait: self.default_wait,
            progress_interval,
            depth: crate::worker::command::own_depth(&env),
            max_depth: self.max_depth,
        })
    }
}

/// A positive amount of US dollars.
fn parse_usd(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches("usd").parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 => Ok(usd),
        _ => Err(format!("{text:?} is not a positive amount of US dollars")),
    }
}

fn default_max_workers() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(2, 16))
}

/// Whether the command will run the CLI (`check` never does: a missing `claude` is no error there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedClaude {
    Yes,
    No,
}

impl WorkerArgs {
    /// Checks the flags against the file system, loads the registry, and with `--budget` opens
    /// its ledger.
    pub async fn settings(&self, global: &GlobalArgs, need: NeedClaude) -> anyhow::Result<DaemonSettings> {
        if self.max_workers == 0 {
            bail!("--max-workers must be at least 1");
        }
        if let (Some(default), Some(ceiling)) = (self.default_max_budget_usd, self.max_budget_usd_ceiling) {
            if default > ceiling {
                bail!("--default-max-budget-usd ({default}) is above --max-budget-usd-ceiling ({ceiling})");
            }
        }
        let root = std::path::absolute(&global.root)
            .and_then(|p| p.canonicalize())
            .with_context(|| format!("project directory {} not found", global.root.display()))?;
        let under_root = |given: &Option<PathBuf>, default: &str| -> anyhow::Result<PathBuf> {
            let path = given.clone().unwrap_or_else(|| root.join(default));
            Ok(std::path::absolute(&path)?)
        };
        let workspace = under_root(&self.workspace, "workspace")?;
        std::fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create the workspace {}", workspace.display()))?;
        let profiles = under_root(&self.profiles, "profiles")?;
        let data_dir = std::path::absolute(global.data_dir())?;
        let registry_path = under_root(&self.registry, ".claude/mcp_servers.json")?;
        let self_exe = std::env::current_exe().context("cannot find this executable's path")?;
        let registry = Registry::load(&registry_path, &self_exe)?;
        if registry.is_empty() {
            tracing::warn!(path = %registry_path.display(), "the server registry has no servers");
        }
        let mut daemon_env: BTreeMap<String, String> = std::env::vars().collect();
        // A worker's `mcp queue` must open the daemon's store: the flags' values go to it by
        // environment (never argv), like MCP_WORKERS_DATA_DIR.
        let mut pass_env = self.pass_env.clone();
        for (name, value) in [("MCP_WORKERS_STORE", &global.store), ("MCP_WORKERS_STORE_SCHEMA", &global.store_schema)]
        {
            if let Some(value) = value {
                daemon_env.insert(name.to_owned(), value.clone());
                pass_env.push(name.to_owned());
            }
        }
        let tools_bin = Some(root.join(".tools/bin")).filter(|p| p.is_dir());
        let claude = match find_claude(self.claude.as_deref(), tools_bin.as_deref(), daemon_env.get("PATH")) {
            Ok(claude) => claude,
            Err(_) if need == NeedClaude::No => PathBuf::from("claude"),
            Err(err) => return Err(err),
        };
        let budget = if self.budgets.is_empty() {
            None
        } else {
            // The costs are recorded in the store (`--store`, else the data directory's file):
            // on PostgreSQL every daemon on the schema charges to the same windows.
            let location = super::store_location(global)?;
            let ledger = location
                .open_ledger()
                .await
                .with_context(|| format!("cannot open the store {location} for --budget"))?;
            Some(BudgetSettings {
                windows: self.budgets.clone(),
                policy: self.budget_policy,
                estimate_usd: self.budget_estimate_usd,
                ledger,
            })
        };
        let scratch = Arc::new(Scratch::create().context("cannot create the scratch directory")?);
        let cli = CliSettings {
            claude,
            root,
            workspace,
            profiles: profiles.clone(),
            data_dir,
            tools_bin,
            api_retries: self.api_retries,
            mcp_connect_timeout: self.mcp_connect_timeout,
            bare: !self.no_bare,
            pass_env,
        };
        Ok(DaemonSettings {
            worker: Arc::new(WorkerSettings {
                cli,
                kill_grace: self.kill_grace,
                temp_root: Some(scratch.path().to_owned()),
                daemon_env,
                progress: None,
            }),
            registry: Arc::new(registry),
            registry_path,
            profiles,
            limits: Limits {
                max_timeout: self.max_timeout,
                governance: GovernanceLimits {
                    default_budget_usd: self.default_max_budget_usd,
                    max_budget_usd: self.max_budget_usd_ceiling,
                    default_idle_timeout: self.idle_timeout,
                    default_tool_timeout: self.tool_timeout,
                },
            },
            max_workers: self.max_workers,
            max_line_bytes: self.max_line_bytes,
            retry_backoff: self.retry_backoff,
            rate_limit_breaker: !self.no_rate_limit_breaker,
            budget,
            scratch,
        })
    }
}
