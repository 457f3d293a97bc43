//! The contract of [`Ledger`]: charges kept durably, read back per rolling window.

use std::time::Duration;

use super::{Harness, ms};
use crate::store::{Clock, Ledger};

pub async fn charges_are_kept_per_window_and_survive_reopening<H: Harness>(h: &H)
where
    H::Store: Ledger,
{
    let clock = Clock::manual(10_000);
    let ledger = h.open(&clock).await;
    assert!(ledger.charges_within(ms(60_000)).await.unwrap().is_empty());
    ledger.charge("a", 0.02).await.unwrap();
    clock.set(40_000);
    ledger.charge("b", 0.03).await.unwrap();
    clock.set(50_000);
    let all = ledger.charges_within(ms(60_000)).await.unwrap();
    assert_eq!(all, [(ms(40_000), 0.02), (ms(10_000), 0.03)], "oldest first, with their age");
    assert_eq!(ledger.charges_within(ms(20_000)).await.unwrap(), [(ms(10_000), 0.03)]);
    // Another handle (a restarted daemon) sees the same charges.
    drop(ledger);
    let again = h.open(&clock).await;
    clock.set(70_000);
    assert_eq!(again.charges_within(ms(60_000)).await.unwrap(), [(ms(30_000), 0.03)], "a charge ages out");
    assert_eq!(again.charges_within(Duration::from_secs(3600)).await.unwrap().len(), 2);
}
