//! `serve`'s `/mcp`: the polling queue's three tools and the workers tools on one MCP server.
//! Each call goes to the server that has the tool.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use super::queue::QueueServer;
use super::workers::WorkersServer;

#[derive(Clone)]
pub struct QueueAndWorkers {
    pub queue: QueueServer,
    pub workers: WorkersServer,
}

impl ServerHandler for QueueAndWorkers {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-workers", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Two sets of tools. To delegate a task to a Claude Code worker with the MCP servers you name: \
                 spawn_worker, then worker_wait with its taskId if it is not done within the wait. To take part \
                 in the polling task queue: call worker_create once, then follow each reply's instructions \
                 (worker_poll, worker_submit).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools: Vec<Tool> = QueueServer::tool_list().to_vec();
        tools.extend(self.workers.tool_list().iter().cloned());
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.queue.get_tool(name).or_else(|| self.workers.get_tool(name))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if self.workers.has_tool(&request.name) {
            self.workers.call_tool(request, context).await
        } else {
            self.queue.call_tool(request, context).await
        }
    }
}
