//! Building the app for tests, and a minimal HTTP/1.1 client for real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use statefile_server::{App, Config};
use tower::ServiceExt;

#[path = "../../../statefile/tests/common/mount.rs"]
pub mod mount;
#[path = "../../../statefile/tests/common/skip.rs"]
pub mod skip;

pub fn app_in(dir: &std::path::Path) -> Arc<App> {
    App::open(Config::new(dir)).unwrap()
}

pub fn app_with(config: Config) -> Arc<App> {
    App::open(config).unwrap()
}

/// The storage an API test runs against: the suite runs once per backend, so every
/// status code and header is checked on both.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A directory (the default backend).
    File,
    /// A fresh schema in the PostgreSQL database at this URL.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend when `STATEFILE_TEST_PG_URL` names a database (test.d's
    /// 40-postgres.sh starts one and sets it). Without it the test says it skipped,
    /// unless `STATEFILE_TEST_PG_REQUIRED` is set, when it fails.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("STATEFILE_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var_os("STATEFILE_TEST_PG_REQUIRED").is_some() => {
                panic!("STATEFILE_TEST_PG_REQUIRED is set but STATEFILE_TEST_PG_URL is not")
            }
            _ => {
                println!(
                    "skipping the PostgreSQL variant: STATEFILE_TEST_PG_URL is not set (./test postgres sets it)"
                );
                None
            }
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self, Backend::File)
    }

    /// The app over this backend, serving `dir` (the file backend's directory).
    pub async fn app_in(&self, dir: &std::path::Path) -> Arc<App> {
        self.app_with(Config::new(dir)).await
    }

    /// [`Backend::app_with`] from a test that is not async.
    pub fn app_blocking(&self, config: Config) -> Arc<App> {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(self.app_with(config))
    }

    /// The app over this backend with `config` (its root is the file backend's).
    pub async fn app_with(&self, config: Config) -> Arc<App> {
        match self {
            Backend::File => app_with(config),
            Backend::Postgres(url) => {
                let url = fresh_schema(url).await;
                let opts =
                    statefile_server::pg::PgOptions::new(url).with_library_options(&config.options);
                let store =
                    tokio::task::spawn_blocking(move || statefile_server::pg::PgStore::open(opts))
                        .await
                        .unwrap()
                        .unwrap();
                App::new(config, Arc::new(store))
            }
        }
    }
}

/// A new empty schema in the database at `url`; returns a URL whose connections use it,
/// so tests running at once never see each other's documents.
pub async fn fresh_schema(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let schema: String = format!(
        "t_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Run each named API test (an `async fn(Backend)`) once per backend, as
/// `name::file` and `name::postgres`.
#[macro_export]
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn file() {
                super::$test($crate::common::Backend::File).await;
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(b) = $crate::common::Backend::postgres() {
                    super::$test(b).await;
                }
            }
        }
    )*};
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// Assert an RFC 9457 problem with this status and type slug.
    pub fn problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        let p = self.json();
        assert_eq!(p["type"], format!("urn:statefile:problem:{slug}"), "{p}");
        assert_eq!(p["status"], status);
        assert!(p["title"].is_string() && p["detail"].is_string());
        assert_eq!(
            p["request_id"].as_str(),
            self.header("x-request-id").as_deref(),
            "the body and header carry the same request id"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(!detail.contains("/tmp"), "no absolute path in {detail}");
    }
}

/// One request through the router, no socket.
pub async fn call(
    app: &Arc<App>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = statefile_server::app(app.clone())
        .oneshot(b.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// (status, headers with lowercase names, body).
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        Conn {
            reader: BufReader::new(s),
        }
    }

    /// The connection itself, e.g. to see when the server closes it.
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    /// Send a request; returns (status, headers lowercased, body).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut hs = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                hs.push((k, v));
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, hs, body))
    }
}

pub fn header(hs: &[(String, String)], name: &str) -> Option<String> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// A server on 127.0.0.1:0 in its own runtime; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        Server::serve(App::open(config).unwrap())
    }

    /// Serve `app` (any backend) on 127.0.0.1:0 in its own runtime.
    pub fn serve(app: Arc<App>) -> Server {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // A backlog of 2048 (std's default is 128), as a burst of 1,000 connects
                // needs: the kernel would otherwise drop some of them.
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let listener = socket.listen(2048).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                statefile_server::serve_on(listener, app, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.thread.take().map(std::thread::JoinHandle::join);
    }
}
