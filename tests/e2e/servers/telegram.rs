//! `mcp-workers mcp telegram` over stdio against a fake Bot API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{FakeBotApi, TOKEN, call, telegram, telegram_with_stderr};

async fn with_fake() -> (FakeBotApi, crate::support::Client) {
    let api = FakeBotApi::start().await;
    let client = telegram(&[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_API_BASE", &api.base())]).await;
    (api, client)
}

#[tokio::test]
async fn lists_exactly_the_five_tools_with_schemas() {
    let started = Instant::now();
    let client = telegram(&[]).await;
    let initialized = started.elapsed();
    assert!(initialized < Duration::from_secs(2), "initialize took {initialized:?}");
    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["tg_delete", "tg_edit", "tg_get_chat", "tg_pin", "tg_send"]);
    for tool in &tools {
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(schema["properties"]["chat_id"]["anyOf"][0]["type"], "integer", "{}: {schema}", tool.name);
        assert!(schema["required"].as_array().is_some_and(|r| r.contains(&json!("chat_id"))), "{schema}");
        assert!(tool.description.as_ref().is_some_and(|d| d.len() > 20), "{}", tool.name);
    }
    let send = tools.iter().find(|t| t.name == "tg_send").expect("tg_send");
    let props = &send.input_schema["properties"];
    for field in ["text", "parse_mode", "disable_notification", "reply_to_message_id"] {
        assert!(props.get(field).is_some(), "tg_send lacks {field}: {props}");
    }
}

#[tokio::test]
async fn each_tool_calls_its_bot_api_method() {
    let (api, client) = with_fake().await;
    let cases = [
        (
            "tg_send",
            json!({"chat_id": -1002876952840_i64, "text": "Hello World!"}),
            "sendMessage",
            json!({"chat_id": -1002876952840_i64, "text": "Hello World!"}),
            "message_id 77",
        ),
        (
            "tg_send",
            json!({"chat_id": "@test_channel", "text": "*hi*", "parse_mode": "MarkdownV2", "silent": true, "reply_to_message_id": 5}),
            "sendMessage",
            json!({"chat_id": "@test_channel", "text": "*hi*", "parse_mode": "MarkdownV2", "disable_notification": true,
                   "reply_parameters": {"message_id": 5, "allow_sending_without_reply": true}}),
            "Message sent",
        ),
        (
            "tg_edit",
            json!({"chat_id": "-100123", "message_id": 77, "text": "Edited"}),
            "editMessageText",
            json!({"chat_id": -100123, "message_id": 77, "text": "Edited"}),
            "Message 77 in chat -100123",
        ),
        (
            "tg_delete",
            json!({"chat_id": -100123, "message_id": 77}),
            "deleteMessage",
            json!({"chat_id": -100123, "message_id": 77}),
            "Message 77 deleted from chat -100123",
        ),
        (
            "tg_pin",
            json!({"chat_id": -100123, "message_id": 77, "disable_notification": true}),
            "pinChatMessage",
            json!({"chat_id": -100123, "message_id": 77, "disable_notification": true}),
            "Message 77 pinned in chat -100123",
        ),
        ("tg_get_chat", json!({"chat_id": -100123}), "getChat", json!({"chat_id": -100123}), "a channel chat"),
    ];
    for (i, (tool, args, method, body, summary)) in cases.into_iter().enumerate() {
        let (is_error, text) = call(&client, tool, args).await;
        assert!(!is_error, "{tool}: {text}");
        assert!(text.contains(summary), "{tool}: {text:?} lacks {summary:?}");
        let requests = api.requests();
        assert_eq!(requests.len(), i + 1, "{tool}: {requests:?}");
        let last = &requests[i];
        assert_eq!(last.bot, format!("bot{TOKEN}"));
        assert_eq!(last.method, method, "{tool}");
        assert_eq!(last.body, body, "{tool}");
    }
}

#[tokio::test]
async fn telegram_errors_are_clear_tool_errors_without_the_token() {
    let api = FakeBotApi::start().await;
    let (client, stderr) = telegram_with_stderr(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_API_BASE", &api.base()),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let cases = [
        (-400, "tg_send", vec!["error 400", "Bad Request: chat not found"]),
        (-403, "tg_pin", vec!["error 403", "Forbidden: bot is not a member of the channel chat"]),
        (-429, "tg_send", vec!["error 429", "Too Many Requests", "retry_after=7", "retry after 7 seconds"]),
    ];
    for (chat, tool, want) in cases {
        let (is_error, text) = call(&client, tool, json!({"chat_id": chat, "text": "x", "message_id": 1})).await;
        assert!(is_error, "{tool} to {chat}: {text}");
        for part in want {
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
        assert!(!text.contains("sEcReT"), "{text}");
    }
    // A server that is not there: the network error must not carry the URL (which holds the token).
    drop(client);
    let (client, stderr2) = telegram_with_stderr(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_API_BASE", "http://127.0.0.1:1"),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let (is_error, text) = call(&client, "tg_get_chat", json!({"chat_id": -100})).await;
    assert!(is_error, "{text}");
    assert!(text.contains("getChat failed") && text.contains("could not connect"), "{text}");
    assert!(!text.contains("sEcReT") && !text.contains("424242"), "{text}");
    drop(client);
    for log in [stderr, stderr2] {
        let log = log.finished().await;
        assert!(!log.contains("sEcReT"), "the token reached a log line: {log}");
    }
}

#[tokio::test]
async fn without_a_token_the_tools_are_listed_and_calls_say_why_they_fail() {
    let api = FakeBotApi::start().await;
    for token in [None, Some("${TELEGRAM_BOT_TOKEN}"), Some("")] {
        let mut env = vec![("TELEGRAM_API_BASE", api.base())];
        if let Some(token) = token {
            env.push(("TELEGRAM_BOT_TOKEN", token.to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let client = telegram(&env).await;
        assert_eq!(client.list_all_tools().await.expect("tools/list").len(), 5);
        let (is_error, text) = call(&client, "tg_send", json!({"chat_id": -1, "text": "x"})).await;
        assert!(is_error, "{token:?}: {text}");
        assert!(text.contains("TELEGRAM_BOT_TOKEN is not set"), "{token:?}: {text}");
    }
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_naming_the_field() {
    let (api, client) = with_fake().await;
    let (is_error, text) = call(&client, "tg_send", json!({"chat_id": "not a chat", "text": "x"})).await;
    assert!(is_error, "{text}");
    assert!(text.contains("chat_id"), "{text}");
    let (is_error, text) = call(&client, "tg_delete", json!({"chat_id": -1})).await;
    assert!(is_error && text.contains("message_id"), "{text}");
    assert!(api.requests().is_empty());
}
