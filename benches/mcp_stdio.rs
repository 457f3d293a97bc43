//! Stdio MCP servers side by side (issue 13; see BENCHMARKS.md): `cargo bench --bench mcp_stdio`.
//!
//! One raw JSON-RPC client (std threads, one line per message) drives, in one run:
//! `mcp-workers mcp queue` (`worker_create`: a durable insert per call), `mcp-workers mcp telegram`
//! (no token: `tg_get_chat` answers from memory), and the baseline, the official Node
//! `@modelcontextprotocol/server-filesystem` from `.tools/` (`list_allowed_directories`, answered
//! from memory). For each it prints: spawn to `initialize` answered (median), idle RSS after
//! `tools/list`, sequential calls/s, pipelined calls/s (64 in flight), the server's CPU per call
//! (utime + stime from /proc/PID/stat), and RSS after all calls; each with its ratio to the
//! baseline. Then full queue cycles over stdio (a `worker_poll` that finds a task, its
//! `worker_submit`), and `serve` over Streamable HTTP with 16 clients (benches/support/http.rs).
//!
//! `MCP_STDIO_EXTRA="NAME|TOOL|COMMAND ARGS...;..."` adds servers (each run with `sh -c exec`, its
//! tool called with `{}`): another implementation, or an older build of ours, side by side.
//! `MCP_STDIO_BASE_BIN=PATH` (an older `mcp-workers`, e.g. a build of the previous commit) adds its
//! `mcp queue` and `mcp telegram` as columns, and runs the queue cycles and `serve` over HTTP for
//! it too, alternating with this build: what a change bought, measured in one run.
//! Every phase takes the servers in turn, so all of them see the same load on the machine.
//! `MCP_STDIO_SOAK=1000000` also makes that many calls to each of our servers, printing RSS.

#[path = "support/http.rs"]
mod http;
#[path = "support/stdio.rs"]
mod stdio;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_workers::store::{QueueStore, SqliteMode, SqliteStore};
use serde_json::{Value, json};
use stdio::{Client, Figures, cpu_ticks_split, cpu_us, rss_kib};

const COLD_STARTS: usize = 20;
const SEQUENTIAL: usize = 4000;
const PIPELINED: usize = 16_000;
const IN_FLIGHT: usize = 64;
const ROUNDS: usize = 3;
const CYCLES: usize = 2000;

/// One server under test: how to start it and its trivial call.
struct Server {
    name: String,
    command: Command,
    tool: String,
    args: Value,
}

/// The older build named by `MCP_STDIO_BASE_BIN`, if any.
fn base_bin() -> Option<String> {
    std::env::var("MCP_STDIO_BASE_BIN").ok().filter(|p| !p.is_empty())
}

fn ours(data_dir: &Path, args: &[&str]) -> Command {
    ours_at(http::BIN, data_dir, args)
}

fn ours_at(bin: &str, data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir").arg(data_dir).args(args).env("RUST_LOG", "warn").env_remove("TELEGRAM_BOT_TOKEN");
    cmd
}

