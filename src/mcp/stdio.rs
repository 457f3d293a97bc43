//! Standard input and output for the built-in stdio servers, driven by the runtime's reactor.
//!
//! `tokio::io::stdin()`/`stdout()` run every read and write on the blocking thread pool: one
//! hand-off to another thread and back per message. Our clients give a server a pipe (most tools)
//! or a UNIX socket (the Claude Code CLI, and Node's `child_process`), and both can be polled. So:
//! - a **FIFO** is reopened through `/proc/self/fd/N` with `O_NONBLOCK`: a new open file
//!   description, so the flag stays private to this reader or writer;
//! - a **socket** cannot be reopened, so a duplicate of it is made non-blocking. That flag is shared
//!   with fd 0 or 1 themselves, which nothing else in these servers uses (`no-roots` takes only
//!   [`input`]: its child gets a pipe of its own for stdin, and writes our stdout itself, blocking);
//!   it is not done when the socket is also another standard descriptor (stderr's log writes, or
//!   the stdout a child inherits, must stay blocking);
//! - anything else (a terminal, a file, `/dev/null`) keeps tokio's blocking handles.
//!
//! Output on the reactor is **written behind** ([`WriteBehind`]): a write appends to a buffer and
//! wakes a flush task, which runs after every task that was ready with it and writes the whole
//! buffer with one `write`. The replies of a pipelined burst (rmcp writes and flushes each message
//! on its own) thus cost one syscall and one wake-up of the client instead of one each.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's standard input.
pub enum Input {
    Reactor(AsyncFd<File>),
    Blocking(tokio::io::Stdin),
}

/// The server's standard output.
pub enum Output {
    Reactor(WriteBehind),
    Blocking(tokio::io::Stdout),
}

/// Standard input and output, each on the reactor where it can be. Must run inside a runtime.
pub fn stdio() -> (Input, Output) {
    (input(), output())
}

/// Standard input, on the reactor where it can be. Must run inside a runtime.
pub fn input() -> Input {
    match reactor_file(io::stdin().as_fd(), false) {
        Some(file) => Input::Reactor(file),
        None => Input::Blocking(tokio::io::stdin()),
    }
}

/// Standard output, on the reactor where it can be. Must run inside a runtime.
pub fn output() -> Output {
    match reactor_file(io::stdout().as_fd(), true) {
        Some(file) => Output::Reactor(WriteBehind::start(file)),
        None => Output::Blocking(tokio::io::stdout()),
    }
}

/// A buffer this large makes writers wait until the flush task has written it out.
const HIGH_WATER: usize = 64 * 1024;

/// How long the last owner of unwritten output waits for the reader before dropping it (only when
/// the runtime ended before the flush task could write it: at exit).
const LAST_WRITE_PATIENCE: Duration = Duration::from_secs(1);

/// A pollable pipe or socket written behind: [`AsyncWrite::poll_write`] appends to a buffer and
/// wakes the flush task (spawned with it, on the current runtime), which writes everything
/// buffered at once when it runs: after the tasks that were ready together with the writer.
/// A write error is kept and returned to every later write; the buffered bytes are dropped.
/// Dropped, the handle lets the flush task write what is left and end; if the runtime is gone
/// first, the last owner writes it out itself (waiting at most [`LAST_WRITE_PATIENCE`]).
pub struct WriteBehind {
    shared: Arc<Behind>,
}

struct Behind {
    fd: AsyncFd<File>,
    state: Mutex<State>,
    /// The flush task.
    flusher: AtomicWaker,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The first write error: every later write gets it.
    failed: Option<(io::ErrorKind, String)>,
    /// The handle was dropped: the flush task ends once the buffer is empty.
    closed: bool,
    /// Writers waiting for the buffer to drain (a full buffer, or a shutdown).
    drained: Vec<Waker>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WriteBehind {
    /// Takes a non-blocking file registered with the reactor; spawns the flush task.
    fn start(fd: AsyncFd<File>) -> Self {
        let shared = Arc::new(Behind { fd, state: Mutex::new(State::default()), flusher: AtomicWaker::new() });
        let task = Arc::clone(&shared);
        tokio::spawn(std::future::poll_fn(move |cx| task.poll_flush_task(cx)));
        Self { shared }
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = lock(&self.shared.state);
        if let Some((kind, msg)) = &state.failed {
            return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
        }
        if state.buf.len() >= HIGH_WATER {
            state.drained.push(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(data);
        drop(state);
        if was_empty {
            self.shared.flusher.wake();
        }
        Poll::Ready(Ok(data.len()))
    }

    /// Appends all of `data` (or nothing, while the buffer is full): one message stays whole
    /// even when several writers share the handle.
    pub(super) fn poll_write_all(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<()>> {
        self.poll_write(cx, data).map_ok(drop)
    }

    /// Ready once everything written so far is out (or failed).
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared.state);
        if let Some((kind, msg)) = &state.failed {
            return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
        }
        if state.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        state.drained.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.flusher.wake();
    }
}

impl Behind {
    /// The flush task: writes the buffer out whenever it holds something; ends when the handle
    /// is gone and the buffer empty, or at a write error.
    fn poll_flush_task(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.flusher.register(cx.waker());
        loop {
            let mut state = lock(&self.state);
            if state.failed.is_some() || (state.buf.is_empty() && state.closed) {
                return Poll::Ready(());
            }
            if state.buf.is_empty() {
                return Poll::Pending;
            }
            let mut guard = match self.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(err)) => {
                    state.fail(&err);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|f| f.get_ref().write(&state.buf)) {
                Ok(Ok(n)) => {
                    state.buf.drain(..n);
                    if state.buf.is_empty() {
                        state.drained.drain(..).for_each(Waker::wake);
                    }
                }
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(err)) => {
                    state.fail(&err);
                    return Poll::Ready(());
                }
                Err(_would_block) => {}
            }
        }
    }
}

