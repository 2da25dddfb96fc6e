//! JSON bodies for the answers hyper gives, on its own, to requests it cannot read.
//!
//! A request whose head hyper cannot parse never reaches the router: hyper answers it
//! itself, with `400 Bad Request`, `414 URI Too Long` or `431 Request Header Fields Too
//! Large`, an empty body and `connection: close`, and closes the connection. The
//! contract wants a JSON error body on every error response, so [`ParseErrorListener`]
//! wraps each accepted connection in a [`ParseErrorIo`], which recognizes those three
//! answers as hyper writes them (their exact first bytes, which no response of the
//! router starts with: its errors carry a `content-type` first) and writes them with
//! the contract's body (and a fresh `x-request-id`, as every answer has) instead:
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `BadRequest` | the request line or a header is not HTTP/1.1 |
//! | 414 | `UriTooLong` | the request target does not fit the read buffer |
//! | 431 | `HeadersTooLarge` | more than 100 headers, or a head past the read buffer (about 400 KiB) |
//!
//! Everything else passes through untouched; a connection pays one comparison of a
//! byte per write (a status's first digit), and a few more for its 4xx answers. These
//! answers never pass the request guard; `/metrics` counts them here, by status class.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// The start of each answer hyper writes for a request it cannot parse (hyper 1.x's
/// `on_error`: the status line, then `connection: close` and `content-length: 0`; the
/// `date` header and the blank line follow), with its status and the code and message
/// it gets.
const CANNED: [(&[u8], StatusCode, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "the request could not be read as HTTP/1.1: a malformed request line or header",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::URI_TOO_LONG,
        "UriTooLong",
        "the request's target (path and query string) is too long",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HeadersTooLarge",
        "the request's head is too large: at most 100 headers and about 400 KiB",
    ),
];

/// The length of `content-length: 0\r\n`, the end of each [`CANNED`] prefix.
const EMPTY_LENGTH_LINE: usize = "content-length: 0\r\n".len();

/// A listener whose connections give hyper's own error answers a JSON body.
#[derive(Debug)]
pub struct ParseErrorListener<L> {
    inner: L,
    metrics: Metrics,
}

impl<L: Listener> ParseErrorListener<L> {
    /// Wraps the connections `inner` accepts; their rewritten answers count in
    /// `metrics`.
    pub fn new(inner: L, metrics: Metrics) -> ParseErrorListener<L> {
        ParseErrorListener { inner, metrics }
    }
}

