//! Raw arguments to one validated settings type for the daemon (`run`, and later `serve`).
//! Everything that can be wrong with the set-up is found here, at start-up, with one clear line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::cli::{GlobalArgs, WorkerArgs};
use crate::protocol::parse::Limits;
use crate::registry::Registry;
use crate::scratch::Scratch;
use crate::worker::WorkerSettings;
use crate::worker::command::CliSettings;

/// The daemon's settings, checked.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub worker: Arc<WorkerSettings>,
    pub registry: Arc<Registry>,
    pub registry_path: PathBuf,
    pub profiles: PathBuf,
    pub limits: Limits,
    pub max_workers: usize,
    pub max_line_bytes: usize,
    /// The workers' scratch directory; removed when the last clone of the settings goes.
    pub scratch: Arc<Scratch>,
}

impl DaemonSettings {
    pub fn from_args(global: &GlobalArgs, args: &WorkerArgs) -> anyhow::Result<Self> {
        Self::build(global, args, true)
    }

    /// For commands that never run the CLI (`check`): a missing `claude` is no error there.
    pub fn without_claude(global: &GlobalArgs, args: &WorkerArgs) -> anyhow::Result<Self> {
        Self::build(global, args, false)
    }

    fn build(global: &GlobalArgs, args: &WorkerArgs, need_claude: bool) -> anyhow::Result<Self> {
        if args.max_workers == 0 {
            bail!("--max-workers must be at least 1");
        }
        let root = std::path::absolute(&global.root)
            .and_then(|p| p.canonicalize())
            .with_context(|| format!("project directory {} not found", global.root.display()))?;
        let under_root = |given: &Option<PathBuf>, default: &str| -> anyhow::Result<PathBuf> {
            let path = given.clone().unwrap_or_else(|| root.join(default));
            Ok(std::path::absolute(&path)?)
        };
        let workspace = under_root(&args.workspace, "workspace")?;
        std::fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create the workspace {}", workspace.display()))?;
        let profiles = under_root(&args.profiles, "profiles")?;
        let data_dir = std::path::absolute(global.data_dir())?;
        let registry_path = under_root(&args.registry, ".claude/mcp_servers.json")?;
        let self_exe = std::env::current_exe().context("cannot find this executable's path")?;
        let registry = Registry::load(&registry_path, &self_exe)?;
        if registry.is_empty() {
            tracing::warn!(path = %registry_path.display(), "the server registry has no servers");
        }
        let daemon_env: BTreeMap<String, String> = std::env::vars().collect();
        let tools_bin = Some(root.join(".tools/bin")).filter(|p| p.is_dir());
        let claude = match find_claude(args.claude.as_deref(), tools_bin.as_deref(), daemon_env.get("PATH")) {
            Ok(claude) => claude,
            Err(_) if !need_claude => PathBuf::from("claude"),
            Err(err) => return Err(err),
        };
        let scratch = Arc::new(Scratch::create().context("cannot create the scratch directory")?);
        let cli = CliSettings {
            claude,
            root,
            workspace,
            profiles: profiles.clone(),
            data_dir,
            tools_bin,
            api_retries: args.api_retries,
            mcp_connect_timeout: args.mcp_connect_timeout,
            bare: !args.no_bare,
            pass_env: args.pass_env.clone(),
        };
        Ok(Self {
            worker: Arc::new(WorkerSettings {
                cli,
                kill_grace: args.kill_grace,
                temp_root: Some(scratch.path().to_owned()),
                daemon_env,
            }),
            registry: Arc::new(registry),
            registry_path,
            profiles,
            limits: Limits { max_timeout: args.max_timeout },
            max_workers: args.max_workers,
            max_line_bytes: args.max_line_bytes,
            scratch,
        })
    }
}

/// `--claude`, else the project's pinned `.tools/bin/claude`, else `claude` on PATH.
fn find_claude(given: Option<&Path>, tools_bin: Option<&Path>, path: Option<&String>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match given {
        Some(given) if given.components().count() > 1 => vec![given.to_owned()],
        Some(name) => search_path(name, path),
        None => {
            tools_bin.map(|bin| bin.join("claude")).into_iter().chain(search_path(Path::new("claude"), path)).collect()
        }
    };
    for candidate in candidates {
        if is_executable(&candidate) {
            return Ok(std::path::absolute(&candidate)?);
        }
    }
    bail!(
        "the Claude Code CLI was not found{}: run scripts/setup.sh, or pass --claude PATH",
        given.map(|g| format!(" at {}", g.display())).unwrap_or_default()
    )
}

/// `name` in each directory of a PATH-style list.
pub fn search_path(name: &Path, path: Option<&String>) -> Vec<PathBuf> {
    path.map(|p| std::env::split_paths(p).map(|dir| dir.join(name)).collect()).unwrap_or_default()
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
