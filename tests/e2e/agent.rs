//! What an orchestrating agent needs from a worker (issue 11), end to end with the real Claude
//! Code CLI and the stand-in model: its JSON as agents write it (pretty-printed, several documents
//! on a line, split across reads, nested under `data`, inside a reply's text).

use serde_json::{Value, json};

use crate::support::daemon::{Daemon, Project, Server, SseReader, action};
use crate::support::fake_model::{FakeModel, Gate, Request, api_error_body, gated, status, text, tool_use};

fn fs_project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry() }))
}

/// The answers, by task id (results) or by type (others).
fn by_key(answers: &[Value]) -> std::collections::BTreeMap<String, Value> {
    answers
        .iter()
        .map(|a| {
            let key = a["taskId"].as_str().map_or_else(|| a["type"].as_str().unwrap_or("?").to_owned(), str::to_owned);
            (key, a.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_run_whatever_their_line_breaks_and_a_broken_one_is_answered_once() {
    let project = fs_project();
    let model = FakeModel::start().await;
    for key in ["shape-pretty", "shape-nested", "shape-first", "shape-second", "shape-split"] {
        model.script(key, vec![text(format!("done: {key}"))]);
    }
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "2"]);
    // Lines 1 to n: one pretty-printed document with two actions, the second in the `data` shape.
    let pretty = serde_json::to_string_pretty(&json!({
        "summary": "an agent's other top-level fields are ignored",
        "actions": [
            action("pretty", "shape-pretty", &["filesystem"], 60_000),
            {"type": "spawn_worker", "data": {"taskId": "nested", "task": "shape-nested", "servers": ["filesystem"]}},
        ],
    }))
    .unwrap();
    let n = pretty.lines().count() as u64;
    assert!(n > 10, "{pretty}");
    daemon.send(&pretty).await;
    // Line n + 1: three documents on one line (the third another consumer's action).
    let one = |a: Value| json!({ "actions": [a] }).to_string();
    let line = format!(
        "{}{} {}",
        one(action("first", "shape-first", &["filesystem"], 60_000)),
        one(action("second", "shape-second", &["filesystem"], 60_000)),
        one(json!({"type": "send_message", "text": "hi"})),
    );
    daemon.send(&line).await;
    // Line n + 2: a broken document; line n + 3, a good one, split across two writes.
    daemon.send("{\"actions\": [").await;
    let split = one(action("split", "shape-split", &["filesystem"], 60_000));
    let (head, tail) = split.split_at(split.len() / 2);
    daemon.send_raw(head.as_bytes()).await;
    daemon.send_raw(tail.as_bytes()).await;
    daemon.send_raw(b"\n").await;
    let answers = by_key(&daemon.take(7).await);
    for (id, line, index) in
        [("pretty", 1, 0), ("nested", 1, 1), ("first", n + 1, 0), ("second", n + 1, 0), ("split", n + 3, 0)]
    {
        let result = &answers[id];
        assert_eq!(result["type"], "worker_result", "{result}");
        assert_eq!(result["success"], true, "{result}");
        assert_eq!(result["result"], format!("done: shape-{id}"), "{result}");
        assert_eq!((result["line"].as_u64(), result["index"].as_u64()), (Some(line), Some(index)), "{result}");
    }
    let ack = &answers["action_ack"];
    assert_eq!((ack["actionType"].as_str(), ack["line"].as_u64()), (Some("send_message"), Some(n + 1)), "{ack}");
    let error = &answers["error"];
    assert_eq!(
        (error["error"]["kind"].as_str(), error["line"].as_u64()),
        (Some("invalid_json"), Some(n + 2)),
        "{error}"
    );
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "one answer each: {status:?} {rest:?}");
    assert_eq!(model.requests().len(), 5, "each action ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_under_data_and_at_the_top_is_an_invalid_action() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let mut daemon = Daemon::start(&project, &model, &[]);
    let both = json!({"type": "spawn_worker", "taskId": "twice", "task": "a", "data": {"task": "b", "servers": ["filesystem"]}});
    daemon.send_action(both).await;
    let result = daemon.next().await;
    assert_eq!(result["taskId"], "twice", "{result}");
    assert_eq!(result["error"]["kind"], "invalid_action", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Invalid spawn_worker action") && message.contains("/data/task"), "{message}");
    daemon.finish().await;
    assert!(model.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_text_takes_the_fenced_json_block_of_an_agent_reply() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("from-a-reply", vec![text("reply handled")]);
    let mut daemon = Daemon::start(&project, &model, &["--input", "text"]);
    let document = serde_json::to_string_pretty(&json!({
        "actions": [action("reply-1", "from-a-reply", &["filesystem"], 60_000)]
    }))
    .unwrap();
    let reply = format!(
        "I'll delegate this to a worker.\n\nExample of another shape: {{\"actions\": []}}\n\n```json\n{document}\n```\n\nLet me know!\n"
    );
    daemon.send_raw(reply.as_bytes()).await;
    daemon.close();
    let result = daemon.next().await;
    assert_eq!((result["taskId"].as_str(), result["success"].as_bool()), (Some("reply-1"), Some(true)), "{result}");
    assert_eq!(result["result"], "reply handled");
    assert_eq!(result["line"], 6, "the line of the reply where the JSON starts: {result}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");

    // A reply without JSON: one invalid_json naming a short excerpt.
    let mut daemon = Daemon::start(&project, &model, &["--input", "text"]);
    daemon.send_raw(format!("I could not find anything to do. {}", "More words. ".repeat(100)).as_bytes()).await;
    daemon.close();
    let error = daemon.next().await;
    assert_eq!(error["error"]["kind"], "invalid_json", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("I could not find anything") && message.len() < 300, "{message}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_schema_gives_a_revalidated_structured_output_or_a_clear_kind() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("structured-person", |r: &Request| {
        if r.turn() > 0 {
            return text("the person is recorded");
        }
        tool_use("StructuredOutput", json!({"name": "Ada", "age": 36}))
    });
    // The CLI reminds a model that answers in text to call StructuredOutput; this one never does.
    model.script("structured-never", |_: &Request| text("I would rather just talk"));
    // Every call breaks the schema: the CLI refuses each, and gives up after its retries.
    model.script("structured-bad", |_: &Request| tool_use("StructuredOutput", json!({"name": 5})));
    let person = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    });
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "2"]);
    let with_schema = |id: &str, task: &str| {
        let mut a = action(id, task, &["filesystem"], 60_000);
        a["outputSchema"] = person.clone();
        a
    };
    let mut not_object = action("flat", "structured-person", &["filesystem"], 60_000);
    not_object["outputSchema"] = json!({"type": "array"});
    daemon
        .send(
            &json!({"actions": [
                with_schema("person", "structured-person"),
                with_schema("never", "structured-never"),
                with_schema("bad", "structured-bad"),
                not_object,
            ]})
            .to_string(),
        )
        .await;
    let answers = by_key(&daemon.take(4).await);
    let result = &answers["person"];
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["structuredOutput"], json!({"name": "Ada", "age": 36}), "{result}");
    let offered = &model.requests_for("structured-person")[0];
    assert!(offered.tools().contains(&"StructuredOutput".to_owned()), "{:?}", offered.tools());
    let result = &answers["never"];
    assert_eq!(result["error"]["kind"], "structured_output_missing", "{result}");
    assert_eq!(result["error"]["retryable"], true, "{result}");
    assert!(result.get("structuredOutput").is_none(), "{result}");
    let result = &answers["bad"];
    assert_eq!(result["error"]["kind"], "structured_output_invalid", "{result}");
    assert_eq!(result["error"]["retryable"], false, "{result}");
    let result = &answers["flat"];
    assert_eq!(result["error"]["kind"], "invalid_action", "{result}");
    assert!(result["result"].as_str().unwrap().contains("/outputSchema"), "{result}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_allow_denies_the_rest_and_deny_hides_a_tool_also_as_a_profile_default() {
    let project = fs_project();
    std::fs::write(project.root.join("profiles/read-only.md"), "Only read.").unwrap();
    std::fs::write(project.root.join("profiles/read-only.tools.json"), r#"{"deny": ["filesystem.write_*"]}"#).unwrap();
    let model = FakeModel::start().await;
    let target = project.workspace().join("denied.txt");
    let path = target.to_string_lossy().into_owned();
    model.script("tools-allow", move |r: &Request| {
        if r.turn() > 0 {
            return text("tried");
        }
        tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "secret-input-never-reported"}))
    });
    model.script("tools-deny", vec![text("looked")]);
    model.script("tools-profile", vec![text("looked too")]);
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "2"]);
    let mut allow = action("allow", "tools-allow", &["filesystem"], 60_000);
    allow["tools"] = json!({"allow": ["filesystem.read_file"]});
    let mut deny = action("deny", "tools-deny", &["filesystem"], 60_000);
    deny["tools"] = json!({"deny": ["filesystem.write_file"]});
    let mut profile = action("profile", "tools-profile", &["filesystem"], 60_000);
    profile["profile"] = json!("read-only");
    let mut unrequested = action("unrequested", "tools-deny", &["filesystem"], 60_000);
    unrequested["tools"] = json!({"allow": ["telegram.tg_send"]});
    daemon.send(&json!({"actions": [allow, deny, profile, unrequested]}).to_string()).await;
    let answers = by_key(&daemon.take(4).await);

    let result = &answers["allow"];
    assert_eq!(result["deniedTools"], json!(["write_file"]), "{result}");
    assert_eq!(result["toolsUsed"], json!([]), "{result}");
    assert!(!result.to_string().contains("secret-input-never-reported"), "no tool input in the result: {result}");
    assert!(!target.exists(), "the denied call did not run");
    let offered = model.requests_for("tools-allow")[0].tools();
    assert!(offered.contains(&"mcp__filesystem__write_file".to_owned()), "allow does not hide tools: {offered:?}");

    for (id, key) in [("deny", "tools-deny"), ("profile", "tools-profile")] {
        assert_eq!(answers[id]["success"], true, "{}", answers[id]);
        let offered = model.requests_for(key)[0].tools();
        assert!(!offered.contains(&"mcp__filesystem__write_file".to_owned()), "{id}: hidden: {offered:?}");
        assert!(offered.contains(&"mcp__filesystem__read_file".to_owned()), "{id}: the rest offered: {offered:?}");
    }
    let result = &answers["unrequested"];
    assert_eq!(result["error"]["kind"], "invalid_action", "{result}");
    assert!(result["result"].as_str().unwrap().contains("/tools/allow/0"), "{result}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

/// Reads lines until the `worker_result` of each of `ids`; returns everything read, in order.
async fn until_results(daemon: &mut Daemon, ids: &[&str]) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut waiting: Vec<&str> = ids.to_vec();
    while !waiting.is_empty() {
        let line = daemon.next().await;
        if line["type"] == "worker_result" {
            waiting.retain(|id| line["taskId"] != *id);
        }
        lines.push(line);
    }
    lines
}

