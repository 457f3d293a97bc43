//! A stream of JSON documents as agents write them, whatever their line breaks: one per line,
//! pretty-printed over many lines, several on one line, or split across reads. Pure: bytes in,
//! pieces out; nothing here does I/O.
//!
//! The splitter only follows the structure (brackets, strings, escapes); `serde_json` reads each
//! document it cuts. It keeps today's guarantees of line-per-document input:
//! - **bounded**: a document longer than `max_bytes` is not buffered (its end is still found, and
//!   it is answered `line_too_long` once); one nested deeper than `max_depth` is answered
//!   `invalid_json` once;
//! - **a broken document is answered once and reading goes on at the next document**: a document
//!   still open when a line starts with `{` or `[` in its first column (where a pretty-printer puts
//!   only a new top-level document) ends there; a line break inside a string (never valid JSON)
//!   breaks it, and what follows is skipped up to the next line that starts in its first column;
//! - **every piece says where it began**: the 1-based line of its first byte.
//!
//! At the top level, anything that does not start with `{` or `[` (a scalar, prose, garbage) is
//! read to the end of its line as one document, which `serde_json` then answers.

use super::{LineError, LineErrorKind};

/// Nesting deeper than this is refused (`serde_json` itself stops at 128).
pub const MAX_DEPTH: usize = 100;

/// One thing cut from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// The text of one complete document (not yet parsed) and the line it starts on.
    Document { text: String, line: u64 },
    /// A document that cannot be read: its one answer.
    Broken(LineError),
}

/// Where the splitter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between documents.
    Top,
    /// Inside `{...}` or `[...]`, outside strings.
    Open,
    /// Inside a string of an open document; `escaped` after a backslash.
    InString { escaped: bool },
    /// A top-level scalar or garbage, read to the end of its line.
    Bare,
    /// After a broken document: skipping to a line that starts in its first column.
    Skip,
}

/// Why the current document will be refused even though its end is being looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    None,
    TooLong,
    TooDeep,
}

/// The incremental splitter. Feed it bytes as they arrive, then call [`Splitter::finish`].
#[derive(Debug)]
pub struct Splitter {
    max_bytes: usize,
    max_depth: usize,
    state: State,
    depth: usize,
    buf: Vec<u8>,
    overflow: Overflow,
    /// The line the next byte is on (1-based).
    line: u64,
    /// The line the current document started on.
    start_line: u64,
    /// The next byte is the first of its line.
    at_line_start: bool,
}

impl Splitter {
    pub fn new(max_bytes: usize, max_depth: usize) -> Self {
        Splitter {
            max_bytes,
            max_depth,
            state: State::Top,
            depth: 0,
            buf: Vec::new(),
            overflow: Overflow::None,
            line: 1,
            start_line: 1,
            at_line_start: true,
        }
    }

