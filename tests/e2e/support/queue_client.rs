//! The queue's black-box clients: the official Python MCP client (driven line by line through
//! `driver.py`), a Streamable HTTP server process, and `enqueue`/`tasks`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BIN, python, repo_root};

pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `mcp-workers enqueue` in its own process; returns the task ids.
pub fn enqueue(dir: &Path, prompts: &[&str]) -> Vec<String> {
    let out = Command::new(BIN).arg("--data-dir").arg(dir).arg("enqueue").args(prompts).output().expect("enqueue");
    assert!(out.status.success(), "enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// `mcp-workers tasks --json`.
pub fn tasks(dir: &Path) -> Vec<Value> {
    let out = Command::new(BIN).arg("--data-dir").arg(dir).args(["tasks", "--json"]).output().expect("tasks");
    assert!(out.status.success(), "tasks failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("tasks --json")
}

/// Reads lines of a child's pipe into a channel (and a log kept for failure messages).
fn pump(reader: impl std::io::Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push(line.clone());
            if tx.send(line).is_err() {
                // keep draining so the child never blocks on a full pipe
            }
        }
    });
    rx
}

/// Waits (up to 30 s) until `log` has a line containing `needle`.
pub fn wait_for_line(log: &Mutex<Vec<String>>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(Instant::now() < deadline, "no log line with {needle:?} in {:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Streamable HTTP server for the queue's blocking tests: `mcp-workers --data-dir DIR serve`,
/// started as [`super::daemon::Server`] starts it (`serve_words`, `listening_url`).
pub struct HttpServer {
    pub child: Child,
    pub url: String,
    /// Everything the server wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start(dir: &Path, flags: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(super::daemon::serve_words(flags))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = pump(child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(base) = super::daemon::listening_url(&line) {
                        break format!("{base}/mcp");
                    }
                }
                Err(_) => panic!("serve did not start: {:?}", stderr.lock().unwrap()),
            }
        };
        Self { child, url, stderr }
    }

    /// Waits until the server logged a line containing `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_for_line(&self.stderr, needle);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The official Python MCP SDK client, one JSON command per line.
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<String>,
    pending: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Driver {
    fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, None)
    }

    /// Over stdio, with exactly this environment for the driver and (whole) for the server it
    /// starts: `command` is the server's command line.
    pub fn stdio_with_env(command: &[&str], env: &[(String, String)]) -> Self {
        let mut args = vec!["--inherit-env", "--stdio"];
        args.extend_from_slice(command);
        Self::spawn_with(&args, Some(env))
    }

    /// `env`: an environment built from nothing, else the test's own.
    fn spawn_with(args: &[&str], env: Option<&[(String, String)]>) -> Self {
        let mut command = Command::new(python());
        command.arg(repo_root().join("tests/e2e/support/driver.py")).args(args);
        if let Some(env) = env {
            command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python driver");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let _stderr_lines = pump(child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        let events = pump(child.stdout.take().expect("stdout"), Arc::new(Mutex::new(Vec::new())));
        let stdin = child.stdin.take();
        let mut driver = Self { child, stdin, events, pending: Vec::new(), stderr };
        driver.expect(|e| e["event"] == "ready", Duration::from_secs(30));
        driver
    }

    /// Over HTTP, to a running server.
    pub fn http(url: &str) -> Self {
        Self::spawn(&["--url", url])
    }

    /// Over HTTP with the SDK's connect mode: `legacy` (initialize handshake) or `auto`
    /// (the newest protocol the server offers).
    pub fn http_mode(url: &str, mode: &str) -> Self {
        Self::spawn(&["--url", url, "--mode", mode])
    }

    /// Over stdio: the client starts `mcp-workers --data-dir DIR mcp queue FLAGS`.
    pub fn stdio(dir: &Path, flags: &[&str]) -> Self {
        let dir = dir.to_str().expect("utf-8 path");
        let mut args = vec!["--stdio", BIN, "--data-dir", dir, "mcp", "queue"];
        args.extend_from_slice(flags);
        Self::spawn(&args)
    }

    pub fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().expect("driver stdin open");
        writeln!(stdin, "{cmd}").expect("write to driver");
        stdin.flush().expect("flush driver");
    }

    /// Waits for the first event matching `pred` (earlier non-matching events are kept).
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    let event: Value =
                        serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "raw", "line": line}));
                    if pred(&event) {
                        return event;
                    }
                    self.pending.push(event);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no matching event within {timeout:?}; seen {:?}; driver stderr: {:?}",
                    self.pending,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Starts a tool call without waiting.
    pub fn start(&mut self, id: &str, tool: &str, args: Value, progress: bool) {
        self.send(json!({"op": "call", "id": id, "tool": tool, "args": args, "progress": progress}));
    }

    /// The outcome (result, error or cancelled) of call `id`.
    pub fn outcome(&mut self, id: &str, timeout: Duration) -> Value {
        let id = id.to_owned();
        self.expect(move |e| e["id"] == id.as_str() && e["event"] != "progress", timeout)
    }

    /// A tool call, waiting for its result event.
    pub fn call(&mut self, id: &str, tool: &str, args: Value) -> Value {
        self.start(id, tool, args, false);
        let event = self.outcome(id, Duration::from_secs(30));
        assert_eq!(event["event"], "result", "{event}");
        event
    }

    pub fn create_worker(&mut self) -> String {
        let r = self.call("create", "worker_create", json!({}));
        assert_eq!(r["is_error"], false, "{r}");
        r["json"]["worker_id"].as_str().expect("worker_id").to_owned()
    }

    /// The client's stderr so far (a stdio server's log goes there).
    pub fn stderr_log(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.stderr)
    }

    /// Kills the client process (a worker that vanishes).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}
