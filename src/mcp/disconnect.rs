//! The token that tells an MCP handler its HTTP client went away. `http::disconnect` puts one in
//! every request's extensions (and cancels it when hyper drops the response body); rmcp hands the
//! request's `Parts` to the handler, so a waiting `worker_poll` can stop before it takes a task
//! for nobody. Over stdio there is none.

use axum::http::request::Parts;
use tokio_util::sync::CancellationToken;

/// Cancelled when the response to this request is dropped.
#[derive(Debug, Clone)]
pub struct Disconnect(pub CancellationToken);

impl Disconnect {
    /// The token of the HTTP request behind an MCP request, if it came over HTTP.
    pub fn of(extensions: &rmcp::model::Extensions) -> Option<CancellationToken> {
        extensions.get::<Parts>().and_then(|p| p.extensions.get::<Disconnect>()).map(|d| d.0.clone())
    }
}
