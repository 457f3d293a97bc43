//! The contract of [`Ledger`]: charges kept durably, read back per rolling window.

use std::sync::Arc;
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

pub async fn handles_charging_at_once_share_one_ledger<H: Harness>(h: &H)
where
    H::Store: Ledger,
{
    // Two handles: two daemons on one store, each charging from many tasks at once.
    let clock = Clock::manual(1_000);
    let (one, two) = (Arc::new(h.open(&clock).await), Arc::new(h.open(&clock).await));
    let charges = (0..40).map(|i| {
        let ledger = if i % 2 == 0 { Arc::clone(&one) } else { Arc::clone(&two) };
        tokio::spawn(async move { ledger.charge(&format!("t{i}"), 0.25).await })
    });
    for charge in charges.collect::<Vec<_>>() {
        charge.await.unwrap().unwrap();
    }
    clock.set(1_500);
    for ledger in [&one, &two] {
        let seen = ledger.charges_within(ms(60_000)).await.unwrap();
        assert_eq!(seen.len(), 40, "each handle sees every charge");
        assert!(seen.iter().all(|(age, usd)| *age == ms(500) && (*usd - 0.25).abs() < 1e-12), "{seen:?}");
    }
    assert!(one.charges_within(ms(500)).await.unwrap().is_empty(), "a window shorter than their age");
}
