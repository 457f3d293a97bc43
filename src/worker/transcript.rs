//! What the daemon keeps of each worker, in its data directory, readable by its owner only:
//! - `transcripts/<taskId>.jsonl`: the CLI's stream-json lines, the registry's secrets scrubbed
//!   by value, at most [`MAX_TRANSCRIPT_BYTES`] (then one `{"type":"transcript_truncated"}` line);
//!   read by `mcp-workers tasks transcript ID` and `GET /v1/tasks/{id}/transcript`;
//! - `sessions/<sessionId>.jsonl`: the CLI's own session file (what `--resume` reads; it holds
//!   the whole conversation, so it is as secret as the transcript), and `sessions/<taskId>.task`
//!   naming the session a task ran in (what `"continue": taskId` looks up).
//!
//! Both are removed after the retention (`--transcript-retention`), swept at start-up.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::protocol::parse::is_task_id;

/// The most of one worker's stream kept.
pub const MAX_TRANSCRIPT_BYTES: u64 = 8 << 20;

pub fn transcript_path(data_dir: &Path, task_id: &str) -> Option<PathBuf> {
    is_task_id(task_id).then(|| data_dir.join("transcripts").join(format!("{task_id}.jsonl")))
}

fn sessions(data_dir: &Path) -> PathBuf {
    data_dir.join("sessions")
}

/// Creates `dir` (and its parents) owner-only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// The registry's secret values (what its `${VAR}`s expand to), to be scrubbed from what the
/// daemon shows or keeps. Values shorter than 4 characters are not treated as secrets (scrubbing
/// them would mangle everything).
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        Secrets(values.into_iter().filter(|s| s.len() >= 4).collect())
    }

    /// `text` with every secret value replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "[redacted]"))
    }
}

/// Writes one worker's transcript as its lines arrive.
#[derive(Debug)]
pub struct Keeper {
    file: Option<File>,
    written: u64,
    secrets: Secrets,
    /// The CLI's session id, from its events.
    pub session_id: Option<String>,
}

impl Keeper {
    /// A keeper for `task_id` (no file when the directory cannot be made: logged, the worker goes on).
    pub fn open(data_dir: &Path, task_id: &str, secrets: Secrets) -> Keeper {
        let file = transcript_path(data_dir, task_id).and_then(|path| {
            let opened = path.parent().map_or(Ok(()), private_dir).and_then(|()| private_file(&path));
            opened.map_err(|err| warn!("cannot keep the transcript at {}: {err}", path.display())).ok()
        });
        Keeper { file, written: 0, secrets, session_id: None }
    }

    /// Takes one line of the stream.
    pub fn line(&mut self, line: &str) {
        if self.session_id.is_none() && line.contains("\"session_id\"") {
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            self.session_id = event["session_id"].as_str().filter(|id| is_task_id(id)).map(str::to_owned);
        }
        let Some(file) = &mut self.file else { return };
        let scrubbed = self.secrets.scrub(line);
        let size = scrubbed.len() as u64 + 1;
        let written = if self.written + size > MAX_TRANSCRIPT_BYTES {
            let marker = format!("{{\"type\":\"transcript_truncated\",\"maxBytes\":{MAX_TRANSCRIPT_BYTES}}}\n");
            let result = file.write_all(marker.as_bytes());
            self.file = None;
            result
        } else {
            self.written += size;
            file.write_all(scrubbed.as_bytes()).and_then(|()| file.write_all(b"\n"))
        };
        if let Err(err) = written {
            warn!("cannot write the transcript: {err}");
            self.file = None;
        }
    }
}

/// The session a finished task ran in: its id and the kept session file, if both still exist.
pub fn session_of(data_dir: &Path, task_id: &str) -> Option<(String, PathBuf)> {
    if !is_task_id(task_id) {
        return None;
    }
    let id = std::fs::read_to_string(sessions(data_dir).join(format!("{task_id}.task"))).ok()?;
    let id = id.trim().to_owned();
    let path = sessions(data_dir).join(format!("{id}.jsonl"));
    (is_task_id(&id) && path.is_file()).then_some((id, path))
}

