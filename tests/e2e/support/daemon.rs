//! The daemon as a black box: a throw-away project directory, `mcp-workers run` as a child, and
//! line-by-line access to its stdout. Every wait is on the daemon's own output, bounded only so a
//! broken test fails instead of hanging.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::fake_model::FakeModel;

/// How long any single expected line may take before the test fails.
pub const LINE_LIMIT: Duration = Duration::from_secs(120);

/// A project root: `.claude/mcp_servers.json`, `profiles/`, `workspace/`, and a private TMPDIR
/// where the daemon's per-worker directories can be watched.
pub struct Project {
    _dir: TempDir,
    pub root: PathBuf,
    /// A value only this test's processes carry in their environment (see [`Project::processes`]).
    pub marker: String,
}

impl Project {
    /// A project whose registry holds `servers` (the `mcpServers` object).
    pub fn new(servers: Value) -> Project {
        let dir = tempfile::tempdir().expect("project temp dir");
        let root = dir.path().canonicalize().expect("canonical project dir");
        for sub in [".claude", "profiles", "workspace", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).expect("project layout");
        }
        let registry = json!({ "mcpServers": servers });
        std::fs::write(root.join(".claude/mcp_servers.json"), registry.to_string()).expect("registry");
        let marker = format!("e2e-{}", uuid_like());
        Project { _dir: dir, root, marker }
    }

    /// The registry entry for the real server-filesystem, confined to the workspace.
    pub fn filesystem_entry() -> Value {
        json!({
            "command": super::tools_bin().join("mcp-server-filesystem"),
            "args": ["${MCP_WORKERS_WORKSPACE}"]
        })
    }

    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The daemons' scratch directories in the private TMPDIR (`mcp-workers-run-<pid>-*`).
    pub fn scratch_roots(&self) -> Vec<PathBuf> {
        scratch_roots(&self.tmp())
    }

    /// The per-worker directories (MCP config, HOME) inside the scratch directories.
    pub fn worker_dirs(&self) -> Vec<PathBuf> {
        worker_dirs(&self.tmp())
    }

    /// Live processes (other than `except`) whose environment carries this project's marker:
    /// the daemon passes it to workers with `--pass-env`, and MCP servers inherit it from them.
    pub fn processes(&self, except: Option<u32>) -> Vec<(u32, String)> {
        let needle = format!("E2E_MARKER={}", self.marker);
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if Some(pid) == except {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                // A zombie is already dead; it only waits for its parent to reap it.
                if state.split_whitespace().nth(2) == Some("Z") {
                    continue;
                }
                found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }
}

impl Project {
    /// `mcp-workers --root <project> <words> --claude <real CLI> --pass-env E2E_MARKER`, with an
    /// environment built from nothing: PATH, a private TMPDIR, the fake model, the marker.
    pub fn command(&self, model: &FakeModel, words: &[&str]) -> Command {
        let (argv, env) = self.invocation(model, words);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear().envs(env);
        command
    }

    /// [`Project::command`] as its argv (the binary first) and its whole environment, for
    /// launchers that start the daemon themselves (an MCP client starting a stdio server).
    pub fn invocation(&self, model: &FakeModel, words: &[&str]) -> (Vec<String>, Vec<(String, String)>) {
        let mut argv = vec![super::BIN.to_owned(), "--root".to_owned(), self.root.to_string_lossy().into_owned()];
        argv.extend(words.iter().map(|w| (*w).to_owned()));
        argv.extend(["--claude".to_owned(), super::claude().to_string_lossy().into_owned()]);
        argv.extend(["--pass-env".to_owned(), "E2E_MARKER".to_owned()]);
        let env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("TMPDIR".to_owned(), self.tmp().to_string_lossy().into_owned()),
            ("ANTHROPIC_BASE_URL".to_owned(), model.base_url()),
            ("ANTHROPIC_API_KEY".to_owned(), "dummy-key-for-the-fake-model".to_owned()),
            ("E2E_MARKER".to_owned(), self.marker.clone()),
            ("RUST_LOG".to_owned(), "mcp_workers=debug".to_owned()),
        ];
        (argv, env)
    }
}

