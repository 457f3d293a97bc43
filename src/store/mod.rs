//! The durable store: tasks, leases, workers, results (issue 3). SQLite by default.