fn servers(data_dir: &Path, files_dir: &Path) -> Vec<Server> {
    let node_server = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(node_server.is_file(), "{} is missing: run scripts/setup.sh", node_server.display());
    let mut node = Command::new("node");
    node.arg(&node_server).arg(files_dir);
    let mut list = vec![
        Server {
            name: "server-filesystem (Node)".into(),
            command: node,
            tool: "list_allowed_directories".into(),
            args: json!({}),
        },
        Server {
            name: "mcp queue".into(),
            command: ours(data_dir, &["mcp", "queue"]),
            tool: "worker_create".into(),
            args: json!({}),
        },
        Server {
            name: "mcp telegram".into(),
            command: ours(data_dir, &["mcp", "telegram"]),
            tool: "tg_get_chat".into(),
            args: json!({"chat_id": "@bench"}),
        },
    ];
    if let Some(base) = base_bin() {
        // Its own data directory: the two builds' sweepers never share a lock.
        let base_dir = data_dir.join("base");
        list.push(Server {
            name: "base: mcp queue".into(),
            command: ours_at(&base, &base_dir, &["mcp", "queue"]),
            tool: "worker_create".into(),
            args: json!({}),
        });
        list.push(Server {
            name: "base: mcp telegram".into(),
            command: ours_at(&base, &base_dir, &["mcp", "telegram"]),
            tool: "tg_get_chat".into(),
            args: json!({"chat_id": "@bench"}),
        });
    }
    let extra = std::env::var("MCP_STDIO_EXTRA").unwrap_or_default();
    for entry in extra.split(';').filter(|e| !e.trim().is_empty()) {
        let mut parts = entry.splitn(3, '|');
        let (Some(name), Some(tool), Some(cmdline)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("MCP_STDIO_EXTRA entry `{entry}` is not NAME|TOOL|COMMAND");
        };
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("exec {cmdline}")).env("RUST_LOG", "warn");
        list.push(Server { name: name.trim().into(), command, tool: tool.into(), args: json!({}) });
    }
    list
}

