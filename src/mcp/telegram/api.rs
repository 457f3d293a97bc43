//! The Bot API client behind the `tg_*` tools: one POST per call, each failure turned into one clear
//! sentence, and the token kept out of every text that leaves this module.
//!
//! **The token appears only in the request URL.** Errors from reqwest carry that URL, so they are
//! stripped of it and then scrubbed of the token once more before anyone sees them.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The default Bot API endpoint.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// What a model reads when the token is missing.
pub const NO_TOKEN: &str = "TELEGRAM_BOT_TOKEN is not set: this Telegram server cannot call the Bot API. \
Set TELEGRAM_BOT_TOKEN in the environment of the mcp-workers daemon.";

/// A failed Bot API call, as the model and the logs see it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{NO_TOKEN}")]
    NoToken,
    /// Telegram answered `ok: false`.
    #[error("{}", telegram_message(.method, *.code, .description, *.retry_after, *.migrate_to_chat_id))]
    Telegram {
        method: &'static str,
        code: i64,
        description: String,
        retry_after: Option<u64>,
        migrate_to_chat_id: Option<i64>,
    },
    /// The request did not get a Bot API answer (network, timeout, a proxy's HTML page, ...).
    #[error("the Telegram Bot API call {method} failed: {message}")]
    Transport { method: &'static str, message: String },
}

fn telegram_message(
    method: &str,
    code: i64,
    description: &str,
    retry_after: Option<u64>,
    migrate_to: Option<i64>,
) -> String {
    let mut text = format!("Telegram refused {method} (error {code}): {description}");
    if let Some(secs) = retry_after {
        text.push_str(&format!(". Rate limited: retry after {secs} seconds (retry_after={secs})"));
    }
    if let Some(chat) = migrate_to {
        text.push_str(&format!(". The group is now a supergroup: use chat_id {chat}"));
    }
    text
}

