//! The connection string, as libpq reads it: a `postgres://` URL or `key=value` pairs,
//! with libpq's TLS settings, which the client library does not know, taken out here
//! and honoured with rustls:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `allow`, `prefer` (the default) | if the server offers it | no |
//! | `require` | yes | no; against the CA when `sslrootcert` is given (or `~/.postgresql/root.crt` exists), as libpq |
//! | `verify-ca` | yes | against the CA |
//! | `verify-full` | yes | against the CA, and for the host name connected to |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the system's trusted
//! roots (which then implies `verify-full` and refuses weaker modes, as libpq 16 does);
//! without it, `verify-ca` and `verify-full` use `~/.postgresql/root.crt`. `sslcert` and
//! `sslkey` (PEM, unencrypted) are a client certificate. Messages never repeat the
//! connection string: it may hold a password.
//!
//! What the string leaves out comes, as with libpq, from the environment: `PGHOST`,
//! `PGHOSTADDR`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGOPTIONS`,
//! `PGAPPNAME`, `PGCONNECT_TIMEOUT`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`,
//! `PGSSLKEY`; then a password from the password file (`PGPASSFILE`, or `~/.pgpass`,
//! used only when no one but its owner may read it); then libpq's defaults (the
//! operating system's user name, a Unix socket in `/var/run/postgresql` or `/tmp` where
//! one is listening, else `localhost`). So `postgres://` alone takes everything from
//! the environment.

use std::path::Path;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS settings this module takes out of a connection string.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(
                    "sslmode must be disable, allow, prefer, require, verify-ca or verify-full"
                        .to_string(),
                );
            }
        })
    }

    /// As `sslmode=` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed connection string: the client's settings, and how to make its TLS
/// connections.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub tls: MakeRustlsConnect,
}

/// Parse `s` (either form), and load the certificates its TLS settings name.
///
/// # Errors
/// What is wrong, without repeating `s`.
pub(crate) fn parse(s: &str) -> Result<Target, String> {
    parse_with(s, &|k| std::env::var(k).ok())
}

/// [`parse`], with `env` for the environment.
fn parse_with(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Target, String> {
    let (mut rest, mut tls) = if let Some(body) = url_body(s) {
        split_url(s, body)?
    } else {
        split_pairs(s)?
    };
    // The client library gives a URL's host without a port 5432; libpq takes PGPORT.
    if let Some(ports) = env("PGPORT").filter(|p| !p.is_empty())
        && let Some(with_ports) = url_with_ports(&rest, &check_ports(&ports)?)
    {
        rest = with_ports;
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!(
            "not a PostgreSQL connection string (postgres://USER@HOST:PORT/DB, or host=HOST \
             dbname=DB ...): {e}"
        )
    })?;
    from_environment(&mut config, &mut tls, env)?;
    let get = |k: &str| {
        tls.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let rootcert = get("sslrootcert").filter(|v| !v.is_empty());
    let system = rootcert == Some("system");
    let mode = match get("sslmode") {
        Some(m) => SslMode::parse(m)?,
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full, not {} (trusting the system's \
             roots without checking the host name proves nothing)",
            mode.as_str()
        ));
    }
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let default_root = std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"));
    let roots = match rootcert {
        Some("system") => Some(system_roots()?),
        Some(file) => Some(file_roots(Path::new(file))?),
        None => match &default_root {
            Some(f) if mode != SslMode::Disable && f.is_file() => Some(file_roots(f)?),
            _ => None,
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs the CA that signed the server's certificate: \
                 sslrootcert=FILE (PEM), or sslrootcert=system for the system's trusted roots \
                 ({} does not exist)",
                mode.as_str(),
                default_root.map_or_else(
                    || "~/.postgresql/root.crt".to_string(),
                    |p| p.display().to_string()
                )
            ));
        }
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("cannot use the CA certificates: {e}"))?
        }
        (SslMode::VerifyCa | SslMode::Require, Some(roots)) => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("cannot use the CA certificates: {e}"))?,
        )),
        _ => Arc::new(Unchecked(provider.clone())),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = match (get("sslcert"), get("sslkey")) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read the client certificate sslcert={cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("sslcert={cert} holds no PEM certificate"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!("cannot read the client key sslkey={key} (PEM, unencrypted): {e}")
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cannot use the client certificate: {e}"))?
        }
        _ => return Err("sslcert and sslkey go together: give both or neither".to_string()),
    };
    Ok(Target {
        config,
        mode,
        tls: MakeRustlsConnect::new(client),
    })
}

