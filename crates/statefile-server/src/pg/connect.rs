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
    let (rest, tls) = if let Some(body) = url_body(s) {
        split_url(s, body)?
    } else {
        split_pairs(s)?
    };
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!(
            "not a PostgreSQL connection string (postgres://USER@HOST:PORT/DB, or host=HOST \
             dbname=DB ...): {e}"
        )
    })?;
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
        let t = parse("postgres://h/db").unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        let t = parse("host=h dbname=d sslmode=disable").unwrap();
        assert_eq!(t.mode, SslMode::Disable);
    }
}
