//! The rate-limit breaker's effect (issue 10). Prints figures; asserts nothing. Run:
//!
//!     cargo bench --profile dev --bench breaker
//!
//! (The dev profile: what is measured is the real Claude Code CLI against the stand-in model,
//! not the daemon's code; a release build of every dependency would cost the shared machine
//! minutes for nothing.)
//!
//! 50 actions through `mcp-workers run` (the real CLI from `.tools/bin`, `--max-workers 6`,
//! each action `retries: 10`), against the test suite's stand-in model with a limiter: it admits
//! at most 3 requests per second and answers 429 (`retry-after: 2`, rejected rate-limit headers)
//! to every request beyond that and to **any request made within 2 s of a rejected one**. Once
//! with `--no-rate-limit-breaker`, once with the breaker, in that order, in one run: how many API
//! requests the fleet made, how many were rejected, how long the batch took, how many succeeded.

#[allow(dead_code)]
#[path = "../tests/e2e/support/fake_model.rs"]
mod fake_model;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_model::{FakeModel, Request, rate_limited, text};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ACTIONS: usize = 50;
const WORKERS: &str = "6";
/// Requests admitted per second before the limiter rejects.
const PER_SECOND: usize = 3;
/// A request this soon after a rejected one is rejected too.
const COOL_DOWN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Limiter {
    admitted: VecDeque<Instant>,
    last_rejected: Option<Instant>,
    rejected: u64,
}

impl Limiter {
    fn admit(&mut self, now: Instant) -> bool {
        while self.admitted.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1)) {
            self.admitted.pop_front();
        }
        let cooling = self.last_rejected.is_some_and(|at| now.duration_since(at) < COOL_DOWN);
        if cooling || self.admitted.len() >= PER_SECOND {
            self.last_rejected = Some(now);
            self.rejected += 1;
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

struct Figures {
    requests: usize,
    rejected: u64,
    took: Duration,
    succeeded: usize,
    pauses: usize,
}

async fn batch(breaker: bool) -> Figures {
    let model = FakeModel::start().await;
    let limiter = Arc::new(Mutex::new(Limiter::default()));
    let gate = limiter.clone();
    model.script("bench-breaker", move |_: &Request| {
        let admitted = gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(Instant::now());
        if admitted { text("done") } else { rate_limited(2) }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for sub in [".claude", "profiles", "workspace"] {
        std::fs::create_dir_all(root.join(sub)).expect("project layout");
    }
    let bin = env!("CARGO_BIN_EXE_mcp-workers");
    let registry = json!({"mcpServers": {"telegram": {"command": bin, "args": ["mcp", "telegram"]}}});
    std::fs::write(root.join(".claude/mcp_servers.json"), registry.to_string()).expect("registry");
    let claude = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/claude");
    assert!(claude.exists(), "run scripts/setup.sh --tools-only first");
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("--root")
        .arg(root)
        .args(["run", "--max-workers", WORKERS, "--retry-backoff", "1s", "--claude"])
        .arg(&claude)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", "dummy-key-for-the-stand-in")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if !breaker {
        command.arg("--no-rate-limit-breaker");
    }
    let mut child = command.spawn().expect("start mcp-workers run");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = Instant::now();
    let actions: Vec<Value> = (0..ACTIONS)
        .map(|i| {
            json!({"type": "spawn_worker", "taskId": format!("b{i}"), "task": format!("bench-breaker {i}"),
                   "servers": ["telegram"], "timeout": 600_000, "retries": 10})
        })
        .collect();
    stdin.write_all(format!("{}\n", json!({ "actions": actions })).as_bytes()).await.expect("write");
    drop(stdin);
    let (mut results, mut succeeded, mut pauses) = (0, 0, 0);
    while let Ok(Some(line)) = lines.next_line().await {
        let line: Value = serde_json::from_str(&line).expect("stdout is JSON");
        match line["type"].as_str() {
            Some("worker_result") => {
                results += 1;
                succeeded += usize::from(line["success"] == true);
            }
            Some("dispatch_paused") => pauses += 1,
            _ => {}
        }
    }
    let took = started.elapsed();
    let _ = child.wait().await;
    assert_eq!(results, ACTIONS, "every action gets one result");
    let rejected = limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).rejected;
    Figures { requests: model.request_count(), rejected, took, succeeded, pauses }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let without = batch(false).await;
        let with = batch(true).await;
        println!(
            "{ACTIONS} actions, {WORKERS} workers, stand-in: {PER_SECOND} requests/s, 429 within {COOL_DOWN:?} of a 429"
        );
        for (name, f) in [("without the breaker", &without), ("with the breaker", &with)] {
            println!(
                "{name:<20} requests {:>4}  rejected {:>4}  batch {:>7.1} s  succeeded {:>2}/{ACTIONS}  pauses {}",
                f.requests,
                f.rejected,
                f.took.as_secs_f64(),
                f.succeeded,
                f.pauses
            );
        }
        println!(
            "ratio with/without: requests {:.2}, batch time {:.2}",
            with.requests as f64 / without.requests.max(1) as f64,
            with.took.as_secs_f64() / without.took.as_secs_f64().max(f64::EPSILON)
        );
    });
}
