//! The answer line of a tool call whose result is one plain text, written without serde: every
//! answer of the queue's tools on the direct lane (`transport.rs`).
//!
//! The queue's replies are the contract's pretty-printed JSON inside a JSON string, so escaping
//! that string was a fifth of a call's instructions in serde_json's byte-at-a-time loop. Here the
//! runs with nothing to escape are found eight bytes at a time. The bytes are exactly those
//! serde_json writes for the same message (the unit tests compare both).

use rmcp::model::{CallToolResult, ContentBlock, NumberOrString, RequestId, TextContent};

/// The response line (newline included) answering `id` with `result`, when the result is one
/// text with nothing else (no `_meta`, annotations, structured content, result type); else
/// `None`, and serde serialises it.
pub fn plain_text(result: &CallToolResult, id: &RequestId) -> Option<Vec<u8>> {
    // (A field rmcp may add to these types later is not written here: the unit tests compare
    // this line with serde's for every reply shape the queue makes.)
    let [ContentBlock::Text(TextContent { text, meta: None, annotations: None, .. })] = result.content.as_slice()
    else {
        return None;
    };
    if result.result_type.is_some() || result.structured_content.is_some() || result.meta.is_some() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 112);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    match id {
        NumberOrString::Number(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        NumberOrString::String(s) => push_str(&mut out, s),
    }
    out.extend_from_slice(br#","result":{"content":[{"type":"text","text":"#);
    push_str(&mut out, text);
    out.extend_from_slice(b"}]");
    match result.is_error {
        Some(true) => out.extend_from_slice(br#","isError":true"#),
        Some(false) => out.extend_from_slice(br#","isError":false"#),
        None => {}
    }
    out.extend_from_slice(b"}}\n");
    Some(out)
}

/// `s` as a JSON string, as serde_json writes one: `"` and `\` escaped, the control characters
/// as `\b \f \n \r \t` or `\u00xx`, every other character as it is.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// The inside of [`push_str`]: `s` escaped, without the quotes (a string written in parts).
pub fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut copied = 0;
    while let Some(at) = next_to_escape(bytes, copied) {
        let byte = bytes[at];
        let hex;
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => {
                hex = [b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
                &hex
            }
        };
        out.extend_from_slice(&bytes[copied..at]);
        out.extend_from_slice(escaped);
        copied = at + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// The index of the first byte at or after `from` that JSON escapes: eight bytes at a time,
/// then the rest one by one.
fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let flags = escape_flags(u64::from_le_bytes(word));
        if flags != 0 {
            // The lowest flag is exact (see `escape_flags`); little-endian: the first byte.
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').map(|at| i + at)
}

/// The high bit of each byte of the eight that may be below 0x20, `"` or `\`. Zero exactly when
/// none is, and the lowest set bit is always a byte that is (a false flag can only sit above a
/// true one, where a borrow ran on); bytes of multi-byte characters are 0x80 or above and never
/// count.
const fn escape_flags(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn has_zero(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space | has_zero(word ^ (ONES * b'"' as u64)) | has_zero(word ^ (ONES * b'\\' as u64))
}

#[cfg(test)]
mod tests {
    use rmcp::RoleServer;
    use rmcp::model::{CallToolResult, ContentBlock, NumberOrString, ServerResult};
    use rmcp::service::TxJsonRpcMessage;

    fn serde_str(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        super::push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut corpus: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        corpus.extend(["", "plain", "é, ü, 日本語, 🦀", "\u{7f}\u{80}\u{2028}\u{2029}\u{fffd}"].map(str::to_owned));
        let pretty = serde_json::to_string_pretty(&serde_json::json!({
            "worker_id": "worker_1_abc", "instructions": "say \"hi\" \\ then\tgo\r\n", "n": [1, 2]
        }))
        .unwrap();
        corpus.push(pretty);
        // Every special character at every offset of a word, among plain and multi-byte ones.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
            for at in 0..17 {
                let mut s: String = "abcdefghijklmnopq".chars().take(at).collect();
                s.push(special);
                s.push_str("rstuvwxyz0123456789");
                corpus.push(s);
            }
        }
        for s in &corpus {
            assert_eq!(ours(s), serde_str(s), "{s:?}");
        }
    }

    #[test]
    fn a_plain_text_reply_is_the_line_serde_writes_and_anything_more_is_left_to_serde() {
        let mut unflagged = CallToolResult::success(vec![ContentBlock::text("")]);
        unflagged.is_error = None;
        let results = [
            CallToolResult::success(vec![ContentBlock::text("{\n  \"worker_id\": \"w\"\n}")]),
            CallToolResult::error(vec![ContentBlock::text("bad \"input\"")]),
            unflagged,
        ];
        let ids = [NumberOrString::Number(0), NumberOrString::Number(-7), NumberOrString::String("a\"1".into())];
        for result in &results {
            let mut result = result.clone();
            let mut server_result = ServerResult::CallToolResult(result.clone());
            server_result.strip_result_type_for_legacy_peer();
            if let ServerResult::CallToolResult(stripped) = &server_result {
                result = stripped.clone();
            }
            for id in &ids {
                let message = TxJsonRpcMessage::<RoleServer>::response(server_result.clone(), id.clone());
                let mut expected = serde_json::to_vec(&message).unwrap();
                expected.push(b'\n');
                let line = super::plain_text(&result, id).expect("a plain text result");
                assert_eq!(String::from_utf8(line).unwrap(), String::from_utf8(expected).unwrap());
            }
        }
        let two = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        let structured = CallToolResult::structured(serde_json::json!({"a": 1}));
        let typed = CallToolResult::success(vec![ContentBlock::text("a")]);
        for other in [two, structured, typed] {
            assert!(super::plain_text(&other, &NumberOrString::Number(1)).is_none(), "{other:?}");
        }
    }
}