    /// Takes the next bytes of the stream; complete pieces are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        for &byte in bytes {
            self.step(byte, out);
            if byte == b'\n' {
                self.line += 1;
                self.at_line_start = true;
            } else {
                self.at_line_start = false;
            }
        }
    }

    /// End of input: a document still open is broken, a bare one is complete.
    pub fn finish(&mut self, out: &mut Vec<Piece>) {
        match self.state {
            State::Top | State::Skip => {}
            State::Bare => self.emit(out),
            State::Open | State::InString { .. } => {
                let message = format!("input ended inside the document that starts on line {}", self.start_line);
                self.broken(LineErrorKind::InvalidJson, message, out);
            }
        }
        self.state = State::Top;
    }

    fn step(&mut self, byte: u8, out: &mut Vec<Piece>) {
        match self.state {
            State::Top => self.top(byte),
            State::Skip => {
                if self.at_line_start && !matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b'}' | b']' | b',') {
                    self.state = State::Top;
                    self.top(byte);
                }
            }
            State::Bare => {
                if byte == b'\n' {
                    self.emit(out);
                } else {
                    self.push(byte);
                }
            }
            State::InString { escaped } => {
                if byte == b'\n' {
                    let message = format!(
                        "the document that starts on line {} has a line break inside a string",
                        self.start_line
                    );
                    self.broken(LineErrorKind::InvalidJson, message, out);
                    self.state = State::Skip;
                    return;
                }
                self.push(byte);
                self.state = match (escaped, byte) {
                    (true, _) => State::InString { escaped: false },
                    (false, b'\\') => State::InString { escaped: true },
                    (false, b'"') => State::Open,
                    (false, _) => State::InString { escaped: false },
                };
            }
            State::Open => {
                if self.at_line_start && matches!(byte, b'{' | b'[') {
                    let message = format!(
                        "the document that starts on line {} is not complete where line {} starts a new one",
                        self.start_line, self.line
                    );
                    self.broken(LineErrorKind::InvalidJson, message, out);
                    self.top(byte);
                    return;
                }
                self.push(byte);
                match byte {
                    b'"' => self.state = State::InString { escaped: false },
                    b'{' | b'[' => {
                        self.depth += 1;
                        if self.depth > self.max_depth && self.overflow == Overflow::None {
                            self.overflow = Overflow::TooDeep;
                            self.buf = Vec::new();
                        }
                    }
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.emit(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A byte between documents.
    fn top(&mut self, byte: u8) {
        if matches!(byte, b' ' | b'\t' | b'\r' | b'\n') {
            return;
        }
        self.start_line = self.line;
        self.buf.clear();
        self.overflow = Overflow::None;
        self.depth = 0;
        self.state = if matches!(byte, b'{' | b'[') {
            self.depth = 1;
            State::Open
        } else {
            State::Bare
        };
        self.push(byte);
    }

    fn push(&mut self, byte: u8) {
        if self.overflow != Overflow::None {
            return;
        }
        if self.buf.len() >= self.max_bytes {
            self.overflow = Overflow::TooLong;
            self.buf = Vec::new();
            return;
        }
        self.buf.push(byte);
    }

    /// The current document is complete.
    fn emit(&mut self, out: &mut Vec<Piece>) {
        let line = Some(self.start_line);
        let piece = match self.overflow {
            Overflow::TooLong => Piece::Broken(LineError::new(
                LineErrorKind::LineTooLong,
                format!("the document is longer than {} bytes; it was skipped", self.max_bytes),
                line,
            )),
            Overflow::TooDeep => Piece::Broken(LineError::new(
                LineErrorKind::InvalidJson,
                format!("input is not valid JSON: nested deeper than {} levels", self.max_depth),
                line,
            )),
            Overflow::None => {
                let bytes = std::mem::take(&mut self.buf);
                let text = match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
                };
                let text = text.trim_end_matches('\r').to_owned();
                Piece::Document { text, line: self.start_line }
            }
        };
        out.push(piece);
        self.reset();
    }

    fn broken(&mut self, kind: LineErrorKind, message: String, out: &mut Vec<Piece>) {
        let piece = match self.overflow {
            // A document too long to keep is reported as such, however it ends.
            Overflow::TooLong => LineError::new(
                LineErrorKind::LineTooLong,
                format!("the document is longer than {} bytes; it was skipped", self.max_bytes),
                Some(self.start_line),
            ),
            _ => LineError::new(kind, format!("input is not valid JSON: {message}"), Some(self.start_line)),
        };
        out.push(Piece::Broken(piece));
        self.reset();
    }

    fn reset(&mut self) {
        self.state = State::Top;
        self.buf.clear();
        self.overflow = Overflow::None;
        self.depth = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece of a whole input at once.
    fn split_all(input: &[u8], max_bytes: usize) -> Vec<Piece> {
        let mut splitter = Splitter::new(max_bytes, MAX_DEPTH);
        let mut out = Vec::new();
        splitter.feed(input, &mut out);
        splitter.finish(&mut out);
        out
    }

    fn doc(text: &str, line: u64) -> Piece {
        Piece::Document { text: text.to_owned(), line }
    }

    fn kinds(pieces: &[Piece]) -> Vec<(Option<LineErrorKind>, u64)> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Document { line, .. } => (None, *line),
                Piece::Broken(err) => (Some(err.error.kind), err.line.unwrap_or(0)),
            })
            .collect()
    }

    /// Every way of cutting `input` into two reads gives the same pieces as one read.
    fn same_in_any_reads(input: &[u8], max: usize) -> Vec<Piece> {
        let whole = split_all(input, max);
        for cut in 0..=input.len() {
            let mut splitter = Splitter::new(max, MAX_DEPTH);
            let mut out = Vec::new();
            splitter.feed(&input[..cut], &mut out);
            splitter.feed(&input[cut..], &mut out);
            splitter.finish(&mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn one_per_line_pretty_and_several_on_a_line() {
        let input = b"{\"a\":1}\n{\n  \"b\": [\n    {\"c\": \"}\\\"{\"}\n  ]\n}\n{\"x\":1}{\"y\":2} {\"z\":[3]}\n";
        let got = same_in_any_reads(input, 1024);
        assert_eq!(
            got,
            vec![
                doc("{\"a\":1}", 1),
                doc("{\n  \"b\": [\n    {\"c\": \"}\\\"{\"}\n  ]\n}", 2),
                doc("{\"x\":1}", 7),
                doc("{\"y\":2}", 7),
                doc("{\"z\":[3]}", 7),
            ]
        );
    }

    #[test]
    fn crlf_blank_lines_and_bare_values() {
        let got = same_in_any_reads(b"\r\n\r\n{\"a\":1}\r\n42\r\nnot json\n  \n", 1024);
        assert_eq!(got, vec![doc("{\"a\":1}", 3), doc("42", 4), doc("not json", 5)]);
    }

    #[test]
    fn an_unfinished_document_ends_where_a_new_one_starts_in_column_one() {
        let got = same_in_any_reads(b"{\"good\":1}\n{\"actions\":\n[]\n{\"good\":2}\n", 1024);
        assert_eq!(
            kinds(&got),
            vec![(None, 1), (Some(LineErrorKind::InvalidJson), 2), (None, 3), (None, 4)],
            "{got:?}"
        );
        // Indented brackets are part of the open document.
        let got = split_all(b"{\"a\":\n  {\"b\":1}\n}\n", 1024);
        assert_eq!(got, vec![doc("{\"a\":\n  {\"b\":1}\n}", 1)]);
    }

    #[test]
    fn a_line_break_inside_a_string_breaks_the_document_once() {
        let got = same_in_any_reads(b"{\"task\": \"two\n   lines\", \"x\": 1}\n}\n{\"ok\":1}\n", 1024);
        assert_eq!(kinds(&got), vec![(Some(LineErrorKind::InvalidJson), 1), (None, 4)], "{got:?}");
    }

    #[test]
    fn end_of_input_inside_a_document_is_answered() {
        let got = split_all(b"{\"ok\":1}\n{\"actions\": [", 1024);
        assert_eq!(kinds(&got), vec![(None, 1), (Some(LineErrorKind::InvalidJson), 2)]);
        let got = split_all(b"{\"s\": \"open", 1024);
        assert_eq!(kinds(&got), vec![(Some(LineErrorKind::InvalidJson), 1)]);
        assert_eq!(split_all(b"tail without newline", 1024), vec![doc("tail without newline", 1)]);
    }

    #[test]
    fn bounds_on_size_and_depth_answer_once_and_go_on() {
        let long = format!("{{\"t\":\"{}\"}}\n{{\"ok\":1}}\n", "x".repeat(100));
        assert_eq!(kinds(&split_all(long.as_bytes(), 64)), vec![(Some(LineErrorKind::LineTooLong), 1), (None, 2)]);
        let long_bare = format!("{}\n{{\"ok\":1}}\n", "x".repeat(100));
        assert_eq!(kinds(&split_all(long_bare.as_bytes(), 64)), vec![(Some(LineErrorKind::LineTooLong), 1), (None, 2)]);
        let deep = format!("{}{}\n{{\"ok\":1}}", "[".repeat(5000), "]".repeat(5000));
        let got = split_all(deep.as_bytes(), 1 << 20);
        assert_eq!(kinds(&got), vec![(Some(LineErrorKind::InvalidJson), 1), (None, 2)], "{got:?}");
        let exactly = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(matches!(split_all(exactly.as_bytes(), 1 << 20).as_slice(), [Piece::Document { .. }]));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        assert_eq!(split_all(b"\xff\xfe\n", 64), vec![doc("\u{fffd}\u{fffd}", 1)]);
    }
}
