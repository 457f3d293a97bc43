//! Reading lines with a length bound, for untrusted input (stdin) and child output alike.
//!
//! A line longer than the bound is skipped to its newline without being buffered, reported once,
//! and reading goes on (unlike `tokio_util`'s `LinesCodec`, whose stream ends at the first error).
//! Bytes that are not UTF-8 are replaced, never fatal.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line, or the news that one was too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(String),
    TooLong,
}

pub struct BoundedLines<R> {
    reader: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(reader: R, max: usize) -> Self {
        Self { reader, max, buf: Vec::new() }
    }

    /// The next line without its `\n` (and `\r`), `None` at end of input. A last line without a
    /// newline counts.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if too_long {
                    return Ok(Some(Line::TooLong));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.finish()));
            }
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > self.max {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(found);
            self.reader.consume(used);
            if found {
                return Ok(Some(if too_long { Line::TooLong } else { self.finish() }));
            }
        }
    }

    fn finish(&mut self) -> Line {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Line::Text(String::from_utf8_lossy(&self.buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer so lines cross many reads.
        let reader = tokio::io::BufReader::with_capacity(4, input);
        let mut lines = BoundedLines::new(reader, max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[tokio::test]
    async fn lines_and_bounds() {
        assert_eq!(all(b"", 8).await, vec![]);
        assert_eq!(all(b"a\nbb\r\n\nlast", 8).await, vec![text("a"), text("bb"), text(""), text("last")]);
        assert_eq!(all(b"12345678\n123456789\nok\n", 8).await, vec![text("12345678"), Line::TooLong, text("ok")]);
        assert_eq!(all(b"123456789", 8).await, vec![Line::TooLong]);
        assert_eq!(all(b"\xff\xfe\n", 8).await, vec![text("\u{fffd}\u{fffd}")]);
    }
}
