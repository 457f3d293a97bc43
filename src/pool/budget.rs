//! The daemon-wide budget (`--budget AMOUNT/PERIOD`, repeatable): rolling windows over the costs
//! the ledger has recorded (durable: a restart does not reset them), with admission control.
//!
//! Before a worker starts, its reservation (its `maxBudgetUsd`, else `--budget-estimate-usd`) is
//! checked against what every window has left after its charges and the reservations of the
//! workers running now; it then becomes the worker's `--max-budget-usd` cap. When the worker
//! ends, its real cost is charged and the reservation given back. A window without room:
//! policy `wait` keeps the action queued (FIFO: the ones behind it wait too) until charges age
//! out or a running worker gives back its reservation; policy `refuse` answers
//! `budget_exhausted` with `retryAfterMs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::store::Ledger;

/// One `--budget` window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub usd: f64,
    pub period: Duration,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}usd/{}", self.usd, humantime::format_duration(self.period))
    }
}

/// `5usd/hour`, `50usd/day`, `0.05usd/30m`, `2/1h`.
pub fn parse_window(text: &str) -> Result<Window, String> {
    let bad = || format!("{text:?} is not a budget: give AMOUNT/PERIOD, e.g. 5usd/hour, 50usd/day, 0.5usd/30m");
    let (amount, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let usd: f64 = amount.trim().trim_end_matches("usd").trim().parse().map_err(|_| bad())?;
    let period = match period.trim() {
        "minute" => Duration::from_secs(60),
        "hour" => Duration::from_secs(3600),
        "day" => Duration::from_secs(86_400),
        "week" => Duration::from_secs(7 * 86_400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if !(usd.is_finite() && usd > 0.0) || period.is_zero() {
        return Err(bad());
    }
    Ok(Window { usd, period })
}

/// What to do with an action that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    Wait,
    Refuse,
}

/// The budget's settings (`--budget`, `--budget-policy`, `--budget-estimate-usd`) and its ledger.
#[derive(Clone)]
pub struct BudgetSettings {
    pub windows: Vec<Window>,
    pub policy: Policy,
    pub estimate_usd: f64,
    pub ledger: Arc<dyn Ledger>,
}

impl std::fmt::Debug for BudgetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetSettings")
            .field("windows", &self.windows)
            .field("policy", &self.policy)
            .field("estimate_usd", &self.estimate_usd)
            .finish_non_exhaustive()
    }
}

/// Whether `want` fits in every window, given the charges (age, USD; any order) and what running
/// workers hold. `Err(Some(d))`: it fits once charges age out, after `d`; `Err(None)`: not before
/// a running worker gives its reservation back.
pub fn fits(windows: &[Window], charges: &[(Duration, f64)], reserved: f64, want: f64) -> Result<(), Option<Duration>> {
    let mut wait = Duration::ZERO;
    for window in windows {
        let mut inside: Vec<(Duration, f64)> =
            charges.iter().copied().filter(|(age, _)| *age < window.period).collect();
        let mut spent: f64 = inside.iter().map(|(_, usd)| usd).sum();
        if spent + reserved + want <= window.usd + 1e-9 {
            continue;
        }
        // Oldest first: the first to age out.
        inside.sort_by_key(|charge| std::cmp::Reverse(charge.0));
        let mut frees = None;
        for (age, usd) in inside {
            spent -= usd;
            if spent + reserved + want <= window.usd + 1e-9 {
                frees = Some(window.period - age);
                break;
            }
        }
        match frees {
            Some(after) => wait = wait.max(after),
            None => return Err(None),
        }
    }
    if wait.is_zero() { Ok(()) } else { Err(Some(wait)) }
}

/// The running budget.
pub struct Budget {
    settings: BudgetSettings,
    reserved: Mutex<f64>,
    released: Notify,
}

/// What one window has spent and has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStatus {
    pub window: Window,
    pub spent: f64,
    pub left: f64,
}

