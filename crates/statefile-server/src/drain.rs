//! A request refused before its body was read (a bad name, a wrong method, a missing
//! token) would leave the body's bytes on the connection, and the HTTP layer would then
//! close it. The body comes back here unread instead, and up to [`DRAIN_MAX`] bytes of
//! it are read and dropped within [`DRAIN_TIME`], so the client keeps its connection;
//! a longer or slower body is not waited for: the answer says `Connection: close`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

/// The most of a refused request's body read to keep its connection.
pub const DRAIN_MAX: usize = 64 * 1024;
/// The longest that reading may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A request body that sends itself back when dropped before its end.
struct Returning {
    inner: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.inner.take(), self.back.take())
            && !http_body::Body::is_end_stream(&body)
        {
            let _ = back.send(body);
        }
    }
}

/// Around every request: drain what the handler left of the body.
pub async fn drain_unread(req: Request, next: Next) -> Response {
    let (tx, mut rx) = oneshot::channel();
    let req = req.map(|b| {
        Body::new(Returning {
            inner: Some(b),
            back: Some(tx),
        })
    });
    let mut res = next.run(req).await;
    // The handler is done with the request: its body came back, or was read to its end.
    let closing = res.headers().get(header::CONNECTION) == Some(&HeaderValue::from_static("close"));
    if let (Ok(body), false) = (rx.try_recv(), closing) {
        let drained = tokio::time::timeout(DRAIN_TIME, async move {
            let mut body = body;
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > DRAIN_MAX {
                    return false;
                }
            }
            true
        })
        .await;
        if drained != Ok(true) {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    res
}
