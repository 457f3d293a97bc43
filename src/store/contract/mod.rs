//! The store contract: one test suite, generic over [`QueueStore`] and [`Journal`], that every
//! backend passes. A backend's tests call [`store_contract!`] with a [`Harness`] that opens
//! handles on one fresh, private store (SQLite: a temporary file; a database: its own schema).
//! Two handles on one harness behave like two processes (or daemons) sharing the store.
//!
//! Every case reads time from a manual [`Clock`], so leases and expiries are exact.

pub mod journal;
pub mod ledger;
pub mod queue;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use super::{Clock, Journal, QueueStore};

/// Opens handles on one private store.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    type Store: QueueStore + Journal;
    /// A new handle on this harness's store (the same data every time), reading time from
    /// `clock`.
    async fn open(&self, clock: &Clock) -> Self::Store;
}

/// A duration of `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn prompts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// Awaits `f`, failing the test if it takes longer than a generous bound (never a sleep that
/// makes a test pass: only a guard against hanging).
pub async fn soon<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: did not happen within 10 s"),
    }
}

/// Runs every contract case against the harness that `$make` (an expression) builds.
macro_rules! store_contract {
    ($make:expr) => {
        $crate::store::contract::store_contract!(@cases $make; queue:
            claims_oldest_first_and_each_task_once,
            submit_checks_owner_and_state,
            expired_lease_is_requeued_then_dead_lettered,
            late_submit_by_last_owner_is_accepted_while_nobody_else_has_it,
            requeued_task_taken_by_another_worker_cannot_be_submitted_by_the_first,
            release_undoes_a_claim_without_counting_it,
            inactive_workers_are_removed_and_their_leases_released,
            a_claim_keeps_its_worker_active_through_the_lease,
            touch_and_claim_touches_then_claims_for_a_known_worker_only,
            data_survives_reopening,
            concurrent_claims_from_many_handles_never_share_a_task,
            concurrent_writes_on_one_handle_each_get_their_own_answer,
            task_changes_wake_on_enqueue_release_requeue_and_other_handles,
            retention_removes_only_finished_tasks_older_than_kept
        );
        $crate::store::contract::store_contract!(@cases $make; journal:
            lifecycle_recovery_and_resumable_events,
            a_failed_accept_records_nothing_and_spares_concurrent_writes,
            concurrent_events_get_increasing_gap_free_ids,
            event_changes_wake_on_own_and_other_handles_events,
            retention_removes_old_done_actions_and_old_events,
            requeue_puts_only_a_running_action_back_with_what_it_now_stores,
            a_failed_attempt_is_kept_in_the_stored_action_while_it_runs
        );
    };
    (@cases $make:expr; $module:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::contract::$module::$case(&$make).await;
            }
        )*
    };
}
pub(crate) use store_contract;

/// The [`super::Ledger`] cases, for a backend whose store implements it (SQLite and PostgreSQL
/// do; a separate macro, so a backend without a ledger still runs [`store_contract!`]).
macro_rules! ledger_contract {
    ($make:expr) => {
        $crate::store::contract::store_contract!(@cases $make; ledger:
            charges_are_kept_per_window_and_survive_reopening,
            handles_charging_at_once_share_one_ledger
        );
    };
}
pub(crate) use ledger_contract;
