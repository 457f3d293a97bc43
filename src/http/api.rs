//! The worker API's HTTP routes: `/v1/actions`, `/v1/tasks/{id}`, `/v1/events`, `/healthz`,
//! `/readyz`, `/metrics`. Errors answer `{"type":"error","error":{"kind":..,"message":..}}` with the
//! stdin protocol's kinds (`invalid_json`, `invalid_envelope`, `line_too_long`) plus HTTP ones
//! (`unauthorized`, `not_found`, `already_finished`, `shutdown`, `internal_error`).

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::mcp::workers::front::Cancel;
use crate::protocol::parse::{parse_document, parse_line};
use crate::service::{AcceptError, Accepted, Published, Service};
use crate::store::EventKind;
use crate::worker::progress::ProgressLine;

/// Events replayed per journal read.
const PAGE: u32 = 1000;

/// The routes that need the bearer token (when one is set).
pub fn protected(service: Arc<Service>) -> Router {
    let limit = service.settings.max_line_bytes;
    Router::new()
        .route("/v1/actions", post(post_actions).layer(DefaultBodyLimit::max(limit)))
        .route("/v1/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/v1/tasks/{id}/transcript", get(get_transcript))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(service)
}

/// Health routes, open to the container runtime or systemd without a token.
pub fn open(service: Arc<Service>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(service)
}

/// Requires `Authorization: Bearer <token>` on everything below it when a token is set.
pub async fn require_token(State(token): State<Option<Arc<str>>>, request: Request, next: Next) -> Response {
    let Some(token) = token else { return next.run(request).await };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(request).await
    } else {
        let mut response =
            error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid `Authorization: Bearer` token is required");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        response
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"type": "error", "error": {"kind": kind, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!("journal: {err}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", format!("the journal failed: {err}"))
}

#[derive(Debug, Deserialize)]
struct ActionsQuery {
    /// `true` (wait up to the largest deadline plus the queue), or a duration such as `30s`.
    wait: Option<String>,
    /// `json` (the default: the body is one JSON document) or `text` (the body is an agent's reply
    /// text, whose JSON is taken out of it as `run --input text` does).
    input: Option<String>,
}

/// `POST /v1/actions`: the same document as a stdin line. Accepted actions are journalled before
/// the answer; with `?wait` the answer holds their results.
async fn post_actions(
    State(service): State<Arc<Service>>,
    Query(query): Query<ActionsQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = service.settings.max_line_bytes;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "line_too_long",
                format!("the body is larger than {limit} bytes"),
            );
        }
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "invalid_json", rejection.body_text()),
    };
    let wait = match query.wait.as_deref() {
        None | Some("false" | "0") => None,
        Some("true" | "1" | "") => Some(service.settings.limits.max_timeout + Duration::from_secs(60)),
        Some(text) => match crate::args::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_envelope", format!("wait: {message}")),
        },
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_json", "the body is not UTF-8");
    };
    let parsed = match query.input.as_deref() {
        None | Some("json") => parse_line(text, None, service.settings.limits),
        Some("text") => crate::protocol::reply::extract(text)
            .and_then(|(document, _)| parse_document(document, None, service.settings.limits)),
        Some(other) => {
            let message = format!("input: `{other}` is neither `json` nor `text`");
            return error(StatusCode::BAD_REQUEST, "invalid_envelope", message);
        }
    };
    let items = match parsed {
        Ok(items) => items,
        Err(line_error) => return (StatusCode::BAD_REQUEST, axum::Json(line_error)).into_response(),
    };
    // Cancel-safe: the accept runs to its end in a task of its own even if this handler is
    // dropped (the client went away); only the waiting below is abandoned then.
    let Accepted { accepted, accepted_ids, refused, acks, mut subscription } = match service.accept(items).await {
        Ok(accepted) => accepted,
        Err(AcceptError::Draining) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "shutdown", "the daemon is shutting down");
        }
        Err(err) => return internal(err),
    };
    let Some(wait) = wait else {
        let status = if accepted.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
        return (status, axum::Json(json!({"accepted": accepted, "results": refused, "acks": acks}))).into_response();
    };
    let (results, pending) = collect_results(&service, &mut subscription, accepted_ids, wait).await;
    let mut all: Vec<Value> = refused.iter().filter_map(|r| serde_json::to_value(r).ok()).collect();
    all.extend(results);
    axum::Json(json!({"accepted": accepted, "results": all, "acks": acks, "pending": pending})).into_response()
}

