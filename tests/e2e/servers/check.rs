//! `mcp-workers check` against the shipped registry and a broken one.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{FakeBotApi, TOKEN, repo_root, run_bin, tool};

fn server<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["servers"].as_array().and_then(|s| s.iter().find(|s| s["name"] == name)).unwrap_or_else(|| {
        panic!("no {name} in {report:#}");
    })
}

#[tokio::test]
async fn shipped_registry_is_healthy_with_a_token() {
    tool("mcp-server-filesystem");
    tool("mcp-server-fetch");
    let api = FakeBotApi::start().await;
    let root = repo_root();
    let root = root.to_string_lossy();
    let (code, stdout, stderr) = run_bin(
        &["--root", &root, "check", "--json"],
        &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_API_BASE", &api.base())],
        &std::env::temp_dir(),
    )
    .await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("sEcReT") && !stderr.contains("sEcReT"), "the token leaked: {stdout} {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("check --json prints JSON");
    assert_eq!(report["ok"], true);
    // This machine has cgroup v1: the process tree; on a delegated cgroup v2 the cgroup.
    let containment = report["containment"].as_str().unwrap_or_default();
    assert!(containment.starts_with("process tree") || containment.starts_with("cgroup v2"), "{report}");
    let tools = |name: &str| -> Vec<String> {
        let s = server(&report, name);
        assert_eq!(s["status"], "ok", "{s}");
        assert!(s["start_ms"].as_u64().is_some(), "{s}");
        s["tools"].as_array().expect("tools").iter().map(|t| t.as_str().expect("name").to_owned()).collect()
    };
    assert_eq!(tools("telegram"), ["tg_delete", "tg_edit", "tg_get_chat", "tg_pin", "tg_send"]);
    assert_eq!(tools("fetch"), ["fetch"]);
    let fs = tools("filesystem");
    for want in ["read_file", "write_file", "list_directory"] {
        assert!(fs.iter().any(|t| t == want), "{fs:?} lacks {want}");
    }
    assert!(api.requests().is_empty(), "check must not call the Bot API");
}

#[tokio::test]
async fn a_missing_token_is_named_in_the_table_and_fails_the_check() {
    let root = repo_root();
    let root = root.to_string_lossy();
    let (code, stdout, stderr) = run_bin(&["--root", &root, "check", "telegram"], &[], &std::env::temp_dir()).await;
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("SERVER") && lines[0].contains("STATUS") && lines[0].contains("START"), "{stdout}");
    let row = lines.iter().find(|l| l.starts_with("telegram")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("missing_env") && row.contains("TELEGRAM_BOT_TOKEN is not set"), "{row}");
    assert!(row.contains(" 5 "), "the tools are still listed: {row}");
}

#[tokio::test]
async fn broken_servers_are_named_bounded_and_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let registry = dir.path().join("registry.json");
    let hang = format!("echo $$ >> {0}; sleep 60 & echo $! >> {0}; wait", pids.display());
    let doc = serde_json::json!({"mcpServers": {
        "nocmd": {"command": "surely-not-an-installed-mcp-server"},
        "dies": {"command": "sh", "args": ["-c", "echo 'fatal: no config' >&2; exit 3"]},
        "hangs": {"command": "sh", "args": ["-c", hang]},
        "fs-missing": {"command": "mcp-workers", "args": ["mcp", "no-roots", "--", "not-an-fs-server"]},
        "needs-key": {"command": "mcp-workers", "args": ["mcp", "telegram"],
                      "env": {"TELEGRAM_BOT_TOKEN": "${SOME_UNSET_KEY_FOR_CHECK}"}},
        "remote": {"type": "http", "url": "http://127.0.0.1:1/mcp"}
    }});
    std::fs::write(&registry, doc.to_string()).expect("write registry");
    let started = Instant::now();
    let (code, stdout, stderr) = run_bin(
        &["--root", &dir.path().to_string_lossy(), "check", "--json", "--timeout", "1s", "--registry"]
            .into_iter()
            .chain([&*registry.to_string_lossy()])
            .collect::<Vec<_>>(),
        &[],
        dir.path(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(elapsed < Duration::from_secs(10), "check took {elapsed:?}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    let expect = |name: &str, status: &str, detail: &str| {
        let s = server(&report, name);
        assert_eq!(s["status"], status, "{s}");
        assert!(s["detail"].as_str().is_some_and(|d| d.contains(detail)), "{name}: {s}");
    };
    expect("nocmd", "missing_command", "command not found: surely-not-an-installed-mcp-server");
    expect("dies", "failed", "fatal: no config");
    expect("hangs", "failed", "no answer within 1s");
    expect("fs-missing", "missing_command", "command not found: not-an-fs-server");
    expect("needs-key", "missing_env", "SOME_UNSET_KEY_FOR_CHECK is not set");
    expect("remote", "skipped", "stdio servers only");

    // The hanging server and its child were killed with their process group.
    let pids = std::fs::read_to_string(&pids).expect("the hanging server wrote its pids");
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "process {pid} outlived check");
    }
}

/// Whether `pid` is still a live process (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}
