//! Admission, concurrency limit and correlation of spawn_worker actions.
