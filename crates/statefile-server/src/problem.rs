//! Errors as RFC 9457 `application/problem+json`, in one place.
//!
//! Every error response has a stable `type` (`urn:statefile:problem:<slug>`), a `title`,
//! a `detail` written for the client (never an absolute path or an internal message:
//! those go to the log), and the request id that the `x-request-id` header carries too.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use statefile::ErrorKind;

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being handled, for error bodies and log lines.
    pub static REQUEST_ID: String;
}

/// The current request's id, if inside a request.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_string())
}

/// An error answer: status, problem type slug, title and client-safe detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<u32>,
    /// Close the connection after answering (the rest of the request was not read).
    pub close: bool,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after: None,
            close: false,
        }
    }

    /// The same answer, closing the connection after it.
    #[must_use]
    pub fn closing(mut self) -> ApiError {
        self.close = true;
        self
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    pub fn unprocessable(slug: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            slug,
            "The operation does not apply to this document",
            detail,
        )
    }

    /// 503 `request-timeout`, with `Retry-After: 1`: the request's time ran out
    /// (`serve --request-timeout`).
    pub fn request_timeout(detail: impl Into<String>) -> ApiError {
        let mut a = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "The request took too long",
            detail,
        );
        a.retry_after = Some(1);
        a
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn precondition_failed(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            detail,
        )
    }

    /// A 500 for what is truly unexpected: `cause` goes to the log with the request id
    /// (which the response carries too), never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(request_id = %request_id(), error = %cause, "unexpected failure");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an unexpected error occurred; the server log has the details under this request id",
        )
    }

    /// The one mapping from storage errors to answers (docs/design.md's error table),
    /// for document `name`. A storage error's own message may name paths or hosts, so
    /// it is logged, and the client gets a detail built from `name` (and the error's
    /// client-safe reason) only. A mutation's error is the route's own answer.
    pub fn from_store(e: StoreError, name: &str) -> ApiError {
        let (kind, reason, source) = match e {
            StoreError::Mutation(m) => {
                return match m.downcast::<ApiError>() {
                    Ok(api) => *api,
                    Err(other) => ApiError::internal(other),
                };
            }
            StoreError::Storage {
                kind,
                reason,
                source,
            } => (kind, reason, source),
            StoreError::Unavailable(source) => {
                tracing::warn!(request_id = %request_id(), document = name, error = %source,
                    "storage unavailable");
                let mut a = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage-unavailable",
                    "The storage is unavailable",
                    "the storage cannot be reached right now or did not answer in time; retry \
                     shortly (a write that got this answer may or may not have been applied: \
                     retry appends with an Idempotency-Key)",
                );
                a.retry_after = Some(1);
                return a;
            }
            StoreError::Changed(source) => {
                tracing::warn!(request_id = %request_id(), document = name, error = %source,
                    "another program changed the document under a write");
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "changed-during-write",
                    "The document was changed by another program during the write",
                    format!(
                        "document {name} was changed by another program (one that does not \
                         take statefile's lock) while this write was in progress: nothing was \
                         written; send the request again"
                    ),
                );
            }
            StoreError::KeyReused => {
                return ApiError::unprocessable(
                    "idempotency-key-reused",
                    format!(
                        "this Idempotency-Key was already used for a different append to \
                         document {name}; use a new key for a new request"
                    ),
                );
            }
        };
        let err = match kind {
            ErrorKind::NotFound => ApiError::not_found(format!("document {name} does not exist")),
            ErrorKind::Conflict => ApiError::precondition_failed(reason.unwrap_or_else(|| {
                format!("document {name} is not at the version the request expected")
            })),
            ErrorKind::Corrupt => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt-document",
                "The stored document is damaged",
                match reason {
                    Some(why) => format!("document {name} is damaged (not valid JSON): {why}"),
                    None => format!("document {name} is damaged (not valid JSON)"),
                },
            ),
            ErrorKind::LockTimeout => {
                let mut a = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lock-timeout",
                    "The document is busy",
                    format!("another writer held document {name} too long; retry shortly"),
                );
                a.retry_after = Some(1);
                a
            }
            ErrorKind::NoSpace => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "no-space",
                "No space left",
                format!("the storage is full; document {name} is unchanged"),
            ),
            ErrorKind::PermissionDenied => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage-permission",
                "Storage permission denied",
                format!("the server may not write document {name}; it is unchanged"),
            ),
            ErrorKind::Durability => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "durability-unknown",
                "Durability unknown",
                format!(
                    "document {name} was replaced but the storage could not confirm it is durable; \
                     the server refuses further writes until restarted"
                ),
            ),
            // The error table: InvalidName is a bad request (400), whether the name
            // itself or what it resolves to (a directory in the way, a symlink out).
            ErrorKind::InvalidName => ApiError::bad_request(
                "invalid-name",
                format!(
                    "document {name} cannot be stored there: a directory or file of that name is in \
                     the way, or the name leads outside the store"
                ),
            ),
            ErrorKind::Serialize => match too_large(source.as_ref()) {
                Some(t) => {
                    let size = t.size.map_or_else(
                        || format!("more than {} bytes", t.limit),
                        |n| format!("{n} bytes"),
                    );
                    ApiError::unprocessable(
                        "document-too-large",
                        format!(
                            "document {name} is {size}, over the server's limit of {} bytes on a \
                             document (serve --max-document): it is not read or written; a PUT \
                             of a smaller value may replace it",
                            t.limit
                        ),
                    )
                }
                None => ApiError::unprocessable(
                    "value-not-storable",
                    format!(
                        "the value cannot be stored in document {name}: {}",
                        reason.as_deref().unwrap_or("it is not representable")
                    ),
                ),
            },
            _ if out_of_descriptors(source.as_ref()) => {
                let mut a = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too-many-open-files",
                    "The server has too many files open",
                    format!(
                        "the server reached its open-file limit working on document {name}; \
                         retry shortly (a transaction of many documents needs a file each: \
                         the server's limit is `ulimit -n`)"
                    ),
                );
                a.retry_after = Some(1);
                a
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an unexpected error occurred; the server log has the details under this request id",
            ),
        };
        let rid = request_id();
        if err.status.is_server_error() {
            tracing::error!(request_id = %rid, document = name, error = %source, "request failed");
        } else {
            tracing::debug!(request_id = %rid, document = name, error = %source, "request refused");
        }
        err
    }
}

