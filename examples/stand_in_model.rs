//! A scripted stand-in for the Anthropic Messages API, for trying mcp-workers without an API key
//! (`scripts/demo.sh` uses it). It is the test suite's fake model with one canned behaviour:
//!
//! - a task of the form `Write 'TEXT' to /abs/path` makes the "model" call the filesystem
//!   server's `write_file`, then report what the tool answered;
//! - a task that says `Hold until stopped` gets no answer until the stand-in stops, so its worker runs
//!   until it is stopped (the container and systemd tests stop a daemon with a worker running);
//! - any other task gets a one-line answer saying this is a stand-in.
//!
//! Prints `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT` on stdout, then serves until killed.

#[allow(dead_code)]
#[path = "../tests/e2e/support/fake_model.rs"]
mod fake_model;

use fake_model::{FakeModel, Request, Step, hang, text, tool_use};
use serde_json::json;

fn step(request: &Request) -> Step {
    if request.turn() > 0 {
        let results = request.last_tool_results();
        return match results.first() {
            Some((answer, false)) => text(format!("Done: {answer}")),
            Some((error, true)) => text(format!("The tool failed: {error}")),
            None => text("Done."),
        };
    }
    let task = request.task();
    if task.contains("Hold until stopped") {
        return hang();
    }
    let parsed = task
        .split_once("Write '")
        .and_then(|(_, rest)| rest.split_once("' to "))
        .map(|(content, path)| (content.to_owned(), path.split_whitespace().next().unwrap_or_default().to_owned()));
    match parsed {
        Some((content, path)) if request.tools().iter().any(|t| t == "mcp__filesystem__write_file") => {
            tool_use("mcp__filesystem__write_file", json!({"path": path, "content": content}))
        }
        _ => text("This is the mcp-workers stand-in model: set ANTHROPIC_API_KEY to run real tasks."),
    }
}

#[tokio::main]
async fn main() {
    let model = FakeModel::start().await;
    model.script("", step);
    println!("ANTHROPIC_BASE_URL={}", model.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
