//! The tools' inputs (with the JSON Schemas a model fills in), the Bot API request bodies made from
//! them, and the one-line summaries of Telegram's answers. Pure: no I/O here.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// A chat: a numeric id (channels and supergroups are `-100...`) or a public `@username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatId {
    Id(i64),
    /// Always stored with its leading `@`.
    Username(String),
}

impl ChatId {
    /// Accepts `-1001234567890`, `"-1001234567890"`, `"@channel"`, `"channel"`, `"t.me/channel"` and
    /// `"https://t.me/channel"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(id) = text.parse::<i64>() {
            return Ok(Self::Id(id));
        }
        let name = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text)
            .strip_prefix("t.me/")
            .map(|rest| rest.trim_end_matches('/'))
            .unwrap_or(text);
        let name = name.strip_prefix('@').unwrap_or(name);
        let valid = (4..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self::Username(format!("@{name}")))
        } else {
            Err(format!("chat_id {text:?} is neither a numeric chat id (e.g. -1001234567890) nor a public @username"))
        }
    }
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Username(name) => f.write_str(name),
        }
    }
}

impl Serialize for ChatId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Id(id) => serializer.serialize_i64(*id),
            Self::Username(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_i64()
                .map(Self::Id)
                .ok_or_else(|| serde::de::Error::custom(format!("chat_id {n} is not a whole number"))),
            Value::String(s) => Self::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("chat_id must be a number or a string, not {other}"))),
        }
    }
}

impl JsonSchema for ChatId {
    fn schema_name() -> Cow<'static, str> {
        "ChatId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The chat: its numeric id (channels and supergroups look like -1001234567890) \
                            or the public @username of a channel or group (\"@mychannel\").",
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": "^(-?[0-9]+|@?[A-Za-z][A-Za-z0-9_]{3,31})$"}
            ]
        })
    }
}

