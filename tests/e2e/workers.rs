//! `mcp-workers mcp workers`: the worker pool as MCP tools, driven by the official Python MCP client
//! over stdio and by the real Claude Code CLI (a worker that spawns workers), with real
//! server-filesystem and the stand-in model.

use serde_json::{Value, json};

use crate::support::Driver;
use crate::support::daemon::{Daemon, LINE_LIMIT, Project, action};
use crate::support::fake_model::{FakeModel, Gate, Request, gated, hang, text, tool_use};

fn fs_project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry() }))
}

/// The Python client with `mcp-workers --root PROJECT mcp workers FLAGS` as its stdio server.
fn driver(project: &Project, model: &FakeModel, flags: &[&str], extra_env: &[(&str, &str)]) -> Driver {
    let mut words = vec!["mcp", "workers", "--progress-interval", "200ms"];
    words.extend_from_slice(flags);
    let (argv, mut env) = project.invocation(model, &words);
    env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    Driver::stdio_with_env(&argv, &env)
}

/// Runs a blocking driver call on this multi-thread runtime (the stand-in model keeps serving).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn call(driver: &mut Driver, id: &str, tool: &str, args: Value) -> Value {
    blocking(|| {
        driver.start(id, tool, args, false);
        let event = driver.outcome(id, LINE_LIMIT);
        assert_eq!(event["event"], "result", "{event}");
        event
    })
}

