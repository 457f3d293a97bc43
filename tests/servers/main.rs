//! Black-box tests of the servers the registry ships: the built-in Telegram server (against a fake
//! Bot API on 127.0.0.1), the bundled filesystem and fetch servers as the registry runs them, and
//! `mcp-workers check`. The pinned tools come from `scripts/setup.sh --tools-only`; a missing one
//! fails the test, it is never skipped.

mod bundled;
mod check;
mod fake_telegram;
mod support;
mod telegram;