impl<L: Listener> Listener for ParseErrorListener<L>
where
    L::Io: Unpin,
{
    type Io = ParseErrorIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (ParseErrorIo::new(io, self.metrics.clone()), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that writes hyper's error answers with a JSON body (see the module).
#[derive(Debug)]
pub struct ParseErrorIo<T> {
    inner: T,
    metrics: Metrics,
    /// An answer being written in place of the one hyper gave, and how much of it is
    /// written.
    replacement: Vec<u8>,
    written: usize,
    /// How many of hyper's bytes the replacement stands for: reported as written once
    /// all of it is.
    replaced: usize,
}

impl<T> ParseErrorIo<T> {
    /// Wraps `inner`; a rewritten answer counts in `metrics`.
    pub fn new(inner: T, metrics: Metrics) -> ParseErrorIo<T> {
        ParseErrorIo { inner, metrics, replacement: Vec::new(), written: 0, replaced: 0 }
    }
}

/// The answer to write instead of `buf`, if `buf` starts with one of hyper's error
/// answers: the same head with a JSON content type and length, then the body, then
/// whatever `buf` held after the head.
fn replacement_for(buf: &[u8]) -> Option<(StatusCode, Vec<u8>)> {
    let (prefix, status, code, message) = CANNED.iter().find(|(prefix, ..)| buf.starts_with(prefix))?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(&prefix[..prefix.len() - EMPTY_LENGTH_LINE]);
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // Every answer carries a request id; this one had no request to take it from.
    out.extend_from_slice(format!("x-request-id: {}\r\n", uuid::Uuid::new_v4()).as_bytes());
    out.extend_from_slice(&buf[prefix.len()..head_end]);
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(&buf[head_end..]);
    Some((*status, out))
}

impl<T: AsyncWrite + Unpin> ParseErrorIo<T> {
    /// Writes what is left of a replacement (if any). It stays until hyper's repeated
    /// write of the bytes it stands for takes it (see `poll_write`).
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.replacement.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.replacement[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParseErrorIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_empty() {
            // Most responses are told apart by their status's first digit.
            let replacement = match buf.get(9) {
                Some(b'4') => replacement_for(buf),
                _ => None,
            };
            let Some((status, replacement)) = replacement else {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            };
            this.metrics.record_unread(status);
            this.replacement = replacement;
            this.replaced = buf.len();
        }
        // Until it is written, hyper gets `Pending` and asks again with the same bytes
        // (its buffer keeps what it has not seen written); then they count as written.
        ready!(this.poll_replacement(cx))?;
        this.replacement = Vec::new();
        this.written = 0;
        Poll::Ready(Ok(std::mem::take(&mut this.replaced)))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // A response starts a write: a head to replace is the first buffer.
        let first = bufs.iter().find(|buf| !buf.is_empty()).map_or(&[][..], |buf| &buf[..]);
        if self.replacement.is_empty() && first.get(9) != Some(&b'4') {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParseErrorIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    const DATE: &[u8] = b"date: Sun, 29 Nov 2026 16:48:07 GMT\r\n\r\n";

    /// hyper's answer for `status`, as it writes it.
    fn canned(status: &str) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n").into_bytes();
        out.extend_from_slice(DATE);
        out
    }

    /// A socket that takes at most `max` bytes a write and answers every other write
    /// `Pending` (waking its task at once), as a slow peer's socket does.
    struct Trickle {
        taken: Vec<u8>,
        max: usize,
        pending_next: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.pending_next = !self.pending_next;
            if !self.pending_next {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.taken.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What the socket takes when `writes` go through a [`ParseErrorIo`], each written
    /// whole as hyper does (asking again with what is left), then flushed.
    async fn through(writes: &[Vec<u8>], max: usize, vectored: bool) -> Vec<u8> {
        let trickle = Trickle { taken: Vec::new(), max, pending_next: false };
        let mut io = ParseErrorIo::new(trickle, Metrics::default());
        for bytes in writes {
            let mut at = 0;
            while at < bytes.len() {
                let rest = &bytes[at..];
                at += if vectored {
                    let bufs = [IoSlice::new(&[]), IoSlice::new(rest)];
                    poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &bufs)).await.unwrap()
                } else {
                    poll_fn(|cx| Pin::new(&mut io).poll_write(cx, rest)).await.unwrap()
                };
            }
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx)).await.unwrap();
        }
        poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await.unwrap();
        io.inner.taken
    }

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8(answer[..end].to_vec()).unwrap();
        let body = serde_json::from_slice(&answer[end..]).unwrap();
        (head, body)
    }

    #[tokio::test]
    async fn hypers_own_error_answers_get_the_contracts_json_body() {
        for (status, code) in [
            ("400 Bad Request", "BadRequest"),
            ("414 URI Too Long", "UriTooLong"),
            ("431 Request Header Fields Too Large", "HeadersTooLarge"),
        ] {
            for (capacity, vectored) in [(64 * 1024, false), (7, false), (64 * 1024, true), (5, true)] {
                let answer = through(&[canned(status)], capacity, vectored).await;
                let (head, body) = split(&answer);
                assert!(head.starts_with(&format!("HTTP/1.1 {status}\r\nconnection: close\r\n")), "{head}");
                assert!(head.contains("content-type: application/json\r\n"), "{head}");
                assert!(head.contains("\r\nx-request-id: "), "{head}");
                let length = answer.len() - head.len();
                assert!(head.contains(&format!("content-length: {length}\r\n")), "{head}");
                assert!(head.ends_with(std::str::from_utf8(DATE).unwrap()), "{head}");
                assert_eq!(body["error"]["code"], code);
                assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }

    #[tokio::test]
    async fn every_other_response_passes_untouched() {
        let json_error =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let kept_alive = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let writes = vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            json_error.to_vec(),
            kept_alive.to_vec(),
            b"body bytes of a stream, 4 at the tenth byte".to_vec(),
            b"HTTP/1.1 4".to_vec(),
            Vec::new(),
        ];
        for (capacity, vectored) in [(64 * 1024, false), (3, false), (64 * 1024, true)] {
            assert_eq!(through(&writes, capacity, vectored).await, writes.concat());
        }
    }

    #[tokio::test]
    async fn an_answer_after_others_on_a_kept_alive_connection_is_replaced_too() {
        let ok = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        let answer = through(&[ok.clone(), canned("431 Request Header Fields Too Large")], 11, false).await;
        assert!(answer.starts_with(&ok));
        assert_eq!(split(&answer[ok.len()..]).1["error"]["code"], "HeadersTooLarge");
    }
}
