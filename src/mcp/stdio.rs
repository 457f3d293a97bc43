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

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's standard input.
pub enum Input {
    Reactor(AsyncFd<File>),
    Blocking(tokio::io::Stdin),
}

/// The server's standard output.
pub enum Output {
    Reactor(AsyncFd<File>),
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
        Some(file) => Output::Reactor(file),
        None => Output::Blocking(tokio::io::stdout()),
    }
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
                match guard.try_io(|f| f.get_ref().read(unfilled)) {
                    Ok(Ok(n)) => {
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
            Self::Reactor(fd) => loop {
                let mut guard = ready!(fd.poll_write_ready(cx))?;
                match guard.try_io(|f| f.get_ref().write(buf)) {
                    Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => {}
                }
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Blocking(stdout) => Pin::new(stdout).poll_flush(cx),
            Self::Reactor(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Blocking(stdout) => Pin::new(stdout).poll_shutdown(cx),
            Self::Reactor(_) => Poll::Ready(Ok(())),
        }
    }
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
            Some(f) => Output::Reactor(f),
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

    #[tokio::test]
    async fn a_regular_file_is_not_put_on_the_reactor() {
        let file = tempfile::tempfile().expect("tempfile");
        assert!(reactor_file(file.as_fd(), false).is_none());
    }
}
