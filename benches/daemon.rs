//! The daemon's own cost per worker, measured against a stub `claude` that prints a valid
//! stream-json transcript and exits. Prints figures; asserts nothing. Run:
//!
//!     cargo bench --bench daemon
//!
//! 1. baseline: the stub spawned directly (spawn, read its output, reap), one at a time;
//! 2. overhead: one action at a time through `mcp-workers run --max-workers 1`, from writing the
//!    line to reading its `worker_result`, minus the baseline median;
//! 3. throughput: 1,000 actions written at once, results per second (and the direct-spawn rate with
//!    the same concurrency, as a ratio);
//! 4. memory: peak RSS of the daemon with 256 workers in flight (a stub that sleeps).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/stub.rs"]
mod stub;
use stub::stub;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join(".claude")).unwrap();
    std::fs::write(root.join(".claude/mcp_servers.json"), r#"{"mcpServers":{"bench":{"command":"true"}}}"#).unwrap();
    let fast = stub(root, "claude-fast", "");
    let slow = stub(root, "claude-slow", "sleep 3\n");

    let n = 300;
    let baseline = direct_spawns(&fast, n);
    let base_median = percentile(&baseline, 50.0);
    println!(
        "baseline: stub spawn+exit, direct      median {:>8.3} ms  p99 {:>8.3} ms  (n={n})",
        ms(base_median),
        ms(percentile(&baseline, 99.0))
    );

    let mut daemon = Daemon::start(root, &fast, 1);
    for i in 0..20 {
        daemon.roundtrip(i); // warm-up
    }
    let through: Vec<Duration> = (0..n).map(|i| daemon.roundtrip(1000 + i)).collect();
    daemon.finish();
    let overhead: Vec<Duration> = through.iter().map(|d| d.saturating_sub(base_median)).collect();
    println!(
        "through the daemon, one at a time      median {:>8.3} ms  p99 {:>8.3} ms",
        ms(percentile(&through, 50.0)),
        ms(percentile(&through, 99.0))
    );
    println!(
        "daemon overhead per worker             median {:>8.3} ms  p99 {:>8.3} ms",
        ms(percentile(&overhead, 50.0)),
        ms(percentile(&overhead, 99.0))
    );

    let concurrency = 16;
    let total = 1000;
    let direct_rate = direct_parallel(&fast, total, concurrency);
    let mut daemon = Daemon::start(root, &fast, concurrency);
    let started = Instant::now();
    for i in 0..total {
        daemon.send(i);
    }
    daemon.close_input();
    let results = daemon.read_all();
    let rate = results as f64 / started.elapsed().as_secs_f64();
    assert_eq!(results, total, "every action gets one result");
    println!(
        "throughput, {total} actions, {concurrency} at once     {rate:>8.0} results/s  (direct spawns: {direct_rate:.0}/s, ratio {:.2})",
        rate / direct_rate
    );

    let in_flight = 256;
    let mut daemon = Daemon::start(root, &slow, in_flight);
    for i in 0..in_flight {
        daemon.send(i);
    }
    daemon.close_input();
    let pid = daemon.child.id();
    let results = daemon.read_all();
    assert_eq!(results, in_flight);
    println!(
        "peak daemon RSS with {in_flight} workers in flight  {:>8.1} MiB",
        daemon.peak_rss_kib.unwrap_or(0) as f64 / 1024.0
    );
    let _ = pid;
}

fn direct_spawns(stub: &Path, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(stub).stdin(Stdio::null()).output().expect("run stub");
            assert!(out.status.success());
            t.elapsed()
        })
        .collect()
}

fn direct_parallel(stub: &Path, total: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let per_thread = total / concurrency;
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| direct_spawns(stub, per_thread));
        }
    });
    (per_thread * concurrency) as f64 / started.elapsed().as_secs_f64()
}

struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    peak_rss_kib: Option<u64>,
}

impl Daemon {
    fn start(root: &Path, claude: &Path, max_workers: usize) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-workers"))
            .args(["--root", &root.to_string_lossy(), "run", "--claude", &claude.to_string_lossy()])
            .args(["--max-workers", &max_workers.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the daemon");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout, peak_rss_kib: None }
    }

    fn send(&mut self, i: usize) {
        let line = format!(
            "{{\"actions\":[{{\"type\":\"spawn_worker\",\"task\":\"bench {i}\",\"servers\":[\"bench\"],\"taskId\":\"b{i}\"}}]}}\n"
        );
        self.stdin.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
    }

    fn roundtrip(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        self.send(i);
        self.stdin.as_mut().unwrap().flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let elapsed = t.elapsed();
        assert!(line.contains("\"success\":true"), "{line}");
        elapsed
    }

    fn close_input(&mut self) {
        self.stdin.take();
    }

    fn read_all(&mut self) -> usize {
        let mut n = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
            assert!(line.contains("\"success\":true"), "{line}");
            n += 1;
            if let Some(kib) = vm_hwm_kib(self.child.id()) {
                self.peak_rss_kib = Some(kib);
            }
        }
        let _ = self.child.wait();
        n
    }

    fn finish(mut self) {
        self.close_input();
        self.read_all();
    }
}

/// Peak resident set size so far (`VmHWM`), in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
