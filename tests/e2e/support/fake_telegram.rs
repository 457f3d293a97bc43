//! A fake Telegram Bot API on 127.0.0.1 that records what it receives. Used by the `servers`
//! tests, directly and through real workers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// One request the fake Bot API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path segment before the method: `bot<token>`.
    pub bot: String,
    pub method: String,
    pub body: Value,
}

/// A fake Telegram Bot API on 127.0.0.1. Chat ids pick the answer: -400 "chat not found",
/// -403 "bot is not a member", -429 rate limited with retry_after 7; anything else succeeds.
pub struct FakeBotApi {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeBotApi {
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app =
            axum::Router::new().route("/{bot}/{method}", axum::routing::post(answer)).with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Bot API");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

async fn answer(
    State(requests): State<Arc<Mutex<Vec<Recorded>>>>,
    UrlPath((bot, method)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    requests.lock().unwrap_or_else(PoisonError::into_inner).push(Recorded {
        bot,
        method: method.clone(),
        body: body.clone(),
    });
    let refuse = |code: u16, description: &str, parameters: Option<Value>| {
        let mut answer = json!({"ok": false, "error_code": code, "description": description});
        if let Some(p) = parameters {
            answer["parameters"] = p;
        }
        (StatusCode::from_u16(code).expect("status"), Json(answer))
    };
    match body["chat_id"].as_i64() {
        Some(-400) => return refuse(400, "Bad Request: chat not found", None),
        Some(-403) => return refuse(403, "Forbidden: bot is not a member of the channel chat", None),
        Some(-429) => return refuse(429, "Too Many Requests: retry after 7", Some(json!({"retry_after": 7}))),
        _ => {}
    }
    let chat = json!({"id": body["chat_id"], "type": "channel", "title": "Test Channel"});
    let result = match method.as_str() {
        "sendMessage" => json!({"message_id": 77, "date": 1_700_000_000, "chat": chat, "text": body["text"]}),
        "editMessageText" => {
            json!({"message_id": body["message_id"], "date": 1_700_000_000, "edit_date": 1_700_000_100, "chat": chat, "text": body["text"]})
        }
        "deleteMessage" | "pinChatMessage" => json!(true),
        "getChat" => {
            json!({"id": body["chat_id"], "type": "channel", "title": "Test Channel", "accent_color_id": 1, "max_reaction_count": 11})
        }
        _ => return refuse(404, "Not Found", None),
    };
    (StatusCode::OK, Json(json!({"ok": true, "result": result})))
}
