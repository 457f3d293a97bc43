//! `mcp-workers mcp telegram`: a stdio MCP server with the seed's five Telegram tools over the Bot API.
//!
//! Every worker that selects `telegram` starts its own copy, so start-up does no I/O: the token is
//! read from the environment and the HTTP client is built on the first call. A missing token does
//! not stop the server: it lists its tools and each call answers with a tool error that says so.
//! Telegram's refusals and network failures are tool errors (`isError: true`), never protocol errors.

mod api;
mod params;

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde_json::Value;

pub use api::{ApiError, BotApi, DEFAULT_API_BASE, NO_TOKEN, redact, token_is_set};
use params::{ChatParams, EditParams, MessageParams, PinParams, SendParams};

/// The variable that holds the bot token.
pub const TOKEN_VAR: &str = "TELEGRAM_BOT_TOKEN";

/// Where the Bot API is and how long one call may take.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub api_base: String,
    pub api_timeout: Duration,
}

impl TelegramSettings {
    /// The CLI leaves an unset `${VAR}` (with no default) as literal text: such a base is unset.
    pub fn new(api_base: String, api_timeout: Duration) -> Self {
        let api_base = if token_is_set(&api_base) { api_base } else { DEFAULT_API_BASE.to_owned() };
        Self { api_base, api_timeout }
    }
}

/// Serves the tools on stdin/stdout until the client goes away.
pub async fn run_stdio(settings: TelegramSettings) -> anyhow::Result<std::process::ExitCode> {
    let api = BotApi::new(&settings.api_base, std::env::var(TOKEN_VAR).ok(), settings.api_timeout);
    if !api.has_token() {
        tracing::warn!("{TOKEN_VAR} is not set: every tool call will fail until it is");
    }
    let service = TelegramServer::new(api).serve(crate::mcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The MCP server: one tool per Bot API method.
#[derive(Debug, Clone)]
pub struct TelegramServer {
    api: Arc<BotApi>,
    tool_router: ToolRouter<Self>,
}

impl TelegramServer {
    pub fn new(api: BotApi) -> Self {
        Self { api: Arc::new(api), tool_router: Self::tool_router() }
    }

    /// Calls `method` and turns the answer into a tool result.
    async fn call(&self, method: &'static str, body: Value, summary: impl FnOnce(&Value) -> String) -> CallToolResult {
        match self.api.call(method, &body).await {
            Ok(result) => CallToolResult::success(vec![ContentBlock::text(summary(&result))]),
            Err(err) => CallToolResult::error(vec![ContentBlock::text(err.to_string())]),
        }
    }
}

#[tool_router]
impl TelegramServer {
    #[tool(
        name = "tg_send",
        description = "Send a text message to a Telegram chat, channel or group (Bot API sendMessage). \
                       Returns the new message's message_id, which tg_edit, tg_delete and tg_pin take.",
        annotations(
            title = "Send a Telegram message",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn tg_send(&self, Parameters(p): Parameters<SendParams>) -> CallToolResult {
        self.call("sendMessage", params::send_message(&p), |r| params::sent(&p, r)).await
    }

    #[tool(
        name = "tg_edit",
        description = "Replace the text of a message the bot sent earlier (Bot API editMessageText).",
        annotations(
            title = "Edit a Telegram message",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn tg_edit(&self, Parameters(p): Parameters<EditParams>) -> CallToolResult {
        self.call("editMessageText", params::edit_message_text(&p), |r| params::edited(&p, r)).await
    }

    #[tool(
        name = "tg_delete",
        description = "Delete a message from a chat (Bot API deleteMessage). The bot can delete its own \
                       messages, and others' where it is an admin with the right to delete.",
        annotations(
            title = "Delete a Telegram message",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn tg_delete(&self, Parameters(p): Parameters<MessageParams>) -> CallToolResult {
        self.call("deleteMessage", params::delete_message(&p), |_| params::deleted(&p)).await
    }

    #[tool(
        name = "tg_pin",
        description = "Pin a message in a chat (Bot API pinChatMessage). The bot must be an admin \
                       with the right to pin messages.",
        annotations(
            title = "Pin a Telegram message",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn tg_pin(&self, Parameters(p): Parameters<PinParams>) -> CallToolResult {
        self.call("pinChatMessage", params::pin_chat_message(&p), |_| params::pinned(&p)).await
    }

    #[tool(
        name = "tg_get_chat",
        description = "Get information about a chat (Bot API getChat): its id, type, title or username, \
                       description, pinned message and more.",
        annotations(title = "Get Telegram chat info", read_only_hint = true, open_world_hint = true)
    )]
    async fn tg_get_chat(&self, Parameters(p): Parameters<ChatParams>) -> CallToolResult {
        self.call("getChat", params::get_chat(&p), |r| params::chat_info(&p, r)).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TelegramServer {
    fn get_info(&self) -> ServerConfig {
        let mut instructions = String::from(
            "Telegram Bot API tools. chat_id is a numeric id (channels look like -100...) or a public @username. \
             tg_send returns the message_id that tg_edit, tg_delete and tg_pin need.",
        );
        if !self.api.has_token() {
            instructions.push_str(" Note: ");
            instructions.push_str(NO_TOKEN);
        }
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-workers-telegram", env!("CARGO_PKG_VERSION")))
            .with_instructions(instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_five_tools() {
        let server = TelegramServer::new(BotApi::new(DEFAULT_API_BASE, None, Duration::from_secs(1)));
        let mut names: Vec<String> = server.tool_router.list_all().into_iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["tg_delete", "tg_edit", "tg_get_chat", "tg_pin", "tg_send"]);
    }
}
