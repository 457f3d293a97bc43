//! Where a backend reads "now" from. Leases, heartbeats and expiries are measured on one clock:
//! the backend's, so that callers on different machines never compare their own clocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Epoch milliseconds.
pub type Millis = i64;

/// The current wall-clock time in epoch milliseconds.
pub fn now_ms() -> Millis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A backend's clock: the system's, or a manual one that tests move.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock that reads `start` until moved.
    pub fn manual(start: Millis) -> Self {
        Self::Manual(Arc::new(AtomicI64::new(start)))
    }

    pub fn now(&self) -> Millis {
        match self {
            Self::System => now_ms(),
            Self::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, to: Millis) {
        if let Self::Manual(t) = self {
            t.store(to, Ordering::SeqCst);
        }
    }
}
