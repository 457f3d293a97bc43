//! The Claude Code command line and environment for one worker. Pure: settings in, a plan out.
//!
//! The environment is built from nothing (`env_clear`): what the CLI needs, the `ANTHROPIC_*`
//! settings the daemon was given, and exactly the variables that the selected servers'
//! placeholders name. Secrets travel only in the environment, never in argv or a file, and the
//! task goes on the child's stdin, never in argv (`/proc/PID/cmdline` is world-readable).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::governance::Governance;
use crate::registry::Selection;

/// Settings that are the same for every worker.
#[derive(Debug, Clone)]
pub struct CliSettings {
    pub claude: PathBuf,
    pub root: PathBuf,
    pub workspace: PathBuf,
    pub profiles: PathBuf,
    pub data_dir: PathBuf,
    /// Prepended to PATH when it exists: the project's pinned tools.
    pub tools_bin: Option<PathBuf>,
    pub api_retries: u32,
    pub mcp_connect_timeout: Duration,
    /// `--bare`: no hooks, plugins or CLAUDE.md discovery (auth then needs ANTHROPIC_API_KEY).
    pub bare: bool,
    /// Extra variables to pass by name (`--pass-env`).
    pub pass_env: Vec<String>,
}

/// One worker's request, as far as the command line is concerned.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub task: &'a str,
    pub selection: &'a Selection,
    pub config_path: &'a Path,
    pub home: &'a Path,
    pub profile: Option<&'a Path>,
    pub max_turns: Option<u32>,
    pub model: Option<&'a str>,
    pub timeout: Duration,
    /// `outputSchema`, serialised: `--json-schema`.
    pub json_schema: Option<String>,
    /// `--disallowedTools` patterns (`tools.deny`): not even offered to the model.
    pub disallowed_tools: Vec<String>,
    /// `--resume=<kept session file>` (and `--fork-session` when true).
    pub resume: Option<(&'a Path, bool)>,
    /// Budget cap, fallback models, whether the watchdog needs partial messages.
    pub governance: &'a Governance,
}

/// Everything needed to start the child.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// The task: written to the child's stdin, which is then closed. With no prompt argument the
    /// CLI reads its prompt from stdin.
    pub stdin: String,
}

/// Builds the plan. `daemon_env` is the daemon's own environment (looked up, never passed whole).
pub fn plan(settings: &CliSettings, inv: &Invocation<'_>, daemon_env: &BTreeMap<String, String>) -> Plan {
    let mut args: Vec<String> = vec![
        "-p".into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        // Sessions are written (into the worker's own HOME): the daemon keeps them for `continue`.
        "--strict-mcp-config".into(),
        "--mcp-config".into(),
        inv.config_path.to_string_lossy().into_owned(),
        "--permission-mode".into(),
        "dontAsk".into(),
        // No built-in tools (Bash, Edit, ...): a worker acts only through its MCP servers.
        "--tools".into(),
        String::new(),
        "--allowedTools".into(),
    ];
    args.extend(inv.selection.allowed_tools.iter().cloned());
    if settings.bare {
        args.push("--bare".into());
    } else {
        args.extend(["--setting-sources".into(), String::new()]);
    }
    if let Some(profile) = inv.profile {
        args.extend(["--append-system-prompt-file".into(), profile.to_string_lossy().into_owned()]);
    }
    if let Some(turns) = inv.max_turns {
        args.extend(["--max-turns".into(), turns.to_string()]);
    }
    if let Some(model) = inv.model {
        args.extend(["--model".into(), model.to_owned()]);
    }
    if let Some(schema) = &inv.json_schema {
        // The `--flag=value` form: a schema text cannot be taken for another flag.
        args.push(format!("--json-schema={schema}"));
    }
    if let Some((session, fork)) = inv.resume {
        args.push(format!("--resume={}", session.display()));
        if fork {
            args.push("--fork-session".into());
        }
    }
    if !inv.disallowed_tools.is_empty() {
        args.push("--disallowedTools".into());
        args.extend(inv.disallowed_tools.iter().cloned());
    }
    args.extend(governance_args(inv.governance));
    // No prompt argument: the task goes on stdin (never argv: other users can read it there, and
    // Linux caps one argv string at 128 KiB).
    let stdin = inv.task.to_owned();
    let env = environment(settings, &inv.selection.variables, inv.home, inv.timeout, daemon_env);
    Plan { program: settings.claude.clone(), args, env, cwd: settings.workspace.clone(), stdin }
}

