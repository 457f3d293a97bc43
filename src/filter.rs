//! The stdin filter behind `mcp-workers run`: JSON lines in, protocol lines out (logs on stderr).
//!
//! At end of input the accepted work is finished, then the process exits 0. On SIGINT/SIGTERM
//! reading stops, workers are stopped (graceful, then forced), each unfinished action gets its
//! `shutdown` result, and the process exits 0.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::lines::{BoundedLines, Line};
use crate::pool::{Event, Pool, Stopping};
use crate::protocol::parse::parse_line;
use crate::protocol::{LineError, LineErrorKind, Output};
use crate::settings::DaemonSettings;

/// The filter itself, over any reader and writer: reads lines until end of input or shutdown,
/// then waits for every accepted action's result to be written.
/// `force` (a second signal) kills workers being stopped without their grace.
pub async fn serve_lines<R, W>(
    settings: Arc<DaemonSettings>,
    input: R,
    output: W,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Event>(1024);
    let writer = tokio::spawn(write_lines(out_rx, output, shutdown.clone()));
    let (pool, finished) = Pool::start(settings.clone(), out_tx.clone(), Stopping::immediate(&shutdown, &force));

    let mut lines = BoundedLines::new(BufReader::new(input), settings.max_line_bytes);
    let mut number = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = lines.next_line() => next,
        };
        let reply = match next {
            Ok(None) => break,
            Err(err) => {
                warn!("cannot read stdin: {err}");
                break;
            }
            Ok(Some(Line::TooLong)) => {
                number += 1;
                Err(LineError::new(
                    LineErrorKind::LineTooLong,
                    format!("line is longer than {} bytes; it was skipped", settings.max_line_bytes),
                    Some(number),
                ))
            }
            Ok(Some(Line::Text(line))) => {
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                parse_line(&line, Some(number), settings.limits)
            }
        };
        match reply {
            Ok(items) => {
                for item in items {
                    pool.submit(item).await;
                }
            }
            Err(error) => {
                let _ = out_tx.send(Event::Output(Output::Error(error))).await;
            }
        }
    }
    info!(lines = number, unfinished = pool.unfinished(), "input closed; finishing accepted actions");
    drop(pool);
    finished.wait().await;
    drop(out_tx);
    if let Err(err) = writer.await {
        warn!("the output writer stopped abnormally: {err}");
    }
}

/// Writes each output as one line; flushes whenever no further output is waiting. If the reader
/// of our output goes away, nothing can be delivered any more: that is a shutdown.
async fn write_lines<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<Event>, output: W, shutdown: CancellationToken) {
    let mut out = BufWriter::new(output);
    let mut broken = false;
    while let Some(event) = rx.recv().await {
        // A start needs no record here: dropping its `ack` lets the worker go.
        let Event::Output(item) = event else { continue };
        if broken {
            continue;
        }
        let mut line = item.to_line();
        line.push('\n');
        let mut written = out.write_all(line.as_bytes()).await;
        if written.is_ok() && rx.is_empty() {
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