impl Budget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self { settings, reserved: Mutex::new(0.0), released: Notify::new() }
    }

    fn longest(&self) -> Duration {
        self.settings.windows.iter().map(|w| w.period).max().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.reserved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The reservation an action would ask for.
    pub fn wanted(&self, max_budget_usd: Option<f64>) -> f64 {
        max_budget_usd.unwrap_or(self.settings.estimate_usd)
    }

    /// Reserves `want`, waiting (policy `wait`) while no window has room. `Err(retry_after)`
    /// under policy `refuse`, or when a reservation can never fit (larger than a window).
    pub async fn reserve(&self, task_id: &str, want: f64) -> Result<(), Option<Duration>> {
        if self.settings.windows.iter().any(|w| want > w.usd) {
            return Err(None);
        }
        let mut logged = false;
        loop {
            let released = self.released.notified();
            let charges = match self.settings.ledger.charges_within(self.longest()).await {
                Ok(charges) => charges,
                Err(err) => {
                    // Without the record, nothing is known to be left: wait (or refuse) as if full.
                    warn!("the budget ledger cannot be read: {err}");
                    if self.settings.policy == Policy::Refuse {
                        return Err(Some(Duration::from_secs(1)));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let verdict = {
                let mut reserved = self.lock();
                let verdict = fits(&self.settings.windows, &charges, *reserved, want);
                if verdict.is_ok() {
                    *reserved += want;
                }
                verdict
            };
            let wait = match verdict {
                Ok(()) => return Ok(()),
                Err(wait) if self.settings.policy == Policy::Refuse => return Err(wait),
                Err(wait) => wait,
            };
            if !logged {
                info!(task_id, want, ?wait, "budget: the action waits for room in its window");
                logged = true;
            }
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600)).max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// Charges the real cost of a finished worker and gives its reservation back.
    /// Returns the windows' status after it.
    pub async fn settle(&self, task_id: &str, want: f64, cost: Option<f64>) -> Vec<WindowStatus> {
        if let Some(usd) = cost.filter(|usd| *usd > 0.0) {
            if let Err(err) = self.settings.ledger.charge(task_id, usd).await {
                warn!(task_id, usd, "the budget ledger cannot record a cost: {err}");
            }
        }
        {
            let mut reserved = self.lock();
            *reserved = (*reserved - want).max(0.0);
        }
        self.released.notify_waiters();
        let statuses = self.status().await;
        for status in &statuses {
            info!(
                window = %status.window,
                spent = format!("{:.4}", status.spent),
                left = format!("{:.4}", status.left),
                "budget"
            );
        }
        statuses
    }

    /// Spend and what is left, per window (reservations of running workers count as spent).
    pub async fn status(&self) -> Vec<WindowStatus> {
        let charges = self.settings.ledger.charges_within(self.longest()).await.unwrap_or_default();
        let reserved = *self.lock();
        self.settings
            .windows
            .iter()
            .map(|window| {
                let spent: f64 = charges.iter().filter(|(age, _)| *age < window.period).map(|(_, usd)| usd).sum();
                WindowStatus { window: *window, spent, left: (window.usd - spent - reserved).max(0.0) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("5usd/hour"), Ok(Window { usd: 5.0, period: HOUR }));
        assert_eq!(parse_window("50usd/day").map(|w| w.period), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_window("0.05usd/30m"), Ok(Window { usd: 0.05, period: Duration::from_secs(1800) }));
        assert_eq!(parse_window("2/1h").map(|w| w.usd), Ok(2.0));
        for bad in ["", "5usd", "usd/hour", "-1usd/hour", "0usd/hour", "5usd/0s", "5usd/fortnight"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("0.05usd/hour").unwrap().to_string(), "0.05usd/1h");
    }

    #[test]
    fn room_is_what_charges_and_reservations_leave() {
        let w = [Window { usd: 0.05, period: HOUR }];
        assert_eq!(fits(&w, &[], 0.0, 0.02), Ok(()));
        assert_eq!(fits(&w, &[], 0.04, 0.02), Err(None), "only a running worker's end can make room");
        let charges = [(Duration::from_secs(600), 0.02), (Duration::from_secs(60), 0.02)];
        assert_eq!(fits(&w, &charges, 0.0, 0.01), Ok(()));
        // The older charge ages out after 50 more minutes.
        assert_eq!(fits(&w, &charges, 0.0, 0.02), Err(Some(Duration::from_secs(3000))));
        assert_eq!(fits(&w, &charges, 0.0, 0.04), Err(Some(Duration::from_secs(3540))));
        // Every window must have room; the longest wait wins.
        let two = [Window { usd: 1.0, period: Duration::from_secs(120) }, Window { usd: 0.05, period: HOUR }];
        assert_eq!(fits(&two, &charges, 0.0, 0.02), Err(Some(Duration::from_secs(3000))));
        // Charges older than a window do not count in it.
        assert_eq!(fits(&[Window { usd: 0.02, period: Duration::from_secs(120) }], &charges, 0.0, 0.0), Ok(()));
    }
}
