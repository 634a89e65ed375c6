//! What went wrong in the PostgreSQL backend, classified by SQLSTATE, and turned into
//! the storage errors the routes map to answers.

use statefile::ErrorKind;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// What went wrong, before it becomes an answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A library-kind error (not found, conflict, invalid name, not storable...).
    Lib(statefile::Error),
    /// The database cannot be reached, went away, or is starting or stopping.
    Unavailable(String),
    /// The operation did not finish within its time.
    Timeout,
    /// Waiting for the document's row lock timed out.
    LockTimeout,
    /// Returned unchanged: the mutator's refusal (a patch that does not apply...), or a
    /// refusal phrased for the client.
    Store(StoreError),
    /// An idempotency key seen before with another request.
    KeyReused,
    /// Anything else: a bug or a database error nobody expects.
    Internal(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::from_db(&e)
    }
}

pub(crate) fn db_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

pub(crate) fn pool_reason(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => db_reason(b),
        deadpool_postgres::PoolError::Timeout(_) => "timed out connecting".to_string(),
        other => other.to_string(),
    }
}

impl Failure {
    pub(crate) fn from_db(e: &tokio_postgres::Error) -> Failure {
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection failed, closed or timed out.
            return Failure::Unavailable(db_reason(e));
        };
        let c = code.code();
        if *code == SqlState::LOCK_NOT_AVAILABLE {
            Failure::LockTimeout
        } else if *code == SqlState::QUERY_CANCELED {
            Failure::Timeout
        } else if *code == SqlState::DISK_FULL {
            Failure::Lib(statefile::Error::new(ErrorKind::NoSpace, db_reason(e)))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            Failure::Lib(statefile::Error::new(
                ErrorKind::PermissionDenied,
                db_reason(e),
            ))
        } else if c.starts_with("08") // connection exception
            || c.starts_with("57P") // shutting down, crashed, starting up
            || c.starts_with("53") // out of connections, memory
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION // a standby
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            Failure::Unavailable(db_reason(e))
        } else {
            Failure::Internal(db_reason(e))
        }
    }

    pub(crate) fn from_pool(e: &deadpool_postgres::PoolError) -> Failure {
        match e {
            deadpool_postgres::PoolError::Backend(b) => Failure::from_db(b),
            deadpool_postgres::PoolError::Timeout(_) => {
                Failure::Unavailable("no database connection within the connect timeout".into())
            }
            other => Failure::Unavailable(other.to_string()),
        }
    }

    /// For the log: the whole story.
    pub(crate) fn log_text(&self) -> String {
        match self {
            Failure::Lib(e) => e.to_string(),
            Failure::Unavailable(s) | Failure::Internal(s) => s.clone(),
            Failure::Timeout => "timed out".into(),
            Failure::LockTimeout => "lock timeout".into(),
            Failure::Store(m) => m.to_string(),
            Failure::KeyReused => "idempotency key reused".into(),
        }
    }

    /// As a storage error (details of database failures go to the log, not clients).
    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Failure::Lib(e) => e.into(),
            Failure::Store(m) => m,
            Failure::LockTimeout => StoreError::new(
                ErrorKind::LockTimeout,
                "waiting for the document's row lock timed out",
            ),
            Failure::Unavailable(why) => StoreError::unavailable(format!("database: {why}")),
            Failure::Timeout => {
                StoreError::unavailable("database: the operation did not finish in time")
            }
            Failure::KeyReused => StoreError::KeyReused,
            Failure::Internal(why) => StoreError::new(ErrorKind::Io, format!("database: {why}")),
        }
    }
}
