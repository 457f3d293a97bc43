//! Noticing that an HTTP client went away. Each request gets a [`Disconnect`] token in its
//! extensions; the token is cancelled when hyper drops the response body (the client closed the
//! connection, or the response is complete).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::mcp::disconnect::Disconnect;

struct Guarded {
    inner: Body,
    _guard: DropGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: attach a [`Disconnect`] token to the request, tied to the response body.
pub async fn track(mut req: Request, next: Next) -> Response {
    let token = CancellationToken::new();
    req.extensions_mut().insert(Disconnect(token.clone()));
    let (parts, body) = next.run(req).await.into_parts();
    Response::from_parts(parts, Body::new(Guarded { inner: body, _guard: token.drop_guard() }))
}