/// Every figure for every server. Each phase takes the servers in turn, round by round, so that a
/// change of load on the machine falls on all of them alike.
fn measure(servers: &mut [Server]) -> Vec<Figures> {
    let mut starts: Vec<Vec<Duration>> = servers.iter().map(|_| Vec::with_capacity(COLD_STARTS)).collect();
    for _ in 0..COLD_STARTS {
        for (server, starts) in servers.iter_mut().zip(&mut starts) {
            let (client, took) = Client::start(&mut server.command);
            starts.push(took);
            client.finish();
        }
    }
    let mut clients = Vec::new();
    for server in servers.iter_mut() {
        let (mut client, _) = Client::start(&mut server.command);
        client.notify("notifications/initialized");
        let tools = client.request("tools/list", json!({}));
        assert!(tools["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{tools}");
        let idle_rss = (rss_kib(client.pid), stdio::status_kib(client.pid, "RssAnon"));
        let call = json!({"name": server.tool, "arguments": server.args});
        for _ in 0..200 {
            let reply = client.request("tools/call", call.clone());
            assert!(reply.get("result").is_some(), "{}: {reply}", server.name);
        }
        clients.push((client, call, idle_rss));
    }
    let n = servers.len();
    let (mut seq, mut seq_cpu, mut seq_sys, mut pipe, mut pipe_cpu) =
        (vec![vec![]; n], vec![vec![]; n], vec![vec![]; n], vec![vec![]; n], vec![vec![]; n]);
    for _ in 0..ROUNDS {
        for (i, (client, call, _)) in clients.iter_mut().enumerate() {
            let ((user, system), cpu) = (cpu_ticks_split(client.pid), cpu_us(client.pid));
            let took = client.sequential("tools/call", call, SEQUENTIAL);
            seq[i].push(SEQUENTIAL as f64 / took.as_secs_f64());
            let ((user_after, system_after), cpu_after) = (cpu_ticks_split(client.pid), cpu_us(client.pid));
            let per_call = (cpu_after - cpu) / SEQUENTIAL as f64;
            seq_cpu[i].push(per_call);
            // The kernel's share, from the (coarse) ticks, of the exact figure.
            let ticks = (user_after + system_after - user - system).max(1);
            seq_sys[i].push(per_call * (system_after - system) as f64 / ticks as f64);
            let before = cpu_us(client.pid);
            let took = client.pipelined("tools/call", call, PIPELINED, IN_FLIGHT);
            pipe[i].push(PIPELINED as f64 / took.as_secs_f64());
            pipe_cpu[i].push((cpu_us(client.pid) - before) / PIPELINED as f64);
        }
    }
    let mut figures = Vec::new();
    for (i, ((client, _, idle_rss), starts)) in clients.into_iter().zip(starts).enumerate() {
        let busy_rss = rss_kib(client.pid);
        client.finish();
        figures.push(Figures {
            start_ms: stdio::median_ms(starts),
            idle_rss_kib: idle_rss.0,
            idle_anon_kib: idle_rss.1,
            seq_per_s: http::median(std::mem::take(&mut seq[i])),
            pipe_per_s: http::median(std::mem::take(&mut pipe[i])),
            seq_cpu_us: http::median(std::mem::take(&mut seq_cpu[i])),
            seq_sys_us: http::median(std::mem::take(&mut seq_sys[i])),
            pipe_cpu_us: http::median(std::mem::take(&mut pipe_cpu[i])),
            busy_rss_kib: busy_rss,
        });
    }
    figures
}

/// Full queue cycles over stdio, one worker: a `worker_poll` that finds a task, then its submit.
/// One round of [`CYCLES`] on a fresh store in `data_dir`; returns calls/s and CPU per call.
fn queue_cycles(bin: &str, data_dir: &Path) -> (f64, f64) {
    let dir = tempfile::tempdir_in(data_dir.parent().unwrap_or(data_dir)).expect("tempdir");
    // Queued by the build under test, whose store (and schema) it is.
    let lines: String = (0..CYCLES).map(|i| format!("\"bench prompt {i}\"\n")).collect();
    let mut enqueue = ours_at(bin, dir.path(), &["enqueue", "--file", "-"]);
    let mut child = enqueue.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("enqueue");
    child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("prompts written");
    assert!(child.wait().expect("enqueue ran").success(), "{bin} enqueue failed");
    let (mut client, _) = Client::start(&mut ours_at(bin, dir.path(), &["mcp", "queue"]));
    client.notify("notifications/initialized");
    let text = |reply: &Value| -> Value {
        serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
    };
    let created = text(&client.request("tools/call", json!({"name": "worker_create", "arguments": {}})));
    let worker = created["worker_id"].as_str().expect("worker_id").to_owned();
    let before = cpu_us(client.pid);
    let started = std::time::Instant::now();
    for _ in 0..CYCLES {
        let poll = json!({"name": "worker_poll", "arguments": {"worker_id": worker}});
        let task = text(&client.request("tools/call", poll));
        let task_id = task["task_id"].as_str().expect("a task");
        let submit =
            json!({"name": "worker_submit", "arguments": {"worker_id": worker, "task_id": task_id, "response": "ok"}});
        assert_eq!(text(&client.request("tools/call", submit))["submitted"], true);
    }
    let rate = 2.0 * CYCLES as f64 / started.elapsed().as_secs_f64();
    let cpu = (cpu_us(client.pid) - before) / (2 * CYCLES) as f64;
    client.finish();
    (rate, cpu)
}

/// What the store costs per `worker_create` in-process, awaited from a current-thread runtime:
/// one caller at a time, and 16 at once (their writes share commits). `Inline` is how `mcp queue`
/// runs it; `Threads` how `serve` does (there on a multi-thread runtime).
fn store_costs(n: usize, mode: SqliteMode) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store = rt.block_on(async { std::sync::Arc::new(SqliteStore::open_with(dir.path(), mode).expect("store")) });
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let mut alone = Vec::new();
    let mut together = Vec::new();
    for _ in 0..ROUNDS {
        let took = rt.block_on(async {
            let started = std::time::Instant::now();
            for _ in 0..n {
                store.create_worker(Duration::from_secs(60)).await.expect("create");
            }
            started.elapsed()
        });
        alone.push(per_call(took));
        let took = rt.block_on(async {
            let started = std::time::Instant::now();
            let callers = (0..16).map(|_| {
                let store = std::sync::Arc::clone(&store);
                async move {
                    for _ in 0..n / 16 {
                        store.create_worker(Duration::from_secs(60)).await.expect("create");
                    }
                }
            });
            futures_util::future::join_all(callers).await;
            started.elapsed()
        });
        together.push(per_call(took));
    }
    (http::median(alone), http::median(together))
}

