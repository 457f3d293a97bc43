//! The stdin filter behind `mcp-workers run`: JSON documents in (a stream of them, whatever
//! their line breaks, or one agent reply with `--input text`), protocol lines out (logs on stderr).
//!
//! At end of input the accepted work is finished, then the process exits 0. On SIGINT/SIGTERM
//! reading stops, workers are stopped (graceful, then forced), each unfinished action gets its
//! `shutdown` result, and the process exits 0.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pool::{Event, Pool, Stopping};
use crate::protocol::documents::{MAX_DEPTH, Piece, Splitter};
use crate::protocol::parse::{Item, parse_document, parse_line};
use crate::protocol::{LineError, LineErrorKind, Output};
use crate::settings::DaemonSettings;
use crate::worker::progress::{ProgressLine, Sink};

/// Bytes asked of stdin per read.
const READ_CHUNK: usize = 64 * 1024;

/// Progress lines waiting for stdout, all workers together; when full, new ones are dropped.
const PROGRESS_QUEUE: usize = 256;

/// Which actions report `worker_progress` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Those that ask (`"progress": true`).
    #[default]
    Asked,
    /// Every action (`run --progress`).
    All,
}

/// How stdin is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputMode {
    /// A stream of JSON documents, whatever their line breaks.
    #[default]
    Json,
    /// The whole input is an agent's reply text; its JSON is taken out of it.
    Text,
}

/// The filter itself, over any reader and writer: reads documents until end of input or
/// shutdown, then waits for every accepted action's result to be written.
/// `force` (a second signal) kills workers being stopped without their grace.
pub async fn serve_lines<R, W>(
    settings: Arc<DaemonSettings>,
    mode: InputMode,
    progress: Progress,
    input: R,
    output: W,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Event>(1024);
    let (progress_tx, progress_rx) = mpsc::channel::<ProgressLine>(PROGRESS_QUEUE);
    let settings = settings.with_progress(Sink::queue(progress_tx, progress == Progress::All));
    let writer = tokio::spawn(write_lines(out_rx, progress_rx, output, shutdown.clone()));
    let (pool, finished) = Pool::start(settings.clone(), out_tx.clone(), Stopping::immediate(&shutdown, &force));
    let deliver = async |reply: Result<Vec<Item>, LineError>| match reply {
        Ok(items) => {
            for item in items {
                pool.submit(item).await;
            }
        }
        Err(error) => {
            let _ = out_tx.send(Event::Output(Output::Error(error))).await;
        }
    };
    let documents = match mode {
        InputMode::Json => read_documents(&settings, input, &shutdown, deliver).await,
        InputMode::Text => read_reply(&settings, input, &shutdown, deliver).await,
    };
    info!(documents, unfinished = pool.unfinished(), "input closed; finishing accepted actions");
    drop(pool);
    finished.wait().await;
    drop(out_tx);
    if let Err(err) = writer.await {
        warn!("the output writer stopped abnormally: {err}");
    }
}

/// Reads a stream of JSON documents and delivers each one's items (or its one error) as soon as
/// it is complete. Returns how many documents it read.
async fn read_documents<R: AsyncRead + Unpin>(
    settings: &DaemonSettings,
    mut input: R,
    shutdown: &CancellationToken,
    deliver: impl AsyncFn(Result<Vec<Item>, LineError>),
) -> u64 {
    let mut splitter = Splitter::new(settings.max_line_bytes, MAX_DEPTH);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut pieces = Vec::new();
    let mut documents = 0;
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            read = input.read(&mut chunk) => read,
        };
        let ended = match read {
            Ok(0) => true,
            Ok(n) => {
                splitter.feed(&chunk[..n], &mut pieces);
                false
            }
            Err(err) => {
                warn!("cannot read stdin: {err}");
                true
            }
        };
        if ended {
            splitter.finish(&mut pieces);
        }
        for piece in pieces.drain(..) {
            documents += 1;
            deliver(match piece {
                Piece::Document { text, line } => parse_line(&text, Some(line), settings.limits),
                Piece::Broken(error) => Err(error),
            })
            .await;
        }
        if ended {
            break;
        }
    }
    documents
}

/// Reads the whole input (at most `--max-line-bytes`) as one agent reply and delivers the items of
/// the JSON document found in it.
async fn read_reply<R: AsyncRead + Unpin>(
    settings: &DaemonSettings,
    input: R,
    shutdown: &CancellationToken,
    deliver: impl AsyncFn(Result<Vec<Item>, LineError>),
) -> u64 {
    let limit = settings.max_line_bytes;
    let mut text = Vec::new();
    let mut bounded = input.take(limit as u64 + 1);
    let read = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return 0,
        read = bounded.read_to_end(&mut text) => read,
    };
    if let Err(err) = read {
        warn!("cannot read stdin: {err}");
    }
    let reply = if text.len() > limit {
        Err(LineError::new(
            LineErrorKind::LineTooLong,
            format!("the reply is longer than {limit} bytes; it was not read"),
            None,
        ))
    } else {
        crate::protocol::reply::extract(&String::from_utf8_lossy(&text))
            .and_then(|(document, line)| parse_document(document, Some(line), settings.limits))
    };
    deliver(reply).await;
    1
}

/// Writes each output as one line; flushes whenever no further output is waiting. If the reader
/// of our output goes away, nothing can be delivered any more: that is a shutdown.
/// Progress lines come on their own channel; before a result is written, every progress line
/// already queued is written first (a worker's progress was queued before its result).
async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Event>,
    mut progress: mpsc::Receiver<ProgressLine>,
    output: W,
    shutdown: CancellationToken,
) {
    let mut out = BufWriter::new(output);
    let mut broken = false;
    loop {
        let mut lines = Vec::new();
        tokio::select! {
            biased;
            event = rx.recv() => match event {
                None => break,
                // A start needs no record here: dropping its `ack` lets the worker go.
                // Attempts and budget figures are `serve`'s SSE events; the pool logs them.
                Some(Event::Started { .. } | Event::Attempt(_) | Event::Budget(_)) => continue,
                Some(Event::Output(item)) => {
                    while let Ok(line) = progress.try_recv() {
                        lines.push(line.to_line());
                    }
                    lines.push(item.to_line());
                }
            },
            Some(line) = progress.recv() => lines.push(line.to_line()),
        }
        if broken {
            continue;
        }
        let mut written = Ok(());
        for mut line in lines {
            line.push('\n');
            written = out.write_all(line.as_bytes()).await;
            if written.is_err() {
                break;
            }
        }
        if written.is_ok() && rx.is_empty() && progress.is_empty() {
            written = out.flush().await;
        }
        if let Err(err) = written {
            warn!("cannot write to stdout ({err}); shutting down");
            broken = true;
            shutdown.cancel();
        }
    }
    let _ = out.flush().await;
}
