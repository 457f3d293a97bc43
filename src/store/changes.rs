//! Change subscriptions: how a store tells its callers that something may have changed, so that
//! no caller polls. The backend owns a [`ChangeFeed`] per kind of change and feeds it (its own
//! commits; other processes' commits however the backend learns of them: SQLite reads
//! `PRAGMA data_version`, a database can LISTEN). A change is a hint: re-query to find out.
//!
//! While nobody waits, a backend need not look for other processes' writes at all: [`Demand`]
//! counts the waiting [`Changes::changed`] calls and tells the backend when the first one starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// How many subscribers wait right now, shared by a backend's feeds.
pub struct Demand {
    waiting: AtomicUsize,
    on_first: Box<dyn Fn() + Send + Sync>,
}

impl Demand {
    /// `on_first` runs when the count goes from 0 to 1 (e.g. to wake a thread that then
    /// watches for other processes' writes while [`Demand::wanted`]).
    pub fn new(on_first: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { waiting: AtomicUsize::new(0), on_first: Box::new(on_first) })
    }

    /// Whether some subscriber waits for a change now.
    pub fn wanted(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

/// The backend's side of one subscription.
pub struct ChangeFeed {
    tx: watch::Sender<u64>,
    demand: Arc<Demand>,
}

impl ChangeFeed {
    pub fn new(demand: Arc<Demand>) -> Self {
        Self { tx: watch::Sender::new(0), demand }
    }

    /// Wakes every subscriber (those not waiting now wake at their next `changed`).
    pub fn notify(&self) {
        self.tx.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A subscription that sees changes from now on.
    pub fn subscribe(&self) -> Changes {
        Changes { rx: self.tx.subscribe(), demand: Arc::clone(&self.demand) }
    }
}

/// A subscriber's side: [`Changes::changed`] returns once something may have changed since the
/// subscription was made or `changed` last returned.
pub struct Changes {
    rx: watch::Receiver<u64>,
    demand: Arc<Demand>,
}

impl Changes {
    /// Waits for the next change. Never returns once the store is gone (select it with a
    /// shutdown signal). Cancel-safe.
    pub async fn changed(&mut self) {
        let _waiting = Waiting::enter(&self.demand);
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One waiting `changed` call, counted in [`Demand`] while it lives.
struct Waiting<'a>(&'a Demand);

impl<'a> Waiting<'a> {
    fn enter(demand: &'a Demand) -> Self {
        if demand.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
            (demand.on_first)();
        }
        Self(demand)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_lost_and_demand_is_counted() {
        let firsts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&firsts);
        let demand = Demand::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let feed = ChangeFeed::new(Arc::clone(&demand));
        let mut changes = feed.subscribe();
        feed.notify();
        assert!(!demand.wanted());
        changes.changed().await;
        assert_eq!(firsts.load(Ordering::SeqCst), 1);
        assert!(!demand.wanted(), "the wait is over");
        let waiter = tokio::spawn(async move { changes.changed().await });
        while !demand.wanted() {
            tokio::task::yield_now().await;
        }
        assert_eq!(firsts.load(Ordering::SeqCst), 2);
        feed.notify();
        waiter.await.expect("waiter");
        assert!(!demand.wanted());
    }
}