/// A libpq environment variable for a setting the connection string may leave out: its
/// name, whether the string gave the setting, and how to take it from the variable's
/// (non-empty) value.
type FromEnv = (
    &'static str,
    fn(&tokio_postgres::Config) -> bool,
    fn(&mut tokio_postgres::Config, &str) -> Result<(), String>,
);

/// The settings [`from_environment`] takes from libpq's variables, in this order (TLS
/// settings apart: they are not `tokio-postgres`'s).
const FROM_ENV: [FromEnv; 9] = [
    (
        "PGHOST",
        |c| !c.get_hosts().is_empty(),
        |c, v| {
            for h in v.split(',') {
                c.host(h);
            }
            Ok(())
        },
    ),
    (
        "PGHOSTADDR",
        |c| !c.get_hostaddrs().is_empty(),
        |c, v| {
            for a in v.split(',') {
                c.hostaddr(
                    a.trim()
                        .parse()
                        .map_err(|_| format!("PGHOSTADDR: {a:?} is not an IP address"))?,
                );
            }
            Ok(())
        },
    ),
    (
        "PGPORT",
        |c| !c.get_ports().is_empty(),
        |c, v| {
            for p in check_ports(v)? {
                c.port(p);
            }
            Ok(())
        },
    ),
    (
        "PGUSER",
        |c| c.get_user().is_some(),
        |c, v| {
            c.user(v);
            Ok(())
        },
    ),
    (
        "PGPASSWORD",
        |c| c.get_password().is_some(),
        |c, v| {
            c.password(v);
            Ok(())
        },
    ),
    (
        "PGDATABASE",
        |c| c.get_dbname().is_some(),
        |c, v| {
            c.dbname(v);
            Ok(())
        },
    ),
    (
        "PGOPTIONS",
        |c| c.get_options().is_some(),
        |c, v| {
            c.options(v);
            Ok(())
        },
    ),
    (
        "PGAPPNAME",
        |c| c.get_application_name().is_some(),
        |c, v| {
            c.application_name(v);
            Ok(())
        },
    ),
    (
        "PGCONNECT_TIMEOUT",
        |c| c.get_connect_timeout().is_some(),
        |c, v| {
            let secs: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("PGCONNECT_TIMEOUT: {v:?} is not a number of seconds"))?;
            // As libpq: 0 is no limit (the store's own then applies), and at least 2 s.
            if secs > 0 {
                c.connect_timeout(std::time::Duration::from_secs(secs.max(2)));
            }
            Ok(())
        },
    ),
];

/// Fill what the connection string left out from libpq's environment variables, the
/// password file and libpq's defaults. The TLS settings from the environment go first
/// in `tls`, so the string's own (found last) win.
fn from_environment(
    config: &mut tokio_postgres::Config,
    tls: &mut Vec<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    for (name, given, take) in FROM_ENV {
        if !given(config)
            && let Some(v) = var(name)
        {
            take(config, &v)?;
        }
    }
    let mut from_env = Vec::new();
    for (key, var_name) in [
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
    ] {
        if !tls.iter().any(|(k, _)| k == key)
            && let Some(v) = var(var_name)
        {
            from_env.push((key.to_string(), v));
        }
    }
    tls.splice(0..0, from_env);
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let socket = ["/var/run/postgresql", "/tmp"]
            .into_iter()
            .find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists());
        config.host(socket.unwrap_or("localhost"));
    }
    if config.get_password().is_none() {
        let file = var("PGPASSFILE")
            .map(std::path::PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".pgpass")));
        if let Some(file) = file
            && let Some(password) = password_from_file(&file, config, env)
        {
            config.password(password);
        }
    }
    Ok(())
}