/// After a worker: keeps the CLI's session file from the worker's HOME (unless the worker
/// appended to the kept one) and records which session the task ran in.
pub fn keep_session(data_dir: &Path, task_id: &str, session_id: &str, home: &Path) -> std::io::Result<()> {
    let dir = sessions(data_dir);
    private_dir(&dir)?;
    let kept = dir.join(format!("{session_id}.jsonl"));
    let name = format!("{session_id}.jsonl");
    let found = std::fs::read_dir(home.join(".claude/projects"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|project| project.path().join(&name))
        .find(|path| path.is_file());
    if let Some(found) = found {
        let mut out = private_file(&kept)?;
        std::io::copy(&mut File::open(found)?, &mut out)?;
    }
    if kept.is_file() {
        private_file(&dir.join(format!("{task_id}.task")))?.write_all(session_id.as_bytes())?;
    }
    Ok(())
}

/// Sessions with a continuation running: one at a time per session.
static BUSY: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Mutex::default);

/// Holds a session for one continuation; released when dropped.
#[derive(Debug)]
pub struct SessionLock(String);

impl SessionLock {
    pub fn take(session_id: &str) -> Option<SessionLock> {
        let mut busy = BUSY.lock().unwrap_or_else(PoisonError::into_inner);
        busy.insert(session_id.to_owned()).then(|| SessionLock(session_id.to_owned()))
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        BUSY.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// Removes kept transcripts and sessions older than `retention`.
pub fn sweep(data_dir: &Path, retention: Duration) {
    let Some(cutoff) = SystemTime::now().checked_sub(retention) else { return };
    for dir in [data_dir.join("transcripts"), sessions(data_dir)] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| modified < cutoff);
            if old && let Err(err) = std::fs::remove_file(entry.path()) {
                warn!("cannot remove {}: {err}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn transcripts_are_private_scrubbed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut keeper = Keeper::open(dir.path(), "t-1", Secrets::new(["hunter22".into(), "x".into()]));
        keeper.line(r#"{"type":"system","subtype":"init","session_id":"0e5c-1"}"#);
        keeper.line(r#"{"type":"user","content":"token hunter22 x"}"#);
        assert_eq!(keeper.session_id.as_deref(), Some("0e5c-1"));
        let path = transcript_path(dir.path(), "t-1").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("token [redacted] x") && !text.contains("hunter22"), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let big = "y".repeat(1 << 20);
        for _ in 0..10 {
            keeper.line(&big);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= MAX_TRANSCRIPT_BYTES + 100, "{size}");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"type\":\"transcript_truncated\",\"maxBytes\":8388608}\n")
        );
        assert_eq!(transcript_path(dir.path(), "../x"), None);
    }

    #[test]
    fn sessions_are_kept_found_locked_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".claude/projects/-w")).unwrap();
        std::fs::write(home.join(".claude/projects/-w/s-1.jsonl"), "{}\n").unwrap();
        let data = dir.path().join("data");
        assert_eq!(session_of(&data, "t-1"), None);
        keep_session(&data, "t-1", "s-1", &home).unwrap();
        let (id, path) = session_of(&data, "t-1").unwrap();
        assert_eq!((id.as_str(), std::fs::read_to_string(&path).unwrap().as_str()), ("s-1", "{}\n"));
        let lock = SessionLock::take("s-1").unwrap();
        assert!(SessionLock::take("s-1").is_none());
        drop(lock);
        assert!(SessionLock::take("s-1").is_some());
        sweep(&data, Duration::from_secs(3600));
        assert!(session_of(&data, "t-1").is_some(), "young files stay");
        sweep(&data, Duration::ZERO);
        assert_eq!(session_of(&data, "t-1"), None);
    }
}
