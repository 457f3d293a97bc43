//! `enqueue` and `tasks` as a user runs them, around a served queue.

use serde_json::{Value, json};

use crate::support::{self, Driver, HttpServer, data_dir};

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(support::BIN).arg("--data-dir").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_enqueue_from_file_show_and_dead_letters() {
    let dir = data_dir();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, "{\"prompt\": \"first\"}\n\n\"second\"\n").unwrap();
    let ids: Vec<String> =
        cli(dir.path(), &["enqueue", "--file", file.to_str().unwrap()]).lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 2);

    let server = HttpServer::start(dir.path(), &["--timeout=20", "--lease=1s", "--max-attempts=1"]);
    let mut d = Driver::http(&server.url);
    let w = d.create_worker();
    let got = d.call("p1", "worker_poll", json!({"worker_id": w}));
    assert_eq!(got["json"]["prompt"], "first");
    // Not submitted: after its one attempt the lease runs out and the task is dead-lettered.
    server.wait_log("dead-lettered");
    let dead = cli(dir.path(), &["tasks", "--dead"]);
    assert!(dead.contains(&ids[0]) && dead.contains("lease expired after 1 attempt(s)"), "{dead}");
    assert!(!dead.contains(&ids[1]), "{dead}");

    let got = d.call("p2", "worker_poll", json!({"worker_id": w}));
    assert_eq!(got["json"]["prompt"], "second");
    let late = d.call("late", "worker_submit", json!({"worker_id": w, "task_id": ids[0], "response": "late"}));
    assert!(late["json"]["error"].as_str().unwrap().contains("given up"), "{late}");
    d.call("s", "worker_submit", json!({"worker_id": w, "task_id": ids[1], "response": "answer two"}));
    let shown = cli(dir.path(), &["tasks", "show", &ids[1]]);
    assert!(shown.contains("state:    done") && shown.contains("response:\nanswer two"), "{shown}");
    let json: Value = serde_json::from_str(&cli(dir.path(), &["tasks", "show", &ids[1], "--json"])).unwrap();
    assert_eq!(json["response"], "answer two");
}