/// The password for `config`'s first host, port, database and user from the password
/// file at `path` (`host:port:database:user:password` lines, `*` for any, `\:` and
/// `\\` escaped; the first match wins), as libpq reads it. `None` when there is no
/// file, no match, or when others than its owner may read it (libpq ignores it then).
fn password_from_file(
    path: &Path,
    config: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        if meta.is_file() {
            tracing::warn!(
                file = %path.display(),
                "the password file is readable by others than its owner: not used"
            );
        }
        return None;
    }
    let mut text = String::new();
    // Bounded: a password file is a few lines.
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        // A socket in the default directories is `localhost`, as libpq says.
        Some(tokio_postgres::config::Host::Unix(p))
            if p == Path::new("/var/run/postgresql") || p == Path::new("/tmp") =>
        {
            "localhost".to_string()
        }
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = match config.get_user() {
        Some(u) => u.to_string(),
        None => env("USER").or_else(|| env("LOGNAME"))?,
    };
    let db = config
        .get_dbname()
        .map_or_else(|| user.clone(), str::to_string);
    let want = [host.as_str(), port.as_str(), db.as_str(), user.as_str()];
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() == 5
            && fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields.pop().unwrap_or_default());
        }
    }
    None
}

/// Whether `s` looks like a connection string rather than a directory: a
/// `postgres://` URL, or `key=value` pairs.
pub fn is_connection_string(s: &str) -> bool {
    url_body(s).is_some()
        || s.trim_start().split_once('=').is_some_and(|(k, _)| {
            let k = k.trim();
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

/// The connection string without its password, `postgres://user@host:port/dbname`,
/// for messages and logs; if it does not parse, a placeholder.
pub fn redacted(s: &str) -> String {
    let rest = match url_body(s) {
        Some(body) => split_url(s, body).map(|(r, _)| r),
        None => split_pairs(s).map(|(r, _)| r),
    };
    rest.ok()
        .and_then(|r| r.parse::<tokio_postgres::Config>().ok())
        .map_or_else(
            || "(a connection string that does not parse)".to_string(),
            |c| describe(&c),
        )
}

/// `postgres://user@host:port/dbname`: what a connection reaches, without the password.
pub fn describe(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

/// `PGPORT`'s ports (one, or one per host).
fn check_ports(ports: &str) -> Result<Vec<u16>, String> {
    ports
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("PGPORT: {p:?} is not a port number"))
        })
        .collect()
}

/// `url` with `ports` after its hosts, if it names hosts and none has a port; `None`
/// otherwise.
fn url_with_ports(url: &str, ports: &[u16]) -> Option<String> {
    let body = url_body(url)?;
    let start = url.len() - body.len();
    // Where the client library looks for the credentials and the host.
    let host_start = start + body.find('@').map_or(0, |i| i + 1);
    let host_end = url[host_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| host_start + i);
    let hosts = &url[host_start..host_end];
    let has_port = |h: &str| match h.rfind(']') {
        Some(i) => h[i..].contains(':'),
        None => h.contains(':'),
    };
    if hosts.is_empty() || hosts.split(',').any(has_port) {
        return None;
    }
    let with: Vec<String> = hosts
        .split(',')
        .enumerate()
        .map(|(i, h)| format!("{h}:{}", ports[i.min(ports.len() - 1)]))
        .collect();
    Some(format!(
        "{}{}{}",
        &url[..host_start],
        with.join(","),
        &url[host_end..]
    ))
}

fn url_body(s: &str) -> Option<&str> {
    s.strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
}

/// The URL without the TLS parameters, and those (decoded). The query starts at the
/// first `?` after the credentials, where the client library looks for it.
fn split_url(s: &str, body: &str) -> Result<(String, Vec<(String, String)>), String> {
    let start = s.len() - body.len();
    let creds_end = body.find('@').map_or(0, |i| i + 1);
    let Some(q) = body[creds_end..].find('?').map(|i| start + creds_end + i) else {
        return Ok((s.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in s[q + 1..].split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, decode(v)?));
        } else {
            kept.push(pair);
        }
    }
    let mut rest = s[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, tls))
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a URL parameter is not UTF-8 once percent-decoded".to_string())
}