fn write_script(model: &FakeModel, key: &str, path: String, content: &'static str) {
    model.script(key, move |r: &Request| {
        if r.turn() > 0 {
            return text("file written");
        }
        tool_use("mcp__filesystem__write_file", json!({"path": path, "content": content}))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_worker_returns_the_observed_result_within_its_wait() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let target = project.workspace().join("from-mcp.txt");
    write_script(&model, "mcp-write", target.to_string_lossy().into_owned(), "written through MCP");
    let mut driver = driver(&project, &model, &[], &[]);

    let tools = blocking(|| {
        driver.send(json!({"op": "list_tools"}));
        driver.expect(|e| e["event"] == "tools", LINE_LIMIT)
    });
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["spawn_worker", "worker_wait", "worker_status", "worker_cancel", "worker_list"]);
    let spawn = &tools["tools"][0]["inputSchema"];
    assert_eq!(spawn["properties"]["servers"]["items"]["enum"], json!(["filesystem"]), "{spawn}");
    assert_eq!(spawn["required"], json!(["task", "servers"]));

    let reply = call(
        &mut driver,
        "s1",
        "spawn_worker",
        json!({"task": "mcp-write a file", "servers": ["filesystem"], "taskId": "mcp-1", "wait": 50}),
    );
    assert_eq!(reply["is_error"], false, "{reply}");
    let result = &reply["structured"];
    assert_eq!(result["type"], "worker_result", "{reply}");
    assert_eq!(result["taskId"], "mcp-1");
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["toolsUsed"], json!(["write_file"]));
    assert!(reply["text"].as_str().unwrap().starts_with("worker mcp-1 succeeded"), "{reply}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written through MCP");

    // Admission errors come back at once as tool errors with their kind.
    let refused = call(&mut driver, "s2", "spawn_worker", json!({"task": "x", "servers": ["nope"]}));
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(refused["structured"]["error"]["kind"], "unknown_server", "{refused}");
    let invalid = call(&mut driver, "s3", "spawn_worker", json!({"task": "", "servers": ["filesystem"]}));
    assert_eq!(invalid["structured"]["error"]["kind"], "invalid_action", "{invalid}");

    let listed = call(&mut driver, "l1", "worker_list", json!({}));
    assert_eq!(listed["structured"]["workers"][0]["taskId"], "mcp-1", "{listed}");
    assert_eq!(listed["structured"]["workers"][0]["state"], "done", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_then_worker_wait_with_progress_and_an_idempotent_retry() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let gate = Gate::new();
    let path = project.workspace().join("slow.txt").to_string_lossy().into_owned();
    model.script(
        "slow-job",
        vec![
            tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "first step"})),
            gated(&gate, text("slow answer")),
        ],
    );
    let mut driver = driver(&project, &model, &[], &[]);

    let args = json!({"task": "slow-job", "servers": ["filesystem"], "wait": 0, "idempotencyKey": "k-1"});
    let handle = call(&mut driver, "h1", "spawn_worker", args.clone());
    assert_eq!(handle["is_error"], false, "{handle}");
    let task_id = handle["structured"]["taskId"].as_str().expect("a handle has the taskId").to_owned();
    assert!(["queued", "running"].contains(&handle["structured"]["state"].as_str().unwrap()), "{handle}");
    assert!(handle["text"].as_str().unwrap().contains("worker_wait"), "the handle says what to do next: {handle}");

    // The same idempotency key gives the same task, and no second worker.
    let again = call(&mut driver, "h2", "spawn_worker", args);
    assert_eq!(again["structured"]["taskId"], task_id.as_str(), "{again}");

    // worker_wait with a progress token hears progress while the worker runs.
    blocking(|| driver.start("w1", "worker_wait", json!({"taskIds": [task_id], "wait": 50}), true));
    // The notifications say what the worker did so far: turns, the tool it used.
    let progress = blocking(|| {
        driver.expect(
            |e| {
                e["id"] == "w1"
                    && e["event"] == "progress"
                    && e["message"].as_str().is_some_and(|m| m.contains("tools used: write_file"))
            },
            LINE_LIMIT,
        )
    });
    let message = progress["message"].as_str().unwrap();
    assert!(message.contains(&task_id) && message.contains("running"), "{progress}");
    let status = call(&mut driver, "st", "worker_status", json!({"taskId": task_id}));
    assert_eq!(status["structured"]["progress"]["toolsUsed"], json!(["write_file"]), "{status}");
    gate.open();
    let done = blocking(|| driver.outcome("w1", LINE_LIMIT));
    assert_eq!(done["event"], "result", "{done}");
    assert_eq!(done["structured"]["success"], true, "{done}");
    assert_eq!(done["structured"]["result"], "slow answer");
    let first_turns = model.requests_for("slow-job").iter().filter(|r| r.turn() == 0).count();
    assert_eq!(first_turns, 1, "one worker for the two calls with one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_ends_the_wait_not_the_worker() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let gate = Gate::new();
    model.script("keeps-going", vec![gated(&gate, text("finished anyway"))]);
    let mut driver = driver(&project, &model, &[], &[]);

    let args = json!({"task": "keeps-going", "servers": ["filesystem"], "taskId": "kg-1", "wait": 50});
    blocking(|| driver.start("c1", "spawn_worker", args, false));
    model.wait_for_requests(1).await;
    blocking(|| driver.send(json!({"op": "cancel", "id": "c1"})));
    let cancelled = blocking(|| driver.outcome("c1", LINE_LIMIT));
    assert_eq!(cancelled["event"], "cancelled", "{cancelled}");

    let status = call(&mut driver, "st", "worker_status", json!({"taskId": "kg-1"}));
    assert_eq!(status["structured"]["state"], "running", "the worker goes on: {status}");
    gate.open();
    let done = call(&mut driver, "w", "worker_wait", json!({"taskIds": ["kg-1"], "wait": 50}));
    assert_eq!(done["structured"]["success"], true, "{done}");
    assert_eq!(done["structured"]["result"], "finished anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_cancel_stops_the_worker_and_leaves_no_process() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("never-ends", vec![hang()]);
    let mut driver = driver(&project, &model, &[], &[]);

    let handle = call(
        &mut driver,
        "h",
        "spawn_worker",
        json!({"task": "never-ends", "servers": ["filesystem"], "taskId": "ne-1", "wait": 0}),
    );
    assert_eq!(handle["structured"]["taskId"], "ne-1", "{handle}");
    model.wait_for_requests(1).await;
    let workers = || {
        project
            .processes(None)
            .into_iter()
            .filter(|(_, cmd)| !cmd.contains("driver.py") && !cmd.contains(" mcp workers"))
    };
    assert!(workers().count() > 0, "the worker's CLI and server run");

    let cancel = call(&mut driver, "c", "worker_cancel", json!({"taskId": "ne-1"}));
    assert_eq!(cancel["structured"]["cancelling"], true, "{cancel}");
    let done = call(&mut driver, "w", "worker_wait", json!({"taskIds": ["ne-1"], "wait": 50}));
    assert_eq!(done["structured"]["success"], false, "{done}");
    assert_eq!(done["structured"]["error"]["kind"], "cancelled", "{done}");
    assert_eq!(workers().collect::<Vec<_>>(), Vec::<(u32, String)>::new(), "nothing of the worker is left");

    let unknown = call(&mut driver, "u", "worker_status", json!({"taskId": "no-such"}));
    assert_eq!(unknown["is_error"], true, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_server_at_the_depth_limit_refuses_to_spawn() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let mut driver = driver(&project, &model, &[], &[("MCP_WORKERS_DEPTH", "2")]);
    let refused = call(&mut driver, "d", "spawn_worker", json!({"task": "too deep", "servers": ["filesystem"]}));
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(refused["structured"]["error"]["kind"], "depth_exceeded", "{refused}");
    assert_eq!(model.request_count(), 0, "no worker started");
}

/// The real Claude Code CLI as the MCP client: a worker (level 1) spawns a worker (level 2) that
/// writes a file; level 2 may not spawn a level 3 (the default depth limit is 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_spawns_a_worker_through_the_workers_server() {
    let claude = crate::support::claude().to_string_lossy().into_owned();
    let project = Project::new(json!({
        "filesystem": Project::filesystem_entry(),
        "workers": {
            "command": "mcp-workers",
            "args": ["--root", "${MCP_WORKERS_ROOT}", "mcp", "workers", "--claude", claude, "--pass-env", "E2E_MARKER"],
            "description": "Claude Code workers"
        }
    }));
    let model = FakeModel::start().await;
    let target = project.workspace().join("nested.txt");
    let path = target.to_string_lossy().into_owned();
    model.script("outer-job", |r: &Request| match r.turn() {
        0 => tool_use(
            "mcp__workers__spawn_worker",
            json!({"task": "inner-job: write nested.txt", "servers": ["filesystem", "workers"], "wait": 50}),
        ),
        _ => text(format!("inner said: {:?}", r.last_tool_results())),
    });
    model.script("inner-job", move |r: &Request| match r.turn() {
        // Level 2 tries to go one level deeper first.
        0 => tool_use("mcp__workers__spawn_worker", json!({"task": "third-level", "servers": ["filesystem"]})),
        1 => {
            let results = r.last_tool_results();
            assert!(results[0].1 && results[0].0.contains("depth_exceeded"), "level 3 refused: {results:?}");
            tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "from level 2"}))
        }
        _ => text("inner wrote it"),
    });
    let mut daemon = Daemon::start(&project, &model, &[]);
    daemon.send_action(action("outer-1", "outer-job", &["workers"], 120_000)).await;
    let result = daemon.next().await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["toolsUsed"], json!(["spawn_worker"]), "{result}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "from level 2");
    assert!(result["result"].as_str().unwrap().contains("inner wrote it"), "{result}");
    assert!(model.requests_for("third-level").is_empty(), "no third level ran");
}