/// The `mcp-workers-run-<pid>-*` scratch directories under `tmp`.
pub fn scratch_roots(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("mcp-workers-run-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The per-worker directories inside the scratch directories under `tmp`.
pub fn worker_dirs(tmp: &Path) -> Vec<PathBuf> {
    scratch_roots(tmp)
        .iter()
        .flat_map(|root| std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path()))
        .collect()
}

/// `mcp-workers run` with its pipes.
pub struct Daemon {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    /// stderr as read so far.
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Waits until the daemon's stderr (its log) contains `needle`. Panics after LINE_LIMIT.
    pub async fn wait_for_log(&self, needle: &str) {
        let found = tokio::time::timeout(LINE_LIMIT, async {
            while !self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(needle) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "the daemon never logged {needle:?}");
    }

    /// Starts `mcp-workers --root <project> run <args>` against `model`.
    pub fn start(project: &Project, model: &FakeModel, args: &[&str]) -> Daemon {
        Self::start_env(project, model, args, &[], &[])
    }

    /// [`Daemon::start`] with the variables `remove` taken out of the daemon's environment and
    /// `add` put in (e.g. subscription auth instead of the API key).
    pub fn start_env(
        project: &Project,
        model: &FakeModel,
        args: &[&str],
        remove: &[&str],
        add: &[(&str, &str)],
    ) -> Daemon {
        let mut command = project.command(model, &["run"]);
        for name in remove {
            command.env_remove(name);
        }
        command.envs(add.iter().copied());
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().expect("start mcp-workers");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = child.stderr.take().expect("stderr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mirror = seen.clone();
        let stderr = tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                mirror
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        });
        Daemon { child, stdin, stdout, stderr, seen }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("daemon pid")
    }

    /// Writes one line (a newline is added).
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line.as_bytes()).await.expect("write to the daemon");
        stdin.write_all(b"\n").await.expect("write to the daemon");
        stdin.flush().await.expect("flush to the daemon");
    }

    /// Writes these bytes as they are (no newline added) and flushes them.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).await.expect("write to the daemon");
        stdin.flush().await.expect("flush to the daemon");
    }

    /// Sends `{"actions":[action]}`.
    pub async fn send_action(&mut self, action: Value) {
        self.send(&json!({ "actions": [action] }).to_string()).await;
    }

    /// Closes stdin: end of input.
    pub fn close(&mut self) {
        self.stdin.take();
    }

    /// The next protocol line, parsed. Panics (with the daemon's stderr) on EOF or after LINE_LIMIT.
    pub async fn next(&mut self) -> Value {
        match tokio::time::timeout(LINE_LIMIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {line}"))
            }
            other => {
                let _ = self.child.start_kill();
                let stderr = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr).await;
                panic!(
                    "no line from the daemon: {other:?}\nstderr:\n{}",
                    stderr.ok().and_then(Result::ok).unwrap_or_default()
                );
            }
        }
    }

    /// Reads `n` lines.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            lines.push(self.next().await);
        }
        lines
    }

    /// Reads `n` `worker_result` lines, skipping the breaker's `dispatch_*` lines.
    pub async fn results(&mut self, n: usize) -> Vec<Value> {
        let mut results = Vec::with_capacity(n);
        while results.len() < n {
            let line = self.next().await;
            if !line["type"].as_str().is_some_and(|t| t.starts_with("dispatch_")) {
                results.push(line);
            }
        }
        results
    }

    /// Waits for the daemon to exit; returns its status, the rest of stdout, and stderr.
    pub async fn finish(mut self) -> (ExitStatus, Vec<Value>, String) {
        self.close();
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(LINE_LIMIT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => rest.push(serde_json::from_str(&line).expect("stdout is JSON")),
                Ok(_) => break,
                Err(_) => panic!("the daemon did not close stdout"),
            }
        }
        let status = tokio::time::timeout(LINE_LIMIT, self.child.wait()).await.expect("daemon exits").expect("wait");
        let stderr = self.stderr.await.unwrap_or_default();
        (status, rest, stderr)
    }

    /// Waits for the daemon to exit on its own, with stdin still open.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(LINE_LIMIT, self.child.wait()).await.expect("the daemon exits").expect("wait")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -s {signal}");
    }
}