/// `key=value` pairs (values quoted with `'...'` or not, `\` escaping the next
/// character, as libpq reads them): the pairs other than the TLS settings, written out
/// again, and the TLS settings.
fn split_pairs(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut it = s.chars().peekable();
    let mut rest = String::new();
    let mut tls = Vec::new();
    let malformed = |why: &str| {
        format!(
            "not a PostgreSQL connection string (postgres://USER@HOST:PORT/DB, or host=HOST \
             dbname=DB ...): {why}"
        )
    };
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(malformed("expected key=value"));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(malformed("a quoted value is not closed")),
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            rest.push_str(&key);
            rest.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    rest.push('\\');
                }
                rest.push(c);
            }
            rest.push_str("' ");
        }
    }
    Ok((rest, tls))
}

fn file_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {} holds no usable PEM certificate",
            path.display()
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "sslrootcert=system: no trusted roots found on this system{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        ));
    }
    Ok(roots)
}

/// `verify-ca` (and `require` with a CA): the chain must lead to a trusted root; the
/// name in the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: encrypted, the certificate not checked (the
/// handshake's signatures still are).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, Vec<(String, String)>) {
        match url_body(s) {
            Some(b) => split_url(s, b).unwrap(),
            None => split_pairs(s).unwrap(),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tls_settings_are_taken_out_of_a_url_and_the_rest_kept() {
        let (rest, tls) = split(
            "postgres://u:p%3Fw@h:1/db?sslmode=verify-full&application_name=a%20b&sslrootcert=%2Ftmp%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p%3Fw@h:1/db?application_name=a%20b");
        assert_eq!(
            tls,
            pairs(&[("sslmode", "verify-full"), ("sslrootcert", "/tmp/ca.pem")])
        );
        assert_eq!(
            split("postgres://h/db?sslmode=require").0,
            "postgres://h/db"
        );
        assert_eq!(split("postgresql://h/db").0, "postgresql://h/db");
        // A `?` in the password is the password's.
        assert_eq!(split("postgres://u:a?b@h/db").0, "postgres://u:a?b@h/db");
    }

    #[test]
    fn tls_settings_are_taken_out_of_key_value_pairs_and_the_rest_kept() {
        let (rest, tls) = split(
            r" host=h  dbname = 'my db' password='it\'s' sslmode=require sslrootcert='/a b/c.pem' user=x\ y",
        );
        assert_eq!(
            tls,
            pairs(&[("sslmode", "require"), ("sslrootcert", "/a b/c.pem")])
        );
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_dbname(), Some("my db"));
        assert_eq!(c.get_user(), Some("x y"));
        assert_eq!(c.get_password(), Some(&b"it's"[..]));
        for bad in ["host", "host=h x", "host='h"] {
            assert!(split_pairs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn which_strings_are_connection_strings() {
        for yes in [
            "postgres://h/db",
            "postgresql://u@h",
            "host=h dbname=d",
            " dbname = d",
        ] {
            assert!(is_connection_string(yes), "{yes}");
        }
        for no in ["./data", "/srv/a=b", "data", "", "mysql://x", "A=b"] {
            assert!(!is_connection_string(no), "{no}");
        }
    }

    #[test]
    fn redacted_never_shows_the_password() {
        for s in [
            "postgres://me:hunter2@db:5433/app?sslmode=require",
            "host=db port=5433 user=me password=hunter2 dbname=app",
        ] {
            assert_eq!(redacted(s), "postgres://me@db:5433/app");
        }
        assert!(!redacted("postgres://me:hunter2@db:notaport/app").contains("hunter2"));
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_with_a_reason() {
        let err = |s: &str| parse(s).err().unwrap_or_else(|| panic!("{s} parsed"));
        assert!(err("postgres://h/db?sslmode=maybe").contains("sslmode must be"));
        assert!(
            err("postgres://h/db?sslrootcert=system&sslmode=require")
                .contains("needs sslmode=verify-full")
        );
        assert!(err("postgres://h/db?sslcert=/x.pem").contains("give both or neither"));
        assert!(err("postgres://h/db?sslrootcert=/nonexistent/ca.pem").contains("cannot read"));
        let e = err("postgres://me:hunter2@h/db?sslmode=verify-ca&sslrootcert=/nonexistent");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("host=h password=hunter2 port=x");
        assert!(!e.contains("hunter2"), "{e}");
        let none = |_: &str| None;
        let t = parse_with("postgres://h/db", &none).unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        let t = parse_with("host=h dbname=d sslmode=disable", &none).unwrap();
        assert_eq!(t.mode, SslMode::Disable);
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_fills_what_the_string_leaves_out_and_never_overrides_it() {
        let env = env_of(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGAPPNAME", "envapp"),
            ("PGOPTIONS", "-c search_path=s"),
            ("PGCONNECT_TIMEOUT", "1"),
            ("PGSSLMODE", "disable"),
        ]);
        let t = parse_with("postgres://me@h/db?application_name=mine", &env).unwrap();
        let c = &t.config;
        assert_eq!(
            c.get_hosts(),
            [tokio_postgres::config::Host::Tcp("h".into())]
        );
        assert_eq!(c.get_ports(), [6000]);
        assert_eq!(c.get_user(), Some("me"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.get_dbname(), Some("db"));
        assert_eq!(c.get_application_name(), Some("mine"));
        assert_eq!(c.get_options(), Some("-c search_path=s"));
        assert_eq!(
            c.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(2))
        );
        assert_eq!(t.mode, SslMode::Disable);
        // The string's own TLS setting wins.
        let t = parse_with("host=h sslmode=require", &env).unwrap();
        assert_eq!(t.mode, SslMode::Require);
        // Everything from the environment.
        let t = parse_with("postgres://", &env).unwrap();
        assert_eq!(describe(&t.config), "postgres://envuser@envhost:6000/envdb");
        for (k, v, why) in [
            ("PGPORT", "x", "PGPORT"),
            ("PGHOSTADDR", "nohost", "PGHOSTADDR"),
            ("PGSSLMODE", "sometimes", "sslmode must be"),
            ("PGCONNECT_TIMEOUT", "soon", "PGCONNECT_TIMEOUT"),
        ] {
            let e = parse_with("postgres://h/db", &env_of(&[(k, v)]))
                .err()
                .unwrap_or_else(|| panic!("{k}={v} accepted"));
            assert!(e.contains(why), "{e}");
        }
        // Each variable is read only when the string leaves its setting out, in this
        // order.
        let names: Vec<&str> = FROM_ENV.iter().map(|(n, _, _)| *n).collect();
        let asked = std::cell::RefCell::new(Vec::new());
        let spy = |k: &str| {
            if names.contains(&k) {
                asked.borrow_mut().push(k.to_string());
            }
            None
        };
        let mut config = tokio_postgres::Config::new();
        from_environment(&mut config, &mut Vec::new(), &spy).unwrap();
        assert_eq!(*asked.borrow(), names);
        let settings = [
            "host=h",
            "hostaddr=127.0.0.1",
            "port=1",
            "user=u",
            "password=p",
            "dbname=d",
            "options=-cx",
            "application_name=a",
            "connect_timeout=3",
        ];
        for (i, given) in settings.iter().enumerate() {
            asked.borrow_mut().clear();
            let mut config: tokio_postgres::Config = given.parse().unwrap();
            from_environment(&mut config, &mut Vec::new(), &spy).unwrap();
            let mut others = names.clone();
            others.remove(i);
            assert_eq!(*asked.borrow(), others, "{given}");
        }
        // Nothing set anywhere: a socket where one listens, else localhost.
        let t = parse_with("postgres://", &|_: &str| None).unwrap();
        assert_eq!(t.config.get_hosts().len(), 1);
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it_and_ignored_when_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# a comment\n\
             other:5432:*:me:wrong\n\
             db.internal:5433:app:me:not-this-port\n\
             db.internal:*:app:me:pa\\:ss\\\\w:rd\n\
             *:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.to_str().unwrap().to_string();
        let env = env_of(&[("PGPASSFILE", &path)]);
        let pw = |s: &str, env: &dyn Fn(&str) -> Option<String>| {
            let t = parse_with(s, env).unwrap();
            t.config
                .get_password()
                .map(|p| String::from_utf8(p.to_vec()).unwrap())
        };
        assert_eq!(
            pw("postgres://me@db.internal:5434/app", &env).as_deref(),
            Some("pa:ss\\w:rd")
        );
        assert_eq!(
            pw("host=x user=y dbname=z", &env).as_deref(),
            Some("fallback")
        );
        // A password given wins over the file.
        assert_eq!(
            pw("postgres://me:given@db.internal/app", &env).as_deref(),
            Some("given")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pw("postgres://me@db.internal:5434/app", &env), None);
    }
}