/// What a library error (`e` or one it wraps) says of a document over the size limit.
fn too_large(e: &(dyn std::error::Error + 'static)) -> Option<statefile::TooLarge> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e
            .downcast_ref::<statefile::Error>()
            .and_then(statefile::Error::too_large)
        {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// Whether `e` (or an error it wraps) is the process (EMFILE) or the system (ENFILE)
/// running out of file descriptors: a passing condition, unlike other I/O errors.
fn out_of_descriptors(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(23 | 24))
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.slug, self.detail)
    }
}

impl std::error::Error for ApiError {}

/// The problem+json body of an answer.
pub fn body(slug: &str, title: &str, status: u16, detail: &str, request_id: &str) -> String {
    json!({
        "type": format!("urn:statefile:problem:{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    })
    .to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = body(
            self.slug,
            self.title,
            self.status.as_u16(),
            &self.detail,
            &request_id(),
        );
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EMFILE and ENFILE, bare or inside the library's error, are "out of
    /// descriptors" (503 to retry); other I/O errors are not.
    #[test]
    fn running_out_of_descriptors_is_recognised_through_the_error_chain() {
        for errno in [23, 24] {
            assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
                errno
            )));
        }
        // A library error without an OS error behind it is not.
        let plain = statefile::Error::new(statefile::ErrorKind::Io, "cannot create lock file");
        assert!(!out_of_descriptors(&plain));
        let wrapped = ApiError::from_store(
            crate::store::StoreError::Storage {
                kind: statefile::ErrorKind::Io,
                reason: None,
                source: Box::new(std::io::Error::from_raw_os_error(24)),
            },
            "a.json",
        );
        assert_eq!(wrapped.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(wrapped.slug, "too-many-open-files");
        assert_eq!(wrapped.retry_after, Some(1));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(5)));
    }
}