/// A spawn_worker action.
pub fn action(task_id: &str, task: &str, servers: &[&str], timeout_ms: u64) -> Value {
    json!({"type": "spawn_worker", "taskId": task_id, "task": task, "servers": servers, "timeout": timeout_ms})
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

/// Asserts a path is absent, with a helpful message.
pub fn assert_gone(path: &Path) {
    assert!(!path.exists(), "{} should be gone", path.display());
}

/// How every test starts `serve` (this [`Server`], and the blocking `queue_client::HttpServer` of
/// the queue's synchronous tests): `serve ARGS`, on 127.0.0.1:0 unless ARGS has a `--listen`.
pub fn serve_words<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut words = vec!["serve"];
    words.extend_from_slice(args);
    if !args.iter().any(|a| *a == "--listen" || a.starts_with("--listen=")) {
        words.extend(["--listen", "127.0.0.1:0"]);
    }
    words
}

/// The base URL (`http://127.0.0.1:PORT`) in `serve`'s `listening on http://ADDR/mcp` line.
pub fn listening_url(line: &str) -> Option<String> {
    let url = line.strip_prefix("listening on ")?;
    Some(url.trim().trim_end_matches("/mcp").replace("0.0.0.0", "127.0.0.1"))
}

/// `mcp-workers serve` on 127.0.0.1:0 (or another `--listen`), its address read from its stderr.
pub struct Server {
    pub child: Child,
    pub base: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl Server {
    /// Starts `mcp-workers --root <project> --data-dir <project>/data serve <args>` against
    /// `model` and waits for its "listening on" line.
    pub async fn start(project: &Project, model: &FakeModel, args: &[&str], env: &[(&str, &str)]) -> Server {
        match Self::try_start(project, model, args, env).await {
            Ok(server) => server,
            Err(stderr) => panic!("the server did not start:\n{stderr}"),
        }
    }

    /// Like `start`; on failure returns the server's stderr.
    pub async fn try_start(
        project: &Project,
        model: &FakeModel,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let data = project.root.join("data").to_string_lossy().into_owned();
        let mut words = vec!["--data-dir", data.as_str()];
        words.extend(serve_words(args));
        let mut command = project.command(model, &words);
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start mcp-workers serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = String::new();
        let base = loop {
            match tokio::time::timeout(LINE_LIMIT, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(base) = listening_url(&line) {
                        break base;
                    }
                }
                _ => return Err(seen),
            }
        };
        let stderr = tokio::spawn(async move {
            let mut rest = seen;
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });
        Ok(Server { child, base, stderr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("server pid").to_string();
        let status = std::process::Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -s {signal}");
    }

    /// Waits for the server to exit; returns its status and stderr.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(LINE_LIMIT, self.child.wait()).await.expect("server exits").expect("wait");
        let stderr = tokio::time::timeout(Duration::from_secs(10), self.stderr).await.ok().and_then(Result::ok);
        (status, stderr.unwrap_or_default())
    }
}

/// Reads Server-Sent Events from a response: `(id, event, data)` triples.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(url: &str, last_event_id: Option<i64>) -> SseReader {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("GET events");
        assert_eq!(response.status(), 200);
        SseReader { response, buffer: String::new() }
    }

    /// The next event with an id (keep-alive comments skipped). Panics after LINE_LIMIT or at the end.
    pub async fn next(&mut self) -> (i64, String, Value) {
        loop {
            if let (Some(id), event, data) = self.next_event().await {
                return (id, event, data);
            }
        }
    }

    /// The next event, with its id if it has one (an event whose journal write is being retried
    /// has none).
    pub async fn next_event(&mut self) -> (Option<i64>, String, Value) {
        // Keep-alive comments do not extend the wait.
        let deadline = tokio::time::Instant::now() + LINE_LIMIT;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    return (id, event, serde_json::from_str(&data).expect("event data is JSON"));
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.expect("an event in time");
            match chunk.expect("read events") {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => panic!("the event stream ended"),
            }
        }
    }

    /// Reads events until `n` `result` events have arrived; returns them (and every id seen).
    pub async fn results(&mut self, n: usize) -> (Vec<Value>, Vec<i64>) {
        let (mut results, mut ids) = (Vec::new(), Vec::new());
        while results.len() < n {
            let (id, event, data) = self.next().await;
            ids.push(id);
            if event == "result" {
                results.push(data);
            }
        }
        (results, ids)
    }
}
