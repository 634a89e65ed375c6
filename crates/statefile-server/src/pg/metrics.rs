//! The PostgreSQL backend's figures for `/metrics`: the pool and the operations.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Failure;
use crate::metrics::Histogram;

#[derive(Debug, Default)]
pub struct PgMetrics {
    /// Counted by the pool's post-create hook.
    pub connections_opened: Arc<AtomicU64>,
    pool_wait: Histogram,
    transaction: Histogram,
    unavailable: AtomicU64,
    timeouts: AtomicU64,
    other_errors: AtomicU64,
}

impl PgMetrics {
    pub fn pool_wait(&self, d: Duration) {
        self.pool_wait.observe(d);
    }

    pub fn operation(&self, d: Duration, failed: Option<&Failure>) {
        self.transaction.observe(d);
        match failed {
            Some(Failure::Unavailable(_)) => &self.unavailable,
            Some(Failure::Timeout | Failure::LockTimeout) => &self.timeouts,
            Some(Failure::Internal(_)) => &self.other_errors,
            _ => return,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, s: &deadpool_postgres::Status, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP statefile_pg_pool_connections Database connections by state.\n\
             # TYPE statefile_pg_pool_connections gauge\n\
             statefile_pg_pool_connections{{state=\"idle\"}} {}\n\
             statefile_pg_pool_connections{{state=\"in_use\"}} {}\n\
             # HELP statefile_pg_pool_max_connections The pool's bound.\n\
             # TYPE statefile_pg_pool_max_connections gauge\n\
             statefile_pg_pool_max_connections {}\n\
             # HELP statefile_pg_pool_waiting Requests waiting for a connection.\n\
             # TYPE statefile_pg_pool_waiting gauge\n\
             statefile_pg_pool_waiting {}\n\
             # HELP statefile_pg_connections_opened_total Database connections made.\n\
             # TYPE statefile_pg_connections_opened_total counter\n\
             statefile_pg_connections_opened_total {}",
            s.available,
            s.size.saturating_sub(s.available),
            s.max_size,
            s.waiting,
            self.connections_opened.load(Ordering::Relaxed)
        );
        self.pool_wait.render(
            "statefile_pg_pool_wait_seconds",
            "Time to get a database connection from the pool.",
            out,
        );
        self.transaction.render(
            "statefile_pg_operation_seconds",
            "Time of one storage operation (its transaction, connection wait included).",
            out,
        );
        let _ = writeln!(
            out,
            "# HELP statefile_pg_errors_total Failed storage operations by cause.\n\
             # TYPE statefile_pg_errors_total counter\n\
             statefile_pg_errors_total{{cause=\"unavailable\"}} {}\n\
             statefile_pg_errors_total{{cause=\"timeout\"}} {}\n\
             statefile_pg_errors_total{{cause=\"other\"}} {}",
            self.unavailable.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            self.other_errors.load(Ordering::Relaxed)
        );
    }
}