/// The same tools on `serve`'s `/mcp`, beside the queue's, with the journal behind them: a result
/// is in `GET /v1/tasks/{id}`, and a client that reconnects still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_offers_the_workers_tools_beside_the_queue_with_the_journal_behind_them() {
    use crate::support::daemon::Server;
    let project = fs_project();
    let model = FakeModel::start().await;
    let target = project.workspace().join("from-serve.txt");
    write_script(&model, "serve-write", target.to_string_lossy().into_owned(), "written through serve's /mcp");
    let gate = Gate::new();
    model.script("serve-slow", vec![gated(&gate, text("slow but done"))]);
    let server = Server::start(&project, &model, &[], &[]).await;
    let url = server.url("/mcp");
    let mut client = blocking(|| Driver::http(&url));

    let tools = blocking(|| {
        client.send(json!({"op": "list_tools"}));
        client.expect(|e| e["event"] == "tools", LINE_LIMIT)
    });
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    for name in ["worker_create", "worker_poll", "worker_submit", "spawn_worker", "worker_wait", "worker_cancel"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }

    let done = call(
        &mut client,
        "a",
        "spawn_worker",
        json!({"task": "serve-write a file", "servers": ["filesystem"], "taskId": "sv-1", "wait": 50}),
    );
    assert_eq!(done["structured"]["success"], true, "{done}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written through serve's /mcp");
    let record: Value = reqwest::get(server.url("/v1/tasks/sv-1")).await.unwrap().json().await.unwrap();
    assert_eq!(record["state"], "done", "journalled like any action: {record}");
    assert_eq!(record["result"]["toolsUsed"], json!(["write_file"]));

    let handle = call(
        &mut client,
        "b",
        "spawn_worker",
        json!({"task": "serve-slow", "servers": ["filesystem"], "idempotencyKey": "once", "wait": 0}),
    );
    let slow_id = handle["structured"]["taskId"].as_str().expect("a handle").to_owned();
    drop(client);

    // A new session: the handle still works, and the same key still names the same task.
    let mut client = blocking(|| Driver::http(&url));
    let again = call(
        &mut client,
        "c",
        "spawn_worker",
        json!({"task": "serve-slow", "servers": ["filesystem"], "idempotencyKey": "once", "wait": 0}),
    );
    assert_eq!(again["structured"]["taskId"], slow_id.as_str(), "{again}");
    let listed = call(&mut client, "l", "worker_list", json!({}));
    let ids: Vec<&str> =
        listed["structured"]["workers"].as_array().unwrap().iter().filter_map(|w| w["taskId"].as_str()).collect();
    assert_eq!(ids, [slow_id.as_str(), "sv-1"], "{listed}");
    gate.open();
    let result = call(&mut client, "w", "worker_wait", json!({"taskIds": [slow_id], "wait": 50}));
    assert_eq!(result["structured"]["result"], "slow but done", "{result}");
    assert_eq!(model.requests_for("serve-slow").len(), 1, "one worker for two calls with one key");
}
