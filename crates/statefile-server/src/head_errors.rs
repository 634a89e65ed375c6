//! hyper answers a request head it cannot parse itself, before any route runs: 400 (a
//! method, target, version or header that is not HTTP/1.1, or a bad `Content-Length` /
//! `Transfer-Encoding`), 414 and 431 (a head over [`MAX_HEAD`](crate::listen::MAX_HEAD)),
//! each with an empty body, then closes the connection. It offers no hook to shape those
//! answers, so [`ProblemHeads`] recognizes them on their way to the socket and writes the
//! server's problem+json in their place, like every other error of the server.
//!
//! An answer is recognized by what only hyper's automatic answers have: one of those
//! statuses, and a head alone whose only fields are `content-length: 0`, `date` and
//! `connection: close` (every answer of the routes carries a `content-type`). A JSON
//! body cannot contain such a head (a raw CR LF is not JSON), so no document is ever
//! rewritten.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream, with hyper's empty parse-error answers made problem+json.
#[derive(Debug)]
pub struct ProblemHeads<S> {
    inner: S,
    /// The answer written in place of hyper's, and how much of it went out.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> ProblemHeads<S> {
    pub fn new(inner: S) -> ProblemHeads<S> {
        ProblemHeads {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> ProblemHeads<S> {
    /// Write what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `buf` is one of hyper's parse-error answers, take it as written and send the
    /// problem+json answer instead.
    fn replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let answer = problem_answer(buf)?;
        self.pending = answer;
        self.sent = 0;
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // What is left goes out on the flush that follows.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemHeads<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemHeads<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(r) = this.replace(cx, buf) {
            return r;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(r) = this.replace(cx, first)
        {
            return r;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The problem+json answer for `head` if it is one of hyper's parse-error answers.
fn problem_answer(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head.strip_suffix(b"\r\n\r\n")?).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let (version, rest) = status_line.split_once(' ')?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    let (slug, title, detail) = match rest.get(..4)? {
        "400 " => (
            "malformed-request",
            "Bad request",
            "the request is not valid HTTP/1.1: its method, target or version, a header's \
             syntax, or its Content-Length or Transfer-Encoding"
                .to_string(),
        ),
        "414 " => (
            "uri-too-long",
            "Request target too long",
            format!(
                "the request target is too long; the limit is {} bytes",
                crate::MAX_URI
            ),
        ),
        "431 " => (
            "header-too-large",
            "Request head too large",
            format!(
                "the request line and headers take more than {} KiB, the limit",
                crate::listen::MAX_HEAD / 1024
            ),
        ),
        _ => return None,
    };
    let mut date = None;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => empty = true,
            "date" => date = Some(value.trim()),
            "connection" if value.trim().eq_ignore_ascii_case("close") => {}
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let status = rest.get(..3)?.parse::<u16>().ok()?;
    let id = crate::new_request_id();
    tracing::info!(request_id = %id, method = "-", route = "unparsed", status, detail,
        "request");
    let body = crate::problem::body(slug, title, status, &detail, &id);
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         connection: close\r\nx-request-id: {id}\r\n",
        body.len()
    );
    if let Some(d) = date {
        out.push_str(&format!("date: {d}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_parse_error_answers_are_rewritten() {
        let date = "date: Thu, 26 Nov 2026 17:00:00 GMT";
        let hyper431 = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n"
        );
        let out = String::from_utf8(problem_answer(hyper431.as_bytes()).unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(
            out.contains("content-type: application/problem+json\r\n"),
            "{out}"
        );
        assert!(out.contains(&format!("{date}\r\n")), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{out}"
        );
        let p: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(p["type"], "urn:statefile:problem:header-too-large");
        assert_eq!(p["status"], 431);
        for kept in [
            // An answer of the routes: it has a content type.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n",
            // Another status, or a body.
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 400 Bad Request\r\n\r\n",
            "\"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(problem_answer(kept.as_bytes()), None, "{kept:?}");
        }
    }
}