impl State {
    fn fail(&mut self, err: &io::Error) {
        self.failed = Some((err.kind(), err.to_string()));
        self.buf = Vec::new();
        self.drained.drain(..).for_each(Waker::wake);
    }
}

impl Drop for Behind {
    /// The runtime ended before the flush task wrote everything: write the rest here.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut rest: &[u8] = &state.buf;
        let deadline = Instant::now() + LAST_WRITE_PATIENCE;
        while !rest.is_empty() && state.failed.is_none() {
            match self.fd.get_ref().write(rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_writable(self.fd.get_ref(), left) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// Waits until `file` can be written, at most `timeout`.
fn wait_writable(file: &File, timeout: Duration) -> bool {
    let mut pfd = nix::libc::pollfd { fd: file.as_raw_fd(), events: nix::libc::POLLOUT, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: one valid `pollfd` for the duration of the call; `file` keeps the descriptor open.
    let ready = unsafe { nix::libc::poll(&raw mut pfd, 1, ms) };
    ready > 0 && pfd.revents & nix::libc::POLLOUT != 0
}

/// A non-blocking handle on the same pipe or socket as `fd`, registered with the reactor.
fn reactor_file(fd: BorrowedFd<'_>, write: bool) -> Option<AsyncFd<File>> {
    let meta = File::from(fd.try_clone_to_owned().ok()?).metadata().ok()?;
    let file = if meta.file_type().is_fifo() {
        let mut options = std::fs::OpenOptions::new();
        options.read(!write).write(write).custom_flags(nix::libc::O_NONBLOCK);
        options.open(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?
    } else if meta.file_type().is_socket() && !is_another_std_fd(fd.as_raw_fd(), &meta) {
        let owned: OwnedFd = fd.try_clone_to_owned().ok()?;
        set_nonblocking(&owned).ok()?;
        File::from(owned)
    } else {
        return None;
    };
    // SAFETY: `register` needs the descriptor to stay open as long as the `AsyncFd`: the `File`
    // owns it and is owned by the `AsyncFd`, so it is closed only when the `AsyncFd` is dropped.
    unsafe { AsyncFd::register(file) }.ok()
}

/// Whether another of fds 0, 1, 2 is the same socket: then `O_NONBLOCK` would reach it too (log
/// writes to stderr, or a child's inherited stdout, must stay blocking). Unknown counts as yes.
fn is_another_std_fd(raw: i32, meta: &std::fs::Metadata) -> bool {
    [io::stdin().as_fd(), io::stdout().as_fd(), io::stderr().as_fd()].into_iter().filter(|o| o.as_raw_fd() != raw).any(
        |other| match other.try_clone_to_owned() {
            Ok(owned) => File::from(owned).metadata().map_or(true, |m| m.dev() == meta.dev() && m.ino() == meta.ino()),
            // A closed standard descriptor is no one else's.
            Err(_) => false,
        },
    )
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

impl AsyncRead for Input {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Blocking(stdin) => Pin::new(stdin).poll_read(cx, buf),
            Self::Reactor(fd) => loop {
                let mut guard = ready!(fd.poll_read_ready(cx))?;
                let unfilled = buf.initialize_unfilled();
                let room = unfilled.len();
                match guard.try_io(|f| f.get_ref().read(unfilled)) {
                    Ok(Ok(n)) => {
                        // The reactor's epoll is edge-triggered: a read that did not fill the
                        // buffer drained the pipe, so the next read waits for the next edge
                        // instead of trying a read that fails with EAGAIN (one system call less
                        // per message; what tokio's own sockets do).
                        if 0 < n && n < room {
                            guard.clear_ready();
                        }
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(err)) => return Poll::Ready(Err(err)),
                    Err(_would_block) => {}
                }
            },
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Blocking(stdout) => Pin::new(stdout).poll_write(cx, buf),
            Self::Reactor(behind) => behind.poll_write(cx, buf),
        }
    }

    /// Written behind: ready at once (rmcp flushes after every message; waiting here would
    /// undo the batching). The bytes go out when the flush task runs, before any later wait of
    /// this runtime sleeps (the flush task is queued to run).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Blocking(stdout) => Pin::new(stdout).poll_flush(cx),
            Self::Reactor(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Blocking(stdout) => Pin::new(stdout).poll_shutdown(cx),
            Self::Reactor(behind) => behind.poll_drained(cx),
        }
    }
}

/// The reading end of a pipe as a server's input, on the reactor (for tests).
#[cfg(test)]
pub(super) fn test_input(fd: OwnedFd) -> Input {
    let Some(file) = reactor_file(fd.as_fd(), false) else { panic!("a FIFO must be reopened non-blocking") };
    Input::Reactor(file)
}

/// The writing end of a pipe as a server's output, written behind (for tests).
#[cfg(test)]
pub(super) fn test_output(fd: OwnedFd) -> Output {
    let Some(file) = reactor_file(fd.as_fd(), true) else { panic!("a FIFO must be reopened non-blocking") };
    Output::Reactor(WriteBehind::start(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pipe and a socket pair both end up on the reactor, and carry bytes both ways.
    #[tokio::test]
    async fn pipes_and_sockets_use_the_reactor() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut input = match reactor_file(r.as_fd(), false) {
            Some(f) => Input::Reactor(f),
            None => panic!("a FIFO must be reopened non-blocking"),
        };
        let mut output = match reactor_file(w.as_fd(), true) {
            Some(f) => Output::Reactor(WriteBehind::start(f)),
            None => panic!("a FIFO must be reopened non-blocking"),
        };
        output.write_all(b"hello\n").await.expect("write");
        let mut got = [0u8; 6];
        input.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello\n");

        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut sock_in = match reactor_file(a.as_fd(), false) {
            Some(f) => Input::Reactor(f),
            None => panic!("a socket must be made non-blocking"),
        };
        (&b).write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        sock_in.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        drop(b);
        let mut rest = Vec::new();
        sock_in.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }

    /// Many writes, each flushed, go out in order; dropped with bytes still buffered, the handle's
    /// flush task writes them out (the reader sees every byte, then end of file).
    #[tokio::test]
    async fn output_is_written_behind_in_order_and_survives_the_drop() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut output = test_output(w);
        let mut expected = Vec::new();
        for i in 0..1000 {
            let line = format!("{{\"id\":{i}}}\n");
            output.write_all(line.as_bytes()).await.expect("write");
            output.flush().await.expect("flush");
            expected.extend_from_slice(line.as_bytes());
        }
        drop(output);
        let reader = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            File::from(r).read_to_end(&mut got).map(|_| got)
        });
        assert_eq!(reader.await.expect("join").expect("read"), expected);
    }

    /// More than the pipe and the buffer hold: writers wait for the flush task (the full-buffer
    /// path) while a reader drains the pipe; every byte arrives, in order.
    #[tokio::test]
    async fn a_full_buffer_makes_writers_wait_and_loses_nothing() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut output = test_output(w);
        let reader = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            File::from(r).read_to_end(&mut got).map(|_| got)
        });
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = std::iter::repeat_n(b'a' + u8::try_from(i % 26).unwrap_or(0), 1000).collect();
            output.write_all(&chunk).await.expect("write");
            expected.extend_from_slice(&chunk);
        }
        output.shutdown().await.expect("shutdown waits for the buffer");
        drop(output);
        assert_eq!(reader.await.expect("join").expect("read"), expected);
    }

    /// A reader that went away makes a later write fail (EPIPE), not hang or succeed forever.
    #[tokio::test]
    async fn a_closed_reader_fails_later_writes() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut output = test_output(w);
        drop(r);
        let mut failed = None;
        for _ in 0..100 {
            if let Err(err) = output.write_all(b"x\n").await {
                failed = Some(err);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(failed.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
    }

    #[tokio::test]
    async fn a_regular_file_is_not_put_on_the_reactor() {
        let file = tempfile::tempfile().expect("tempfile");
        assert!(reactor_file(file.as_fd(), false).is_none());
    }
}