/// How Telegram reads formatting in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(inline)]
pub enum ParseMode {
    MarkdownV2,
    #[serde(rename = "HTML")]
    Html,
    Markdown,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SendParams {
    pub chat_id: ChatId,
    /// The message text, 1 to 4096 characters after formatting is parsed.
    pub text: String,
    /// Formatting in `text`: MarkdownV2 (`*bold* _italic_ [link](url)`, escape `_*[]()~>#+-=|{}.!` with
    /// a backslash), HTML (`<b>`, `<i>`, `<a href="...">`, `<code>`) or legacy Markdown. Leave out for
    /// plain text.
    pub parse_mode: Option<ParseMode>,
    /// Deliver silently: members get a notification without sound.
    #[serde(alias = "silent")]
    pub disable_notification: Option<bool>,
    /// Send as a reply to this message of the same chat.
    pub reply_to_message_id: Option<i64>,
    /// Forum supergroups: the topic (thread) to post in.
    pub message_thread_id: Option<i64>,
    /// Do not show a preview for links in the text.
    pub disable_link_preview: Option<bool>,
    /// Keep the message from being forwarded and saved.
    pub protect_content: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct EditParams {
    pub chat_id: ChatId,
    /// The id of the message to edit (returned by tg_send as message_id).
    pub message_id: i64,
    /// The new text, 1 to 4096 characters after formatting is parsed.
    pub text: String,
    /// Formatting in `text`: MarkdownV2 (`*bold* _italic_ [link](url)`, escape `_*[]()~>#+-=|{}.!` with
    /// a backslash), HTML (`<b>`, `<i>`, `<a href="...">`, `<code>`) or legacy Markdown. Leave out for
    /// plain text.
    pub parse_mode: Option<ParseMode>,
    /// Do not show a preview for links in the text.
    pub disable_link_preview: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct MessageParams {
    pub chat_id: ChatId,
    /// The id of the message (returned by tg_send as message_id).
    pub message_id: i64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PinParams {
    pub chat_id: ChatId,
    /// The id of the message to pin (returned by tg_send as message_id).
    pub message_id: i64,
    /// Pin silently: no notification to the chat members about the pin.
    #[serde(alias = "silent")]
    pub disable_notification: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ChatParams {
    pub chat_id: ChatId,
}

fn put<T: Serialize>(body: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        body.insert(key.to_owned(), json!(value));
    }
}

/// The body of `sendMessage`.
pub fn send_message(p: &SendParams) -> Value {
    let mut body = Map::new();
    put(&mut body, "chat_id", Some(&p.chat_id));
    put(&mut body, "text", Some(&p.text));
    put(&mut body, "parse_mode", p.parse_mode);
    put(&mut body, "disable_notification", p.disable_notification);
    put(&mut body, "protect_content", p.protect_content);
    put(&mut body, "message_thread_id", p.message_thread_id);
    if let Some(id) = p.reply_to_message_id {
        body.insert("reply_parameters".into(), json!({"message_id": id, "allow_sending_without_reply": true}));
    }
    if p.disable_link_preview == Some(true) {
        body.insert("link_preview_options".into(), json!({"is_disabled": true}));
    }
    Value::Object(body)
}

/// The body of `editMessageText`.
pub fn edit_message_text(p: &EditParams) -> Value {
    let mut body = Map::new();
    put(&mut body, "chat_id", Some(&p.chat_id));
    put(&mut body, "message_id", Some(p.message_id));
    put(&mut body, "text", Some(&p.text));
    put(&mut body, "parse_mode", p.parse_mode);
    if p.disable_link_preview == Some(true) {
        body.insert("link_preview_options".into(), json!({"is_disabled": true}));
    }
    Value::Object(body)
}

/// The body of `deleteMessage`.
pub fn delete_message(p: &MessageParams) -> Value {
    json!({"chat_id": p.chat_id, "message_id": p.message_id})
}

/// The body of `pinChatMessage`.
pub fn pin_chat_message(p: &PinParams) -> Value {
    let mut body = Map::new();
    put(&mut body, "chat_id", Some(&p.chat_id));
    put(&mut body, "message_id", Some(p.message_id));
    put(&mut body, "disable_notification", p.disable_notification);
    Value::Object(body)
}

/// The body of `getChat`.
pub fn get_chat(p: &ChatParams) -> Value {
    json!({"chat_id": p.chat_id})
}

/// How a chat in an answer is named: `-100123 ("Title")`, or the id the caller gave.
fn chat_name(chat: &Value, fallback: &ChatId) -> String {
    let id = chat.get("id").map_or_else(|| fallback.to_string(), Value::to_string);
    let label = chat
        .get("title")
        .and_then(Value::as_str)
        .map(|t| format!(" ({t:?})"))
        .or_else(|| chat.get("username").and_then(Value::as_str).map(|u| format!(" (@{u})")))
        .unwrap_or_default();
    format!("{id}{label}")
}

/// One line for the model, then Telegram's own answer as JSON.
fn with_result(line: String, result: &Value) -> String {
    format!("{line}\n{result}")
}

pub fn sent(p: &SendParams, result: &Value) -> String {
    let id = result.get("message_id").map_or_else(|| "?".into(), Value::to_string);
    let chat = chat_name(result.get("chat").unwrap_or(&Value::Null), &p.chat_id);
    with_result(format!("Message sent to chat {chat}: message_id {id}."), result)
}

pub fn edited(p: &EditParams, result: &Value) -> String {
    let chat = chat_name(result.get("chat").unwrap_or(&Value::Null), &p.chat_id);
    with_result(format!("Message {} in chat {chat} edited.", p.message_id), result)
}

pub fn deleted(p: &MessageParams) -> String {
    format!("Message {} deleted from chat {}.", p.message_id, p.chat_id)
}

pub fn pinned(p: &PinParams) -> String {
    format!("Message {} pinned in chat {}.", p.message_id, p.chat_id)
}

pub fn chat_info(p: &ChatParams, result: &Value) -> String {
    let kind = result.get("type").and_then(Value::as_str).unwrap_or("unknown");
    with_result(format!("Chat {}: a {kind} chat.", chat_name(result, &p.chat_id)), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids() {
        let ok = |input: Value, want: ChatId| {
            let got: ChatId = serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got, want, "{input}");
        };
        ok(json!(-1002876952840_i64), ChatId::Id(-1002876952840));
        ok(json!("-1002876952840"), ChatId::Id(-1002876952840));
        ok(json!(" 42 "), ChatId::Id(42));
        ok(json!("@my_channel"), ChatId::Username("@my_channel".into()));
        ok(json!("my_channel"), ChatId::Username("@my_channel".into()));
        ok(json!("https://t.me/my_channel/"), ChatId::Username("@my_channel".into()));
        ok(json!("t.me/my_channel"), ChatId::Username("@my_channel".into()));
        for bad in
            [json!(1.5), json!("@abc"), json!("hello world"), json!("@1abc"), json!(null), json!(true), json!("")]
        {
            assert!(serde_json::from_value::<ChatId>(bad.clone()).is_err(), "{bad} was accepted");
        }
        assert_eq!(serde_json::to_value(ChatId::Id(-5)).unwrap(), json!(-5));
        assert_eq!(serde_json::to_value(ChatId::Username("@x_chan".into())).unwrap(), json!("@x_chan"));
    }

    #[test]
    fn send_bodies() {
        let p: SendParams = serde_json::from_value(json!({"chat_id": -100, "text": "Hello World!"})).unwrap();
        assert_eq!(send_message(&p), json!({"chat_id": -100, "text": "Hello World!"}));
        let p: SendParams = serde_json::from_value(json!({
            "chat_id": "@news_chan", "text": "<b>hi</b>", "parse_mode": "HTML", "silent": true,
            "reply_to_message_id": 9, "message_thread_id": 3, "disable_link_preview": true, "protect_content": true
        }))
        .unwrap();
        assert_eq!(
            send_message(&p),
            json!({
                "chat_id": "@news_chan", "text": "<b>hi</b>", "parse_mode": "HTML", "disable_notification": true,
                "reply_parameters": {"message_id": 9, "allow_sending_without_reply": true}, "message_thread_id": 3,
                "link_preview_options": {"is_disabled": true}, "protect_content": true
            })
        );
        assert!(
            serde_json::from_value::<SendParams>(json!({"chat_id": 1, "text": "x", "parse_mode": "html"})).is_err()
        );
    }

    #[test]
    fn other_bodies() {
        let p: EditParams =
            serde_json::from_value(json!({"chat_id": 5, "message_id": 7, "text": "new", "parse_mode": "MarkdownV2"}))
                .unwrap();
        assert_eq!(
            edit_message_text(&p),
            json!({"chat_id": 5, "message_id": 7, "text": "new", "parse_mode": "MarkdownV2"})
        );
        let p: MessageParams = serde_json::from_value(json!({"chat_id": "-5", "message_id": 7})).unwrap();
        assert_eq!(delete_message(&p), json!({"chat_id": -5, "message_id": 7}));
        let p: PinParams =
            serde_json::from_value(json!({"chat_id": 5, "message_id": 7, "disable_notification": false})).unwrap();
        assert_eq!(pin_chat_message(&p), json!({"chat_id": 5, "message_id": 7, "disable_notification": false}));
        let p: ChatParams = serde_json::from_value(json!({"chat_id": "@abcd"})).unwrap();
        assert_eq!(get_chat(&p), json!({"chat_id": "@abcd"}));
    }

    #[test]
    fn summaries() {
        let p: SendParams = serde_json::from_value(json!({"chat_id": -100, "text": "hi"})).unwrap();
        let result = json!({"message_id": 42, "chat": {"id": -100, "title": "News", "type": "channel"}});
        assert!(sent(&p, &result).starts_with("Message sent to chat -100 (\"News\"): message_id 42.\n{"));
        let p = ChatParams { chat_id: ChatId::Username("@abcd".into()) };
        let result = json!({"id": -7, "type": "supergroup", "username": "abcd"});
        assert!(chat_info(&p, &result).starts_with("Chat -7 (@abcd): a supergroup chat."));
    }

    #[test]
    fn schemas_are_inline_and_typed() {
        let schema = serde_json::to_value(schemars::schema_for!(SendParams)).unwrap();
        let props = &schema["properties"];
        assert_eq!(props["chat_id"]["anyOf"][0]["type"], "integer", "{schema:#}");
        assert_eq!(props["parse_mode"]["enum"], json!(["MarkdownV2", "HTML", "Markdown", null]), "{schema:#}");
        assert_eq!(schema["required"], json!(["chat_id", "text"]), "{schema:#}");
        assert!(schema.get("$defs").is_none(), "{schema:#}");
    }
}
