//! Connections: accepted up to `--max-connections` (more wait in the kernel's backlog
//! until one closes), closed when a request head does not arrive within
//! `--header-timeout` (on a new connection, between requests on a kept-alive one, or
//! sent too slowly), with request heads bounded in size. The soft limit on open
//! descriptors is raised at start where the hard limit allows, and the connection limit
//! kept below it, with room for the files the storage operations open.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::head_errors::ProblemHeads;
use crate::{App, Config};

/// The largest request head (request line and headers) read; beyond it the HTTP layer
/// answers 431 (problem+json, written by the connection layer) and closes the connection.
pub const MAX_HEAD: usize = 64 * 1024;

use crate::limits::{FDS_PER_OPERATION, FDS_SPARE};

/// Raise the soft limit on open descriptors to the hard limit (capped at 2^20), where
/// allowed. Returns the soft limit now in force, if the system has one.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let cap = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if limit.current.is_some_and(|cur| cur < cap) {
        let raised = rustix::process::Rlimit {
            current: Some(cap),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Fit `max_connections` and `concurrency` to `descriptors` open files at most, so
/// that connections never take the descriptors storage operations need. Returns a
/// warning when they had to be lowered.
pub fn fit_to_descriptors(config: &mut Config, descriptors: u64) -> Option<String> {
    let fds = usize::try_from(descriptors).unwrap_or(usize::MAX);
    let needed = config
        .max_connections
        .saturating_add(config.concurrency.saturating_mul(FDS_PER_OPERATION))
        .saturating_add(FDS_SPARE);
    if fds >= needed {
        return None;
    }
    let available = fds.saturating_sub(FDS_SPARE).max(2 * FDS_PER_OPERATION);
    let connections = config.max_connections.min(available / 2).max(1);
    let concurrency = config
        .concurrency
        .min((available - connections) / FDS_PER_OPERATION)
        .max(1);
    let warning = format!(
        "the open-file limit is {descriptors}: serving at most {connections} connections \
         (asked {}) and {concurrency} storage operations at once (asked {}); raise it \
         (ulimit -n) to serve more",
        config.max_connections, config.concurrency
    );
    config.max_connections = connections;
    config.concurrency = concurrency;
    Some(warning)
}

/// Bind every address `addr` (`HOST:PORT`, a host name or an IP address) resolves
/// to: `localhost` is its IPv4 and its IPv6 loopback address when it has both. With
/// port 0 the first gets a free port, and the others the same one. An address that
/// cannot be bound (IPv6 turned off) is skipped if another one was bound.
///
/// # Errors
/// When the name does not resolve, or no address can be bound.
pub async fn bind(addr: &str) -> io::Result<Vec<TcpListener>> {
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {addr}: {e}")))?
        .collect();
    addrs.dedup();
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut first_error = None;
    for mut a in addrs {
        if let Some(l) = listeners.first() {
            a.set_port(l.local_addr()?.port());
        }
        match TcpListener::bind(a).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                first_error.get_or_insert(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {a}: {e}"),
                ));
            }
        }
    }
    if listeners.is_empty() {
        return Err(first_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            )
        }));
    }
    Ok(listeners)
}

/// Serve `app` on an already bound listener until `shutdown` resolves; then stop
/// accepting, close idle connections, and let requests in flight finish (writes on
/// blocking threads always complete).
///
/// # Errors
/// None today: accept errors are logged and retried. The `Result` leaves room for
/// listener setups that can fail.
pub async fn serve_on(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_all(vec![listener], app, shutdown).await
}

/// [`serve_on`] for several listeners, which share the connection limit.
///
/// # Errors
/// As [`serve_on`].
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(app.config.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout)
        .max_header_size(MAX_HEAD);
    let service = crate::app(app);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let accept = Accept {
                listener,
                slots: slots.clone(),
                http: http.clone(),
                service: service.clone(),
                graceful: graceful.clone(),
            };
            tokio::spawn(accept.run(stop.clone()))
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        graceful.shutdown().await;
    }
    Ok(())
}

/// One listener's accept loop.
struct Accept {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    http: hyper::server::conn::http1::Builder,
    service: axum::Router,
    graceful: Arc<GracefulShutdown>,
}

impl Accept {
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            // A connection slot first: at the limit, new connections wait in the backlog.
            let slot = tokio::select! {
                s = self.slots.clone().acquire_owned() => s,
                () = &mut stopped => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                () = &mut stopped => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors or similar: wait for some to be released.
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut stopped => break,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = self.http.serve_connection(
                TokioIo::new(ProblemHeads::new(stream)),
                TowerToHyperService::new(self.service.clone()),
            );
            let conn = self.graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_storage_descriptors() {
        let mut c = Config::new("/nonexistent");
        assert_eq!(fit_to_descriptors(&mut c, 1 << 20), None);
        assert_eq!((c.max_connections, c.concurrency), (1024, 256));
        let warning = fit_to_descriptors(&mut c, 1024).unwrap();
        assert!(warning.contains("ulimit -n"), "{warning}");
        let used = c.max_connections + c.concurrency * FDS_PER_OPERATION + FDS_SPARE;
        assert!(used <= 1024, "{c:?}");
        assert!(c.max_connections >= 400 && c.concurrency >= 64, "{c:?}");
        let mut tiny = Config::new("/nonexistent");
        fit_to_descriptors(&mut tiny, 10);
        assert!(tiny.max_connections >= 1 && tiny.concurrency >= 1);
    }
}
