//! Counters for `/metrics`, rendered in the Prometheus text format by hand (a handful of series
//! does not need a metrics crate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::protocol::WorkerResult;
use crate::store::Counts;

/// Upper bounds of the worker-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

#[derive(Debug, Default)]
struct Inner {
    /// Results by kind (`success` for successes).
    results: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
    cost_usd: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub running: usize,
    pub waiting: usize,
    pub queue: Option<Counts>,
    /// The rate-limit breaker: whether starts are paused now, and how many pauses there were.
    pub dispatch: (bool, u64),
    /// The daemon-wide budget's windows: spent and left (empty without `--budget`).
    pub budget: Vec<crate::pool::budget::WindowStatus>,
    /// Daemons sharing the journal: the cluster's nodes and actions (PostgreSQL only).
    pub cluster: Option<crate::store::ClusterStatus>,
}

impl Metrics {
    pub fn observe(&self, result: &WorkerResult) {
        let mut m = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kind = result.error.as_ref().map_or("success", |e| e.kind.as_str());
        *m.results.entry(kind).or_default() += 1;
        // Only workers that ran have a duration worth a histogram.
        if result.duration > 0 {
            let seconds = result.duration as f64 / 1000.0;
            for (bucket, bound) in m.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            m.count += 1;
            m.sum_seconds += seconds;
        }
        m.cost_usd += result.cost_usd.unwrap_or(0.0);
    }

    pub fn render(&self, gauges: Gauges) -> String {
        let m = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        };
        gauge("mcp_workers_workers_running", "Claude Code workers running now.", gauges.running.to_string());
        gauge("mcp_workers_actions_waiting", "Accepted actions waiting for a worker slot.", gauges.waiting.to_string());
        let (paused, pauses) = gauges.dispatch;
        gauge(
            "mcp_workers_dispatch_paused",
            "1 while the rate-limit breaker holds new workers back.",
            u8::from(paused).to_string(),
        );
        if !gauges.budget.is_empty() {
            let _ = write!(
                out,
                "# HELP mcp_workers_budget_spent_usd Spent in the budget window (running workers' reservations not included).\n# TYPE mcp_workers_budget_spent_usd gauge\n"
            );
            for status in &gauges.budget {
                let _ = writeln!(out, "mcp_workers_budget_spent_usd{{window=\"{}\"}} {}", status.window, status.spent);
            }
            let _ = write!(
                out,
                "# HELP mcp_workers_budget_left_usd Left in the budget window after charges and reservations.\n# TYPE mcp_workers_budget_left_usd gauge\n"
            );
            for status in &gauges.budget {
                let _ = writeln!(out, "mcp_workers_budget_left_usd{{window=\"{}\"}} {}", status.window, status.left);
            }
        }
        let _ = write!(
            out,
            "# HELP mcp_workers_dispatch_pauses_total Pauses of the rate-limit breaker.\n# TYPE mcp_workers_dispatch_pauses_total counter\nmcp_workers_dispatch_pauses_total {pauses}\n"
        );
        let _ = write!(
            out,
            "# HELP mcp_workers_results_total Worker results by kind.\n# TYPE mcp_workers_results_total counter\n"
        );
        for (kind, n) in &m.results {
            let _ = writeln!(out, "mcp_workers_results_total{{kind=\"{kind}\"}} {n}");
        }
        let name = "mcp_workers_worker_duration_seconds";
        let _ = write!(out, "# HELP {name} How long workers ran.\n# TYPE {name} histogram\n");
        for (bound, n) in BUCKETS.iter().zip(m.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            m.count, m.sum_seconds, m.count
        );
        let _ = write!(
            out,
            "# HELP mcp_workers_cost_usd_total Cost reported by the CLI.\n# TYPE mcp_workers_cost_usd_total counter\nmcp_workers_cost_usd_total {}\n",
            m.cost_usd
        );
        if let Some(q) = gauges.queue {
            let name = "mcp_workers_queue_tasks";
            let _ = write!(out, "# HELP {name} Polling-queue tasks by state.\n# TYPE {name} gauge\n");
            for (state, n) in [("queued", q.queued), ("leased", q.leased), ("done", q.done), ("dead", q.dead)] {
                let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
            }
            let _ = write!(
                out,
                "# HELP mcp_workers_queue_workers Registered polling workers.\n# TYPE mcp_workers_queue_workers gauge\nmcp_workers_queue_workers {}\n",
                q.workers
            );
        }
        if let Some(c) = gauges.cluster {
            let name = "mcp_workers_cluster_actions";
            let _ = write!(
                out,
                "# HELP {name} Unfinished actions of every daemon on the journal, by state.\n# TYPE {name} gauge\n"
            );
            for (state, n) in [("unclaimed", c.unclaimed), ("claimed", c.claimed), ("running", c.running)] {
                let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
            }
            let _ = write!(
                out,
                "# HELP mcp_workers_cluster_nodes Daemons alive on the journal.\n# TYPE mcp_workers_cluster_nodes gauge\nmcp_workers_cluster_nodes {}\n",
                c.nodes_alive
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorKind, Origin, WorkerError};

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        let mut ok = WorkerResult::failure("a", Origin::default(), WorkerError::new(ErrorKind::Timeout, "x", true));
        ok.success = true;
        ok.error = None;
        ok.duration = 1500;
        ok.cost_usd = Some(0.25);
        metrics.observe(&ok);
        metrics.observe(&WorkerResult::failure(
            "b",
            Origin::default(),
            WorkerError::new(ErrorKind::Timeout, "x", true),
        ));
        let text = metrics.render(Gauges {
            running: 2,
            waiting: 1,
            queue: Some(Counts { queued: 3, ..Counts::default() }),
            dispatch: (true, 4),
            budget: vec![crate::pool::budget::WindowStatus {
                window: crate::pool::budget::Window { usd: 5.0, period: std::time::Duration::from_secs(3600) },
                spent: 1.5,
                left: 3.0,
            }],
            cluster: Some(crate::store::ClusterStatus { nodes_alive: 2, unclaimed: 5, claimed: 1, running: 3 }),
        });
        for line in [
            "mcp_workers_workers_running 2",
            "mcp_workers_actions_waiting 1",
            "mcp_workers_dispatch_paused 1",
            "mcp_workers_dispatch_pauses_total 4",
            "mcp_workers_budget_spent_usd{window=\"5usd/1h\"} 1.5",
            "mcp_workers_budget_left_usd{window=\"5usd/1h\"} 3",
            "mcp_workers_results_total{kind=\"success\"} 1",
            "mcp_workers_results_total{kind=\"timeout\"} 1",
            "mcp_workers_worker_duration_seconds_bucket{le=\"1\"} 0",
            "mcp_workers_worker_duration_seconds_bucket{le=\"2\"} 1",
            "mcp_workers_worker_duration_seconds_count 1",
            "mcp_workers_cost_usd_total 0.25",
            "mcp_workers_queue_tasks{state=\"queued\"} 3",
            "mcp_workers_cluster_actions{state=\"unclaimed\"} 5",
            "mcp_workers_cluster_nodes 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
    }
}