/// `MCP_STDIO_SOAK=N`: N pipelined calls to each of our servers, RSS printed after every tenth.
fn soak(servers: &mut [Server], n: usize) {
    for server in servers.iter_mut().filter(|s| s.name.starts_with("mcp ")) {
        let (mut client, _) = Client::start(&mut server.command);
        client.notify("notifications/initialized");
        let call = json!({"name": server.tool, "arguments": server.args});
        let mut line = format!("{}: RSS MiB every {} calls:", server.name, n / 10);
        line.push_str(&format!(" {:.1}", rss_kib(client.pid) / 1024.0));
        for _ in 0..10 {
            client.pipelined("tools/call", &call, n / 10, IN_FLIGHT);
            line.push_str(&format!(" {:.1}", rss_kib(client.pid) / 1024.0));
        }
        client.finish();
        println!("{line}");
    }
}

fn main() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let files_dir = tempfile::tempdir().expect("tempdir");
    let mut servers = servers(data_dir.path(), files_dir.path());
    let figures = measure(&mut servers);
    if let Some(n) = std::env::var("MCP_STDIO_SOAK").ok().and_then(|n| n.parse::<usize>().ok()) {
        println!("## RSS over {n} pipelined calls ({IN_FLIGHT} in flight)");
        soak(&mut servers, n);
    }
    let results: Vec<(String, Figures)> = servers.into_iter().map(|s| s.name).zip(figures).collect();
    println!("## stdio servers, one raw JSON-RPC client ({COLD_STARTS} cold starts; median of {ROUNDS} rounds of");
    println!("## {SEQUENTIAL} sequential and {PIPELINED} pipelined calls, {IN_FLIGHT} in flight)");
    stdio::print_table(&results);
    let node = &results[0].1;
    let mut builds = vec![("this build", http::BIN.to_owned(), data_dir.path().to_path_buf())];
    if let Some(base) = base_bin() {
        builds.push(("base", base, data_dir.path().join("base")));
    }
    println!(
        "## mcp queue over stdio: worker_poll (finds a task) + worker_submit, sequential ({CYCLES} cycles x {ROUNDS})"
    );
    // Round by round, builds in turn, then the medians.
    let mut cycles: Vec<(Vec<f64>, Vec<f64>)> = builds.iter().map(|_| (vec![], vec![])).collect();
    for _ in 0..ROUNDS {
        for ((_, bin, dir), (rates, cpus)) in builds.iter().zip(&mut cycles) {
            let (rate, cpu) = queue_cycles(bin, dir);
            rates.push(rate);
            cpus.push(cpu);
        }
    }
    for ((name, _, _), (rates, cpus)) in builds.iter().zip(cycles) {
        let (rate, cpu) = (http::median(rates), http::median(cpus));
        println!(
            "{name}: calls/s: {rate:.0} ({:.2}x the baseline's sequential calls/s); server CPU per call {cpu:.1} us ({:.2}x)",
            rate / node.seq_per_s,
            cpu / node.seq_cpu_us
        );
    }
    println!(
        "## the store per call, in-process (`create_worker`, {SEQUENTIAL} calls x {ROUNDS}, current-thread runtime)"
    );
    for (name, mode) in [("inline (mcp queue)", SqliteMode::Inline), ("threads (serve)", SqliteMode::Threads)] {
        let (alone, together) = store_costs(SEQUENTIAL, mode);
        println!(
            "{name}: one caller: {alone:.1} us per call; 16 callers at once: {together:.1} us per call (group commit)"
        );
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bins: Vec<&str> = builds.iter().map(|(_, bin, _)| bin.as_str()).collect();
    rt.block_on(http::print_http_cycles_of(&bins, 3000));
}
