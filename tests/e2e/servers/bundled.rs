//! The bundled servers as the registry runs them: filesystem behind `mcp no-roots`, and fetch.
#![allow(deprecated)] // MCP roots are deprecated (SEP-2577), but the Claude Code CLI still uses them.

use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ListRootsResult, Root};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::{BIN, call, repo_root, stdio_client, tool, tools_path};

/// A client that behaves like the Claude Code CLI: it offers `roots` and answers with its cwd.
#[derive(Clone)]
struct CliLikeClient {
    cwd: String,
}

impl ClientHandler for CliLikeClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::builder().enable_roots().build(), Implementation::new("cli-like", "1"))
    }

    async fn list_roots(&self, _: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        Ok(ListRootsResult::new(vec![Root::new(format!("file://{}", self.cwd))]))
    }
}

async fn connect(program: &Path, args: &[String], cwd: &Path) -> RunningService<RoleClient, CliLikeClient> {
    let command = tokio::process::Command::new(program).configure(|cmd| {
        cmd.args(args).current_dir(cwd).env("PATH", tools_path());
    });
    let transport = TokioChildProcess::new(command).expect("start the server");
    CliLikeClient { cwd: cwd.to_string_lossy().into_owned() }.serve(transport).await.expect("MCP initialize")
}

/// The registry entry as shipped.
fn shipped_entry(name: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(repo_root().join(".claude/mcp_servers.json")).expect("read the registry");
    let registry: Value = serde_json::from_str(&text).expect("registry JSON");
    let entry = &registry["mcpServers"][name];
    let command = entry["command"].as_str().expect("command").to_owned();
    let args = entry["args"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|v| v.as_str().expect("string arg").to_owned()).collect());
    (command, args)
}

/// The allowed directories, once the server has settled (it asks for roots after `initialized`).
async fn allowed_dirs<S: rmcp::Service<RoleClient>>(client: &RunningService<RoleClient, S>, want: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let result = client
            .call_tool(rmcp::model::CallToolRequestParams::new("list_allowed_directories"))
            .await
            .expect("list_allowed_directories");
        let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
        if text.lines().count() == want + 1 || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn filesystem_entry_reaches_workspace_and_profiles_despite_cli_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    let (workspace, profiles) = (root.join("workspace"), root.join("profiles"));
    std::fs::create_dir_all(&workspace).expect("mkdir workspace");
    std::fs::create_dir_all(&profiles).expect("mkdir profiles");
    std::fs::write(profiles.join("writer.md"), "You write short reports.\n").expect("write profile");
    tool("mcp-server-filesystem");

    let (command, args) = shipped_entry("filesystem");
    assert_eq!(command, "mcp-workers", "the filesystem entry should run this binary's no-roots filter");
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("${MCP_WORKERS_WORKSPACE}", &workspace.to_string_lossy())
                .replace("${MCP_WORKERS_PROFILES}", &profiles.to_string_lossy())
        })
        .collect();

    // G1 first: without the filter, the CLI's roots replace the directories on the command line.
    let plain_args: Vec<String> = args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
    let plain = connect(&tool(&plain_args[0]), &plain_args[1..], &workspace).await;
    let dirs = allowed_dirs(&plain, 1).await;
    assert!(!dirs.contains(&*profiles.to_string_lossy()), "G1 no longer happens? {dirs}");
    let (is_error, text) = call_fs(&plain, "read_text_file", json!({"path": profiles.join("writer.md")})).await;
    assert!(is_error && text.contains("Access denied"), "{text}");
    drop(plain);

    // The shipped entry: both directories, and nothing else.
    let client = connect(Path::new(BIN), &args, &workspace).await;
    let dirs = allowed_dirs(&client, 2).await;
    assert!(dirs.contains(&*workspace.to_string_lossy()) && dirs.contains(&*profiles.to_string_lossy()), "{dirs}");
    let (is_error, text) = call_fs(&client, "read_text_file", json!({"path": profiles.join("writer.md")})).await;
    assert!(!is_error && text.contains("You write short reports."), "{text}");
    let report = workspace.join("marketing/report.md");
    std::fs::create_dir_all(report.parent().expect("parent")).expect("mkdir");
    let (is_error, text) = call_fs(&client, "write_file", json!({"path": report, "content": "# Report\n"})).await;
    assert!(!is_error, "{text}");
    assert_eq!(std::fs::read_to_string(&report).expect("report written"), "# Report\n");
    let (is_error, text) = call_fs(&client, "list_directory", json!({"path": profiles})).await;
    assert!(!is_error && text.contains("writer.md"), "{text}");
    let (is_error, text) = call_fs(&client, "read_text_file", json!({"path": "/etc/hostname"})).await;
    assert!(is_error && text.contains("Access denied"), "outside paths must stay closed: {text}");
}

async fn call_fs(client: &RunningService<RoleClient, CliLikeClient>, tool: &str, args: Value) -> (bool, String) {
    let args = args.as_object().cloned().expect("object");
    let result = client
        .call_tool(rmcp::model::CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n");
    (result.is_error == Some(true), text)
}

#[tokio::test]
async fn fetch_entry_fetches_a_local_page_with_allow_private_ips() {
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(|| async {
            axum::response::Html(
                "<html><head><title>Prices</title></head><body><article><h1>Prices</h1>\
                 <p>Ethereum costs 1234.5 USD today, according to this test page.</p></article></body></html>",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/page");

    let (command, args) = shipped_entry("fetch");
    let program = tool(&command);
    let cwd = std::env::temp_dir();

    // As shipped: private and loopback addresses are refused.
    let shipped = stdio_client(&program, &args, &cwd).await;
    let (is_error, text) = call(&shipped, "fetch", json!({"url": url})).await;
    assert!(is_error && text.contains("--allow-private-ips"), "{text}");
    drop(shipped);

    // With the one documented flag for local services, the page comes back as markdown.
    let mut local = args.clone();
    local.push("--allow-private-ips".into());
    let client = stdio_client(&program, &local, &cwd).await;
    let (is_error, text) = call(&client, "fetch", json!({"url": url})).await;
    assert!(!is_error, "{text}");
    assert!(text.contains("Ethereum costs 1234.5 USD"), "{text}");
}