/// Waits up to `wait` for the results of `ids`, in completion order. Returns them and the ids
/// still unfinished.
async fn collect_results(
    service: &Service,
    subscription: &mut broadcast::Receiver<Published>,
    ids: Vec<String>,
    wait: Duration,
) -> (Vec<Value>, Vec<String>) {
    let mut waiting: BTreeSet<String> = ids.into_iter().collect();
    let mut results = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !waiting.is_empty() {
        let event = tokio::select! {
            event = subscription.recv() => event,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            Ok(event) if event.kind == EventKind::Result => {
                if let Some(id) = event.data["taskId"].as_str()
                    && waiting.remove(id)
                {
                    results.push(event.data);
                }
            }
            Ok(_) => {}
            // Missed events: ask the journal for what is still missing.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for id in waiting.clone() {
                    if let Ok(Some(record)) = service.journal.action(&id).await
                        && let Some(result) = record.result
                    {
                        waiting.remove(&id);
                        results.push(result);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    (results, waiting.into_iter().collect())
}

/// `GET /v1/tasks/{id}`: the action's state and, once done, its `worker_result`.
async fn get_task(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    match service.journal.action(&id).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no action with taskId {id}")),
        Err(err) => internal(err),
    }
}

/// `DELETE /v1/tasks/{id}`: cancels a queued or running action (its result: kind `cancelled`).
async fn cancel_task(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    match service.cancel(&id).await {
        Ok(Cancel::Cancelling) => {
            (StatusCode::ACCEPTED, axum::Json(json!({"taskId": id, "cancelled": true}))).into_response()
        }
        Ok(Cancel::Finished) => {
            error(StatusCode::CONFLICT, "already_finished", format!("action {id} has finished already"))
        }
        // Accepted but not yet handed to the pool (only during recovery): say so plainly.
        Ok(Cancel::NotNow) => {
            error(StatusCode::CONFLICT, "not_cancellable", format!("action {id} cannot be cancelled now"))
        }
        Ok(Cancel::Unknown) => error(StatusCode::NOT_FOUND, "not_found", format!("no action with taskId {id}")),
        Err(err) => internal(err),
    }
}

/// `GET /v1/tasks/{id}/transcript`: the worker's kept stream-json transcript (NDJSON).
async fn get_transcript(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    let path = crate::worker::transcript::transcript_path(&service.settings.worker.cli.data_dir, &id);
    match path.map(tokio::fs::read) {
        Some(read) => match read.await {
            Ok(bytes) => ([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response(),
            Err(_) => error(StatusCode::NOT_FOUND, "not_found", format!("no transcript kept for task {id}")),
        },
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no transcript kept for task {id}")),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Replay events after this id (as `Last-Event-ID` does); `0` replays everything kept.
    after: Option<i64>,
}

/// `GET /v1/events`: Server-Sent Events (`accepted`, `started`, `result`), each with its journal
/// id. Resumable: `Last-Event-ID` (or `?after=N`) replays what was missed, across restarts too.
async fn events(State(service): State<Arc<Service>>, headers: HeaderMap, Query(query): Query<EventsQuery>) -> Response {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after);
    let subscription = service.events.subscribe();
    let progress = service.progress.subscribe();
    let stream = event_stream(service, subscription, progress, after);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

struct Feed {
    service: Arc<Service>,
    subscription: broadcast::Receiver<Published>,
    /// Live progress (not journalled, not replayed; a lagging subscriber loses the oldest).
    progress: broadcast::Receiver<ProgressLine>,
    backlog: VecDeque<Published>,
    /// The last id sent (or skipped as already seen); `None`: live only, from the first event.
    last: Option<i64>,
    replaying: bool,
}

fn event_stream(
    service: Arc<Service>,
    subscription: broadcast::Receiver<Published>,
    progress: broadcast::Receiver<ProgressLine>,
    after: Option<i64>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let feed =
        Feed { service, subscription, progress, backlog: VecDeque::new(), last: after, replaying: after.is_some() };
    stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.backlog.pop_front() {
                if event.id.is_some() {
                    feed.last = event.id;
                }
                return Some((Ok(sse(&event)), feed));
            }
            if feed.replaying {
                let after = feed.last.unwrap_or(0);
                match feed.service.journal.events_after(after, PAGE).await {
                    Ok(page) if !page.is_empty() => feed.backlog.extend(page.into_iter().map(Published::from)),
                    _ => feed.replaying = false,
                }
                continue;
            }
            let next = tokio::select! {
                // Progress first: a worker's progress is sent before its result is published.
                biased;
                line = feed.progress.recv() => match line {
                    Ok(line) => return Some((Ok(SseEvent::default().event("progress").data(line.to_line())), feed)),
                    // Progress missed is progress dropped; Closed cannot happen while the service lives.
                    Err(_) => continue,
                },
                event = feed.subscription.recv() => event,
                _ = feed.service.draining.cancelled() => return None,
            };
            match next {
                // An event without an id (its journal write is being retried) is sent as it is.
                Ok(event) if feed.last.is_none_or(|last| event.id.is_none_or(|id| id > last)) => {
                    feed.backlog.push_back(event)
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => feed.replaying = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn sse(event: &Published) -> SseEvent {
    let sse = SseEvent::default().event(event.kind.as_str()).data(event.data.to_string());
    match event.id {
        Some(id) => sse.id(id.to_string()),
        None => sse,
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if service.is_ready().await {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting, draining, or the journal does not answer")
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let running = service.pool.running();
    let waiting = service.pool.unfinished().saturating_sub(running);
    let queue = service.queue.store().counts().await.ok();
    let dispatch = service.pool.dispatch();
    let budget = service.pool.budget().await;
    let cluster = match &service.cluster {
        Some(member) => member.cluster.status().await.ok(),
        None => None,
    };
    let text =
        service.metrics.render(crate::service::metrics::Gauges { running, waiting, queue, dispatch, budget, cluster });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