/// Asserts `started`, `tool_started`, `tool_finished` in that order, for `tool`; returns where
/// each event is.
fn one_tool_call_in_order<'a>(progress: &'a [Value], tool: &str) -> impl Fn(&str) -> usize + 'a {
    let at = move |name: &str| {
        let events: Vec<&str> = progress.iter().map(|l| l["event"].as_str().unwrap_or("?")).collect();
        events.iter().position(|e| *e == name).unwrap_or_else(|| panic!("no {name}: {events:?}"))
    };
    assert!(at("started") < at("tool_started") && at("tool_started") < at("tool_finished"), "{progress:?}");
    assert_eq!(
        (progress[at("tool_started")]["tool"].as_str(), progress[at("tool_finished")]["tool"].as_str()),
        (Some(tool), Some(tool))
    );
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_come_in_order_before_the_result() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let target = project.workspace().join("progress.txt");
    let path = target.to_string_lossy().into_owned();
    model.script("progress-write", move |r: &Request| {
        if r.turn() > 0 {
            return text("Wrote it.");
        }
        tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "hi"}))
    });
    model.script("progress-asked", vec![text("asked for progress")]);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    model.script("progress-retry", move |_: &Request| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            status(500, api_error_body("api_error", "try again"))
        } else {
            text("second time lucky")
        }
    });
    model.script("progress-quiet", vec![text("no progress asked")]);

    let mut daemon = Daemon::start(&project, &model, &["--progress"]);
    daemon.send_action(action("p-1", "progress-write", &["filesystem"], 60_000)).await;
    let lines = until_results(&mut daemon, &["p-1"]).await;
    let (result, progress) = lines.split_last().unwrap();
    assert_eq!(result["success"], true, "{result}");
    let at = one_tool_call_in_order(progress, "write_file");
    for line in progress {
        assert_eq!((line["type"].as_str(), line["taskId"].as_str()), (Some("worker_progress"), Some("p-1")), "{line}");
    }
    let seqs: Vec<u64> = progress.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(progress[at("started")]["servers"], json!(["filesystem"]));
    let started = &progress[at("tool_started")];
    assert_eq!(started["tool"], "write_file", "{started}");
    assert!(started["input"].as_str().unwrap().contains("progress.txt"), "{started}");
    let finished = &progress[at("tool_finished")];
    assert_eq!((finished["tool"].as_str(), finished["ok"].as_bool()), (Some("write_file"), Some(true)), "{finished}");
    assert_eq!(finished["toolsUsed"], json!(["write_file"]), "{finished}");
    // An API error the CLI retries shows as `retrying`.
    daemon.send_action(action("p-2", "progress-retry", &["filesystem"], 60_000)).await;
    let lines = until_results(&mut daemon, &["p-2"]).await;
    let (result, progress) = lines.split_last().unwrap();
    assert_eq!(result["success"], true, "{result}");
    let retrying = progress.iter().find(|l| l["event"] == "retrying").unwrap_or_else(|| panic!("{progress:?}"));
    assert_eq!((retrying["attempt"].as_u64(), retrying["errorStatus"].as_u64()), (Some(1), Some(500)), "{retrying}");
    daemon.finish().await;

    // Without the flag, only the action that asks reports progress.
    let mut daemon = Daemon::start(&project, &model, &[]);
    let mut asked = action("asked", "progress-asked", &["filesystem"], 60_000);
    asked["progress"] = json!(true);
    daemon
        .send(&json!({"actions": [asked, action("quiet", "progress-quiet", &["filesystem"], 60_000)]}).to_string())
        .await;
    let lines = until_results(&mut daemon, &["asked", "quiet"]).await;
    let progress: Vec<&Value> = lines.iter().filter(|l| l["type"] == "worker_progress").collect();
    assert!(!progress.is_empty() && progress.iter().all(|l| l["taskId"] == "asked"), "{lines:?}");
    assert!(progress.iter().any(|l| l["event"] == "text" && l["text"] == "asked for progress"), "{progress:?}");
    daemon.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_progress_over_sse_and_a_reader_that_never_reads_does_not_hold_results() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let path = project.workspace().join("sse.txt").to_string_lossy().into_owned();
    model.script("sse-write", move |r: &Request| {
        if r.turn() > 0 {
            return text("Wrote it.");
        }
        tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "hi"}))
    });
    let server = Server::start(&project, &model, &[], &[]).await;
    let mut reader = SseReader::open(&server.url("/v1/events"), None).await;
    // Connected, and never read from.
    let _idle = reqwest::Client::new().get(server.url("/v1/events")).send().await.expect("GET events");
    let mut asked = action("sse-1", "sse-write", &["filesystem"], 60_000);
    asked["progress"] = json!(true);
    let (status, answer) = crate::serve::post(&server, "/v1/actions?wait=true", &json!({ "actions": [asked] })).await;
    assert_eq!((status, &answer["results"][0]["success"]), (200, &json!(true)), "{answer}");
    let mut progress = Vec::new();
    loop {
        let (_, event, data) = reader.next_event().await;
        match event.as_str() {
            "progress" => progress.push(data),
            "result" => break,
            _ => {}
        }
    }
    let _ = one_tool_call_in_order(&progress, "write_file");
    assert!(progress.iter().all(|l| l["taskId"] == "sse-1" && l["type"] == "worker_progress"), "{progress:?}");
    // The worker's transcript, over HTTP.
    let transcript = reqwest::get(server.url("/v1/tasks/sse-1/transcript")).await.expect("GET transcript");
    assert_eq!(transcript.status(), 200);
    let text = transcript.text().await.unwrap();
    assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()) && text.contains("write_file"), "{text}");
    let missing = reqwest::get(server.url("/v1/tasks/nope/transcript")).await.expect("GET transcript");
    assert_eq!(missing.status(), 404);
    // A body that is an agent's reply text.
    let client = reqwest::Client::new();
    let post_text = |body: &'static str| client.post(server.url("/v1/actions?input=text")).body(body).send();
    let reply = post_text("Noted.\n```json\n{\"actions\": [{\"type\": \"note\", \"x\": 1}]}\n```\n").await.unwrap();
    assert_eq!(reply.status(), 200);
    let answer: Value = reply.json().await.unwrap();
    assert_eq!(answer["acks"][0]["actionType"], "note", "{answer}");
    let reply = post_text("Nothing to do today.").await.unwrap();
    assert_eq!(reply.status(), 400);
    let answer: Value = reply.json().await.unwrap();
    assert_eq!(answer["error"]["kind"], "invalid_json", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("Nothing to do today."), "{answer}");
    server.signal("TERM");
    let (status, _) = server.wait().await;
    assert!(status.success(), "{status:?}");
}

