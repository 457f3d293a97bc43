//! No process left behind, even one that escapes its worker's process group, and no fd or zombie
//! kept for it; and the task text never in argv. `run` and `serve`, with the real CLI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::daemon::{Daemon, Project, Server, action};
use crate::support::fake_model::{FakeModel, Request, text};

/// How many escaping workers each test runs.
const ESCAPING: usize = 4;
/// How long the daemon may take to get back to its baseline after the last result.
const SETTLE: Duration = Duration::from_secs(20);

/// The real server-filesystem, started by a shell that first leaves behind a grandchild in a
/// session of its own (`setsid`) that ignores HUP, INT and TERM, and holds the CLI's stdout and
/// stderr: the daemon's own pipes.
fn escaping_entry() -> Value {
    let fs = crate::support::tools_bin().join("mcp-server-filesystem");
    let script = r#"setsid sh -c 'trap "" HUP INT TERM; exec sleep 600' >/proc/$PPID/fd/1 2>/proc/$PPID/fd/2 </dev/null &
exec "$0" "$@""#;
    json!({"command": "sh", "args": ["-c", script, fs, "${MCP_WORKERS_WORKSPACE}"]})
}

fn project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry(), "escaping": escaping_entry() }))
}

/// The number of open fds of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).expect("the daemon's /proc/PID/fd")
}

/// Children of `pid` that are zombies (exited, never reaped).
fn zombies_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            found.extend(entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()));
        }
    }
    found
}

/// Waits (bounded) until the daemon has nothing left: no process of this test but the daemon, no
/// zombie child, and its fd count back to `baseline` (or below: an HTTP client's connection that
/// was open when the baseline was taken may have closed since).
async fn assert_back_to_baseline(project: &Project, daemon: u32, baseline: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (left, zombies, fds) = (project.processes(Some(daemon)), zombies_of(daemon), open_fds(daemon));
        if left.is_empty() && zombies.is_empty() && fds <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?}: left behind {left:?}, zombies {zombies:?}, {fds} fds open (baseline {baseline})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn escaping_actions(prefix: &str) -> Vec<Value> {
    (0..ESCAPING).map(|i| action(&format!("{prefix}{i}"), &format!("escape-{i}"), &["escaping"], 60_000)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_leaves_no_escaped_process_fd_or_zombie() {
    let project = project();
    let model = FakeModel::start().await;
    model.script("warm-up", vec![text("warm")]);
    model.script("escape-", vec![text("escaped")]);
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "4"]);
    daemon.send_action(action("w", "warm-up", &["filesystem"], 60_000)).await;
    assert_eq!(daemon.next().await["success"], true);
    let pid = daemon.pid();
    let baseline = open_fds(pid);

    daemon.send(&json!({ "actions": escaping_actions("e") }).to_string()).await;
    for result in daemon.take(ESCAPING).await {
        assert_eq!((result["success"].as_bool(), result["result"].as_str()), (Some(true), Some("escaped")), "{result}");
    }
    assert_back_to_baseline(&project, pid, baseline).await;
    let (status, rest, stderr) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    assert!(stderr.contains("containment of worker processes"), "the start-up log names the mechanism:\n{stderr}");
    assert_eq!(project.processes(None), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_leaves_no_escaped_process_fd_or_zombie() {
    let project = project();
    let model = FakeModel::start().await;
    model.script("warm-up", vec![text("warm")]);
    model.script("escape-", vec![text("escaped")]);
    let server = Server::start(&project, &model, &["--max-workers", "4"], &[]).await;
    let post = |body: Value| {
        let url = server.url("/v1/actions?wait=true");
        async move {
            let response = reqwest::Client::new().post(url).json(&body).send().await.expect("POST");
            response.json::<Value>().await.expect("JSON answer")
        }
    };
    let warm = post(json!({"actions": [action("w", "warm-up", &["filesystem"], 60_000)]})).await;
    assert_eq!(warm["results"][0]["success"], true, "{warm}");
    let pid = server.child.id().expect("server pid");
    let baseline = open_fds(pid);

    let answer = post(json!({ "actions": escaping_actions("e") })).await;
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), ESCAPING, "{answer}");
    assert!(results.iter().all(|r| r["success"] == true), "{answer}");
    assert_back_to_baseline(&project, pid, baseline).await;
    server.signal("TERM");
    let (status, stderr) = server.wait().await;
    assert!(status.success(), "{status:?}");
    assert!(stderr.contains("containment of worker processes"), "the start-up log names the mechanism:\n{stderr}");
    assert_eq!(project.processes(None), vec![]);
}

/// Whether any process's command line holds `needle`.
fn in_some_argv(needle: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_reaches_the_cli_whole_on_stdin_and_never_in_argv() {
    let project = Project::new(json!({ "filesystem": Project::filesystem_entry() }));
    let model = FakeModel::start().await;
    let token = format!("secret-task-{}", std::process::id());
    let tasks = [
        format!("{token}-a"),
        format!("-- --{token}-b starts like flags\n\tsecond line: ünïcödé $HOME `id` \"q\" 'q' \\ end"),
        format!("{token}-c {}", "z".repeat(150 * 1024)),
    ];
    // While the worker waits for the model, its CLI (and its servers) run: look at every argv.
    model.script(&token, |request: &Request| {
        // The task's token word, without the dashes some tasks put before it.
        let token = request.task();
        let token = token.split_whitespace().find(|w| w.contains("secret-task-")).unwrap_or_default();
        let key = token.trim_start_matches('-');
        text(if in_some_argv(key) { "the task is in an argv" } else { "argv clean" })
    });
    let mut daemon = Daemon::start(&project, &model, &[]);
    for (i, task) in tasks.iter().enumerate() {
        daemon.send_action(action(&format!("s{i}"), task, &["filesystem"], 60_000)).await;
        let result = daemon.next().await;
        assert_eq!(result["result"], "argv clean", "{result}");
        let key = ["a", "b", "c"][i];
        let seen = model.requests_for(&format!("{token}-{key}"));
        let seen = seen.last().map(Request::task).unwrap_or_default();
        assert_eq!(seen.len(), task.len(), "task {i} arrived whole");
        assert_eq!(&seen, task, "task {i} arrived unchanged");
    }
    daemon.finish().await;
}
