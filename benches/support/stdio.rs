//! The raw JSON-RPC client over stdio of benches/mcp_stdio.rs (one message per line, std threads,
//! the same for every server), /proc readings, and the table it prints.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::PROTOCOL;

/// A started server with its pipes.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    next_id: u64,
}

impl Client {
    /// Spawns the server and sends `initialize`; returns once it is answered, with the time from
    /// just before the spawn to the answer.
    pub fn start(command: &mut Command) -> (Self, Duration) {
        let t0 = Instant::now();
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let pid = child.id();
        let mut client = Self { child, stdin, stdout, pid, next_id: 0 };
        let params =
            json!({"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}});
        let reply = client.request("initialize", params);
        let took = t0.elapsed();
        assert!(reply["result"]["serverInfo"].is_object(), "{reply}");
        (client, took)
    }

    fn line(&mut self, method: &str, params: &Value) -> Vec<u8> {
        self.next_id += 1;
        let mut line =
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
                .expect("json");
        line.push(b'\n');
        line
    }

    pub fn notify(&mut self, method: &str) {
        let line = format!("{}\n", json!({"jsonrpc": "2.0", "method": method}));
        self.stdin.write_all(line.as_bytes()).expect("write");
    }

    /// Reads lines until the reply with `id` (skipping notifications and requests).
    fn reply(&mut self, id: u64) -> Value {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).expect("read") > 0, "the server closed stdout");
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            if v["id"] == id {
                return v;
            }
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let line = self.line(method, &params);
        self.stdin.write_all(&line).expect("write");
        self.reply(self.next_id)
    }

    /// `n` requests one at a time; returns the elapsed time.
    pub fn sequential(&mut self, method: &str, params: &Value, n: usize) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            let line = self.line(method, params);
            self.stdin.write_all(&line).expect("write");
            let reply = self.reply(self.next_id);
            assert!(reply.get("result").is_some(), "{reply}");
        }
        started.elapsed()
    }

    /// `n` requests with up to `in_flight` unanswered at any time (a reader thread counts the
    /// replies and hands back one credit per reply); returns the elapsed time.
    pub fn pipelined(&mut self, method: &str, params: &Value, n: usize, in_flight: usize) -> Duration {
        let (credit_tx, credit_rx) = mpsc::channel::<()>();
        let stdout = &mut self.stdout;
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut line = String::new();
                let mut got = 0;
                while got < n {
                    line.clear();
                    assert!(stdout.read_line(&mut line).expect("read") > 0, "the server closed stdout");
                    if line.contains("\"result\"") || line.contains("\"error\"") {
                        assert!(!line.contains("\"error\""), "{line}");
                        got += 1;
                        let _ = credit_tx.send(());
                    }
                }
            });
            let mut sent = 0;
            while sent < n {
                if sent >= in_flight {
                    credit_rx.recv().expect("reader ended early");
                }
                self.next_id += 1;
                let mut line = serde_json::to_vec(
                    &json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}),
                )
                .expect("json");
                line.push(b'\n');
                self.stdin.write_all(&line).expect("write");
                sent += 1;
            }
        });
        started.elapsed()
    }

    /// Closes stdin and reaps the server (killing it if it does not exit within 5 s).
    pub fn finish(self) {
        let Self { mut child, stdin, .. } = self;
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// utime + stime of the whole process (all its threads), in clock ticks.
/// The process's CPU time in microseconds, to the nanosecond: the sum of its threads' time on a
/// CPU (`/proc/PID/task/*/schedstat`), where `/proc/PID/stat` counts in clock ticks (10 ms: a
/// quarter of a 4,000-call round's figure per tick). A thread that ends between two readings
/// takes its time with it; these servers keep theirs for a round. Falls back to the ticks where
/// the kernel keeps no schedstat.
pub fn cpu_us(pid: u32) -> f64 {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut ns = 0u64;
    for thread in threads.flatten() {
        let Ok(stat) = std::fs::read_to_string(thread.path().join("schedstat")) else { continue };
        match stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            Some(on_cpu) => ns += on_cpu,
            None => return ticks_to_us(cpu_ticks(pid)),
        }
    }
    ns as f64 / 1e3
}

pub fn cpu_ticks(pid: u32) -> u64 {
    let (user, system) = cpu_ticks_split(pid);
    user + system
}

/// The process's CPU time in clock ticks, user and system (kernel) apart.
pub fn cpu_ticks_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (fields[11].parse::<u64>().expect("utime"), fields[12].parse::<u64>().expect("stime"))
}

pub fn ticks_to_us(ticks: u64) -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100.0)
    });
    ticks as f64 * 1e6 / hz
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `RssAnon`).
pub fn status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':'))).expect("field");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("status value")
}

/// VmRSS in KiB.
pub fn rss_kib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS")
}

pub fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// The figures of one server.
pub struct Figures {
    pub start_ms: f64,
    pub idle_rss_kib: f64,
    /// The private part of it (`RssAnon`: heap, stacks, written data; not the shared file pages).
    pub idle_anon_kib: f64,
    pub seq_per_s: f64,
    pub pipe_per_s: f64,
    pub seq_cpu_us: f64,
    /// The kernel's part of it (system time): system calls, wake-ups, context switches.
    pub seq_sys_us: f64,
    pub pipe_cpu_us: f64,
    pub busy_rss_kib: f64,
}

/// A Markdown table: one column per server, each figure followed by its ratio to the first
/// server's (the baseline): `(x0.25)` is a quarter of the baseline's figure.
pub fn print_table(results: &[(String, Figures)]) {
    let base = &results[0].1;
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    println!("| figure (ratio: this server / {}) | {} |", names[0], names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    type Row = (&'static str, fn(&Figures) -> f64);
    let rows: [Row; 9] = [
        ("spawn -> `initialize` answered, median (ms)", |f| f.start_ms),
        ("idle RSS after `tools/list` (MiB)", |f| f.idle_rss_kib / 1024.0),
        ("of which private, `RssAnon` (MiB)", |f| f.idle_anon_kib / 1024.0),
        ("sequential calls/s", |f| f.seq_per_s),
        ("pipelined calls/s (64 in flight)", |f| f.pipe_per_s),
        ("server CPU per call, sequential (us)", |f| f.seq_cpu_us),
        ("of which in the kernel (system time, us)", |f| f.seq_sys_us),
        ("server CPU per call, pipelined (us)", |f| f.pipe_cpu_us),
        ("RSS after all calls (MiB)", |f| f.busy_rss_kib / 1024.0),
    ];
    for (label, get) in rows {
        let cells: Vec<String> = results
            .iter()
            .enumerate()
            .map(|(i, (_, f))| {
                let v = get(f);
                let value = if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
                if i == 0 { value } else { format!("{value} (x{:.2})", v / get(base)) }
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}