/// The text of the last user message of a request.
fn last_user_text(r: &Request) -> String {
    let Some(last) = r.messages().iter().rev().find(|m| m["role"] == "user") else { return String::new() };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_are_kept_and_continue_and_fork_resume_the_session() {
    use std::os::unix::fs::PermissionsExt;
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("remember-this", |r: &Request| {
        let last = last_user_text(r);
        if last.contains("what-was-it") {
            text("it was 42")
        } else if last.contains("fork-question") {
            text("forked: 42")
        } else {
            text("I will remember 42")
        }
    });
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "1"]);
    daemon.send_action(action("first", "remember-this: the number is 42", &["filesystem"], 60_000)).await;
    let first = daemon.next().await;
    assert_eq!(first["success"], true, "{first}");
    let session = first["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId: {first}")).to_owned();

    // The transcript: kept, private, readable with `tasks transcript`.
    let data = project.root.join(".mcp-workers");
    let kept = data.join("transcripts/first.jsonl");
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    let shown = std::process::Command::new(crate::support::bin())
        .arg("--root")
        .arg(&project.root)
        .args(["tasks", "transcript", "first"])
        .output()
        .expect("tasks transcript");
    assert!(shown.status.success(), "{shown:?}");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("\"subtype\":\"init\"") && shown.contains("I will remember 42"), "{shown}");
    assert!(shown.contains(&session), "{shown}");

    // A continuation sees the first conversation.
    let mut next = action("second", "what-was-it?", &["filesystem"], 60_000);
    next["continue"] = json!("first");
    daemon.send_action(next).await;
    let second = daemon.next().await;
    assert_eq!((second["success"].as_bool(), second["result"].as_str()), (Some(true), Some("it was 42")), "{second}");
    let asked = model.requests_for("remember-this");
    let request = asked.iter().find(|r| last_user_text(r).contains("what-was-it")).expect("the continuation's request");
    let history = serde_json::to_string(request.messages()).unwrap();
    assert!(history.contains("I will remember 42"), "the first conversation is in the request: {history}");

    // A fork branches it: the kept session and the first transcript stay as they were.
    let session_file = data.join(format!("sessions/{session}.jsonl"));
    let (session_before, transcript_before) = (std::fs::read(&session_file).unwrap(), std::fs::read(&kept).unwrap());
    let mut fork = action("third", "fork-question", &["filesystem"], 60_000);
    fork["continue"] = json!("first");
    fork["fork"] = json!(true);
    daemon.send_action(fork).await;
    let third = daemon.next().await;
    assert_eq!((third["success"].as_bool(), third["result"].as_str()), (Some(true), Some("forked: 42")), "{third}");
    assert_ne!(third["sessionId"], json!(session), "{third}");
    assert_eq!(std::fs::read(&session_file).unwrap(), session_before, "the forked session is unchanged");
    assert_eq!(std::fs::read(&kept).unwrap(), transcript_before);

    let mut gone = action("fourth", "remember-this", &["filesystem"], 60_000);
    gone["continue"] = json!("never-ran");
    daemon.send_action(gone).await;
    let fourth = daemon.next().await;
    assert_eq!(fourth["error"]["kind"], "session_not_found", "{fourth}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_continuation_of_a_session_runs_at_a_time() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    model.script("busy-base", move |r: &Request| {
        if last_user_text(r).contains("busy-hold") { gated(&held, text("released")) } else { text("base done") }
    });
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "2"]);
    daemon.send_action(action("base", "busy-base", &["filesystem"], 60_000)).await;
    assert_eq!(daemon.next().await["success"], true);
    let mut hold = action("hold", "busy-hold", &["filesystem"], 60_000);
    hold["continue"] = json!("base");
    daemon.send_action(hold).await;
    model.wait_for_requests(2).await;
    let mut second = action("second", "busy-other", &["filesystem"], 60_000);
    second["continue"] = json!("base");
    daemon.send_action(second).await;
    let refused = daemon.next().await;
    assert_eq!(
        (refused["taskId"].as_str(), refused["error"]["kind"].as_str()),
        (Some("second"), Some("session_busy")),
        "{refused}"
    );
    assert_eq!(refused["error"]["retryable"], true);
    gate.open();
    let held = daemon.next().await;
    assert_eq!((held["taskId"].as_str(), held["result"].as_str()), (Some("hold"), Some("released")), "{held}");
    daemon.finish().await;
}
