//! `serve` under a service manager: what it sends on `NOTIFY_SOCKET` (systemd's `sd_notify`
//! protocol), read from a datagram socket of the test's own. systemd itself runs it in
//! `scripts/container/test-systemd.sh`.

use std::time::Duration;

use serde_json::json;
use tokio::net::UnixDatagram;

use crate::support::daemon::{Project, Server, action};
use crate::support::fake_model::{FakeModel, hang};

/// The next notification, as its `KEY=VALUE` lines.
async fn next(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
        .await
        .expect("a notification within 30 s")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect()
}

/// Reads notifications until one has `line`; returns it.
async fn until(socket: &UnixDatagram, line: &str) -> Vec<String> {
    loop {
        let message = next(socket).await;
        if message.iter().any(|l| l == line) {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_the_service_manager_ready_status_watchdog_and_stopping() {
    let project = Project::new(json!({ "filesystem": Project::filesystem_entry() }));
    let model = FakeModel::start().await;
    model.script("stuck-", vec![hang()]);
    let path = project.root.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let path = path.to_string_lossy().into_owned();
    // A 400 ms watchdog: the daemon must send WATCHDOG=1 every 200 ms.
    let env = [("NOTIFY_SOCKET", path.as_str()), ("WATCHDOG_USEC", "400000")];
    let server = Server::start(&project, &model, &["--shutdown-grace", "1s"], &env).await;

    // READY=1 first, with the store's counts, and no WATCHDOG=1 before it.
    let first = next(&socket).await;
    assert_eq!(first, ["READY=1", "STATUS=0 running, 0 waiting"]);
    for _ in 0..2 {
        let message = next(&socket).await;
        assert_eq!(message, ["WATCHDOG=1", "STATUS=0 running, 0 waiting"]);
    }

    // A running worker shows in the status line.
    let body = json!({"actions": [action("n1", "stuck-1", &["filesystem"], 60_000)]});
    let response = reqwest::Client::new().post(server.url("/v1/actions")).json(&body).send().await.expect("POST");
    assert_eq!(response.status().as_u16(), 202);
    until(&socket, "STATUS=1 running, 0 waiting").await;

    // SIGTERM: STOPPING=1 with what the drain waits for, then a clean exit.
    server.signal("TERM");
    let stopping = until(&socket, "STOPPING=1").await;
    assert_eq!(stopping, ["STOPPING=1", "STATUS=stopping: 1 running"]);
    let (status, stderr) = server.wait().await;
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("notifying systemd"), "{stderr}");
}