/// `--max-budget-usd`, `--fallback-model a,b`, and `--include-partial-messages` when the
/// watchdog runs (every SSE event of an answer is then a line: a working model is never silent).
fn governance_args(governance: &Governance) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(budget) = governance.max_budget_usd {
        args.push(format!("--max-budget-usd={budget}"));
    }
    if !governance.fallback_models.is_empty() {
        args.push(format!("--fallback-model={}", governance.fallback_models.join(",")));
    }
    if governance.watched() {
        args.push("--include-partial-messages".into());
    }
    args
}

/// The CLI's environment, which its stdio MCP servers inherit (plus their entry's `env`):
/// `variables` are the names the selected servers' placeholders use. `check` starts servers
/// with exactly this too.
pub fn environment(
    settings: &CliSettings,
    variables: &BTreeSet<String>,
    home: &Path,
    timeout: Duration,
    daemon_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut take = |name: &str| {
        if let Some(value) = daemon_env.get(name) {
            env.insert(name.to_owned(), value.clone());
        }
    };
    // Lowest precedence first: what the selected servers name, then locale, then the user's
    // Anthropic settings and explicit pass-throughs. Our own settings below override them all.
    for name in variables {
        take(name);
    }
    for name in ["LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS"] {
        take(name);
    }
    for name in daemon_env.keys().filter(|k| k.starts_with("ANTHROPIC_")) {
        take(name);
    }
    for name in &settings.pass_env {
        take(name);
    }
    let timeout_ms = timeout.as_millis().max(1).to_string();
    let fixed = [
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ("DISABLE_TELEMETRY", "1".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("DISABLE_ERROR_REPORTING", "1".to_owned()),
        // Connect every server before the first model turn, or the model may not see its tools.
        ("MCP_CONNECTION_NONBLOCKING", "0".to_owned()),
        ("MCP_TIMEOUT", settings.mcp_connect_timeout.as_millis().to_string()),
        ("MCP_TOOL_TIMEOUT", timeout_ms.clone()),
        ("CLAUDE_CODE_MAX_RETRIES", settings.api_retries.to_string()),
        ("API_TIMEOUT_MS", timeout_ms),
        ("MCP_WORKERS_ROOT", path_string(&settings.root)),
        ("MCP_WORKERS_WORKSPACE", path_string(&settings.workspace)),
        ("MCP_WORKERS_PROFILES", path_string(&settings.profiles)),
        ("MCP_WORKERS_DATA_DIR", path_string(&settings.data_dir)),
        // How deep this worker is in a chain of workers that spawn workers (`mcp workers`).
        (crate::DEPTH_VAR, (own_depth(daemon_env) + 1).to_string()),
        ("HOME", path_string(home)),
    ];
    for (name, value) in fixed {
        env.insert(name.to_owned(), value);
    }
    let daemon_path = daemon_env.get("PATH").map_or("/usr/local/bin:/usr/bin:/bin", String::as_str);
    let path = match &settings.tools_bin {
        Some(bin) => format!("{}:{daemon_path}", bin.display()),
        None => daemon_path.to_owned(),
    };
    env.insert("PATH".into(), path);
    env
}

/// The depth of the process whose environment this is: 0 for a daemon started by a person, n for
/// one started inside a worker of depth n (its `MCP_WORKERS_DEPTH`).
pub fn own_depth(env: &BTreeMap<String, String>) -> u32 {
    env.get(crate::DEPTH_VAR).and_then(|d| d.trim().parse().ok()).unwrap_or(0)
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> CliSettings {
        CliSettings {
            claude: "/opt/claude".into(),
            root: "/srv/app".into(),
            workspace: "/srv/app/workspace".into(),
            profiles: "/srv/app/profiles".into(),
            data_dir: "/srv/app/.mcp-workers".into(),
            tools_bin: Some("/srv/app/.tools/bin".into()),
            api_retries: 2,
            mcp_connect_timeout: Duration::from_secs(15),
            bare: true,
            pass_env: vec!["EXTRA".into()],
        }
    }

    fn selection() -> Selection {
        Selection {
            config: json!({"mcpServers": {}}),
            variables: ["TELEGRAM_BOT_TOKEN".to_owned(), "HOME".to_owned()].into(),
            allowed_tools: vec!["mcp__telegram__*".into(), "mcp__fs__*".into()],
        }
    }

    fn daemon_env() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("TELEGRAM_BOT_TOKEN", "123:secret"),
            ("OPENAI_API_KEY", "must-not-leak"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
            ("CLAUDE_CODE_MAX_RETRIES", "10"),
            ("EXTRA", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    static NO_GOVERNANCE: Governance = Governance {
        max_budget_usd: None,
        idle_timeout: None,
        tool_timeout: None,
        retries: 0,
        fallback_models: Vec::new(),
    };

    fn invocation<'a>(task: &'a str, sel: &'a Selection) -> Invocation<'a> {
        Invocation {
            task,
            selection: sel,
            config_path: Path::new("/tmp/w/mcp.json"),
            home: Path::new("/tmp/w/home"),
            profile: Some(Path::new("/srv/app/profiles/default.md")),
            max_turns: Some(5),
            model: None,
            timeout: Duration::from_secs(60),
            json_schema: None,
            disallowed_tools: Vec::new(),
            resume: None,
            governance: &NO_GOVERNANCE,
        }
    }

    #[test]
    fn argv_has_the_flags_and_never_the_task() {
        let sel = selection();
        let plan = plan(&settings(), &invocation("-rf everything", &sel), &daemon_env());
        let args = plan.args.join(" ");
        assert!(args.starts_with("-p --output-format stream-json --verbose"), "{args}");
        assert!(args.contains("--strict-mcp-config --mcp-config /tmp/w/mcp.json"), "{args}");
        assert!(args.contains("--allowedTools mcp__telegram__* mcp__fs__* --bare"), "{args}");
        assert!(args.contains("--append-system-prompt-file /srv/app/profiles/default.md"), "{args}");
        assert!(args.contains("--max-turns 5"), "{args}");
        assert!(!plan.args.iter().any(|a| a.contains("everything")), "the task is not in argv: {args}");
        assert!(!plan.args.contains(&"--".to_owned()), "no prompt argument: {args}");
        assert_eq!(plan.stdin, "-rf everything");
        assert_eq!(plan.cwd, Path::new("/srv/app/workspace"));
    }

    #[test]
    fn an_output_schema_is_one_argument() {
        let sel = selection();
        let mut inv = invocation("t", &sel);
        inv.json_schema = Some(r#"{"type":"object"}"#.to_owned());
        inv.disallowed_tools = vec!["mcp__fs__write_file".into()];
        inv.resume = Some((Path::new("/d/sessions/s-1.jsonl"), true));
        let plan = plan(&settings(), &inv, &daemon_env());
        assert!(plan.args.contains(&r#"--json-schema={"type":"object"}"#.to_owned()), "{:?}", plan.args);
        assert!(plan.args.join(" ").ends_with("--disallowedTools mcp__fs__write_file"), "{:?}", plan.args);
        assert!(plan.args.join(" ").contains("--resume=/d/sessions/s-1.jsonl --fork-session"), "{:?}", plan.args);
    }

    #[test]
    fn governance_flags() {
        let sel = selection();
        let args = plan(&settings(), &invocation("t", &sel), &daemon_env()).args;
        assert!(!args.iter().any(|a| a.starts_with("--max-budget-usd") || a.starts_with("--fallback-model")));
        assert!(!args.contains(&"--include-partial-messages".to_owned()));
        let governance = Governance {
            max_budget_usd: Some(0.25),
            idle_timeout: Some(Duration::from_secs(5)),
            fallback_models: vec!["a".into(), "b".into()],
            ..Governance::default()
        };
        let inv = Invocation { governance: &governance, ..invocation("t", &sel) };
        let args = plan(&settings(), &inv, &daemon_env()).args;
        for flag in ["--max-budget-usd=0.25", "--fallback-model=a,b", "--include-partial-messages"] {
            assert!(args.contains(&flag.to_owned()), "{flag} in {args:?}");
        }
    }

    #[test]
    fn every_task_goes_on_stdin_whatever_its_size() {
        let sel = selection();
        for task in ["a-task".to_owned(), "a task\nwith lines -- and --flags".to_owned(), "x".repeat(200 * 1024)] {
            let plan = plan(&settings(), &invocation(&task, &sel), &daemon_env());
            assert_eq!(plan.stdin, task);
            assert!(plan.args.iter().all(|a| !a.contains(task.as_str())), "not in argv");
        }
    }

    #[test]
    fn environment_is_explicit() {
        let sel = selection();
        let env = plan(&settings(), &invocation("t", &sel), &daemon_env()).env;
        assert_eq!(env["TELEGRAM_BOT_TOKEN"], "123:secret");
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk-ant");
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:9");
        assert_eq!(env["EXTRA"], "x");
        assert!(!env.contains_key("OPENAI_API_KEY"));
        assert_eq!(env["HOME"], "/tmp/w/home", "a placeholder naming HOME must not win over the isolated HOME");
        assert_eq!(env["CLAUDE_CODE_MAX_RETRIES"], "2");
        assert_eq!(env["MCP_CONNECTION_NONBLOCKING"], "0");
        assert_eq!(env["PATH"], "/srv/app/.tools/bin:/usr/bin:/bin");
        assert_eq!(env["MCP_WORKERS_WORKSPACE"], "/srv/app/workspace");
    }
}