/// The Bot API endpoint and credentials. Cheap to build: the HTTP client is made on first use.
pub struct BotApi {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The Bot API's answer envelope.
#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

impl BotApi {
    /// `token` is `None` (or unusable) when the variable is unset; calls then fail with
    /// [`ApiError::NoToken`].
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| token_is_set(t)),
            timeout,
            client: OnceLock::new(),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method` with a JSON body and returns Telegram's `result`.
    pub async fn call(&self, method: &'static str, params: &Value) -> Result<Value, ApiError> {
        let token = self.token.as_deref().ok_or(ApiError::NoToken)?;
        let url = format!("{}/bot{token}/{method}", self.base);
        let client = self
            .client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.timeout)
                    .user_agent(concat!("mcp-workers/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|err| format!("cannot set up the HTTP client: {err}"))
            })
            .as_ref()
            .map_err(|message| ApiError::Transport { method, message: message.clone() })?;
        tracing::debug!(method, "calling the Telegram Bot API");
        let transport = |err: reqwest::Error| ApiError::Transport { method, message: describe(err, token) };
        let response = client.post(url).json(params).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        let outcome = parse_response(method, status, &body, token);
        if let Err(err) = &outcome {
            tracing::info!(method, status, "Telegram Bot API call failed: {err}");
        }
        outcome
    }
}

/// Whether a variable's value is a usable token. The CLI leaves an unset `${VAR}` as the literal
/// text, so that counts as unset too.
pub fn token_is_set(token: &str) -> bool {
    let token = token.trim();
    !token.is_empty() && !token.starts_with("${")
}

/// Turns an HTTP status and body into Telegram's `result` or an [`ApiError`].
pub fn parse_response(method: &'static str, status: u16, body: &[u8], token: &str) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) if envelope.ok => Ok(envelope.result),
        Ok(envelope) => {
            let parameters = envelope.parameters;
            Err(ApiError::Telegram {
                method,
                code: envelope.error_code.unwrap_or(i64::from(status)),
                description: redact(envelope.description.as_deref().unwrap_or("no description given"), token),
                retry_after: parameters.as_ref().and_then(|p| p.retry_after),
                migrate_to_chat_id: parameters.as_ref().and_then(|p| p.migrate_to_chat_id),
            })
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.trim().chars().take(200).collect();
            let message = if snippet.is_empty() {
                format!("HTTP {status} with an empty body (is the API base URL right?)")
            } else {
                format!("HTTP {status} with a body that is not a Bot API answer: {snippet}")
            };
            Err(ApiError::Transport { method, message: redact(&message, token) })
        }
    }
}

/// A reqwest error with its causes, without the URL, and without the token.
fn describe(err: reqwest::Error, token: &str) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request error"
    };
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    redact(&text, token)
}

/// Replaces every occurrence of the token (also URL-encoded) with `<redacted>`.
pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_owned();
    }
    let encoded = token.replace(':', "%3A");
    text.replace(token, "<redacted>").replace(&encoded, "<redacted>").replace(&encoded.to_lowercase(), "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:ABC-secret_token";

    #[test]
    fn ok_answers_give_the_result() {
        let body = br#"{"ok":true,"result":{"message_id":7}}"#;
        assert_eq!(parse_response("sendMessage", 200, body, TOKEN), Ok(serde_json::json!({"message_id": 7})));
        assert_eq!(parse_response("deleteMessage", 200, br#"{"ok":true,"result":true}"#, TOKEN), Ok(Value::Bool(true)));
    }

    #[test]
    fn telegram_errors_keep_the_description_and_the_hints() {
        let check = |status: u16, body: &str, want: &[&str]| {
            let err = parse_response("sendMessage", status, body.as_bytes(), TOKEN).unwrap_err();
            let text = err.to_string();
            for part in want {
                assert!(text.contains(part), "{text:?} lacks {part:?}");
            }
            assert!(!text.contains("secret"), "{text}");
        };
        check(
            400,
            r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
            &["Telegram refused sendMessage (error 400): Bad Request: chat not found"],
        );
        check(
            403,
            r#"{"ok":false,"error_code":403,"description":"Forbidden: bot is not a member of the channel chat"}"#,
            &["error 403", "Forbidden: bot is not a member of the channel chat"],
        );
        check(
            429,
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 17","parameters":{"retry_after":17}}"#,
            &["error 429", "Too Many Requests", "retry_after=17", "retry after 17 seconds"],
        );
        check(
            400,
            r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded","parameters":{"migrate_to_chat_id":-1001}}"#,
            &["use chat_id -1001"],
        );
        // No error_code: the HTTP status stands in.
        check(401, r#"{"ok":false,"description":"Unauthorized"}"#, &["error 401", "Unauthorized"]);
        // A description that echoes the token is scrubbed.
        check(
            404,
            &format!(r#"{{"ok":false,"error_code":404,"description":"Not Found: /bot{TOKEN}/x"}}"#),
            &["<redacted>"],
        );
    }

    #[test]
    fn non_api_answers_are_transport_errors() {
        let err = parse_response("getChat", 502, b"<html>Bad Gateway</html>", TOKEN).unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }));
        assert!(err.to_string().contains("HTTP 502"), "{err}");
        assert!(err.to_string().contains("Bad Gateway"), "{err}");
        let err = parse_response("getChat", 404, b"", TOKEN).unwrap_err();
        assert!(err.to_string().contains("empty body"), "{err}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact(&format!("GET /bot{TOKEN}/getMe"), TOKEN), "GET /bot<redacted>/getMe");
        assert_eq!(redact("url /bot123456%3AABC-secret_token/x", TOKEN), "url /bot<redacted>/x");
        assert_eq!(redact("nothing here", TOKEN), "nothing here");
        assert_eq!(redact("keep", ""), "keep");
    }

    #[test]
    fn unset_tokens() {
        assert!(!token_is_set(""));
        assert!(!token_is_set("  "));
        assert!(!token_is_set("${TELEGRAM_BOT_TOKEN}"));
        assert!(token_is_set(TOKEN));
        assert!(
            !BotApi::new(DEFAULT_API_BASE, Some("${TELEGRAM_BOT_TOKEN}".into()), Duration::from_secs(1)).has_token()
        );
    }

    #[tokio::test]
    async fn network_errors_never_show_the_token() {
        // Port 1 on loopback: connection refused, and reqwest's error names the URL.
        let api = BotApi::new("http://127.0.0.1:1", Some(TOKEN.into()), Duration::from_secs(5));
        let err = api.call("sendMessage", &serde_json::json!({})).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ApiError::Transport { .. }), "{text}");
        assert!(!text.contains("secret") && !text.contains("123456"), "{text}");
        assert!(text.contains("could not connect"), "{text}");
        let debug = format!("{api:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[tokio::test]
    async fn calls_without_a_token_say_so() {
        let api = BotApi::new(DEFAULT_API_BASE, None, Duration::from_secs(5));
        let err = api.call("getChat", &serde_json::json!({})).await.unwrap_err();
        assert!(err.to_string().starts_with("TELEGRAM_BOT_TOKEN is not set"), "{err}");
    }
}
