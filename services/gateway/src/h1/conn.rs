//! One upstream connection of the lean client, with its read and write buffers kept across
//! requests, and the exchange on it: the request head written with one `send`, the response head
//! read (interim responses skipped).
//!
//! Exists apart from the body so that what makes a pooled connection safe to use again (nothing
//! arrived while it was idle, buffers shrunk) sits with the connection.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{H1Error, Head, MAX_HEAD_BYTES, parse_head};

/// One upstream connection with its read and write buffers (kept across requests).
#[derive(Debug)]
pub struct Conn<IO = TcpStream> {
    pub(super) io: IO,
    pub(super) buf: BytesMut,
    head: Vec<u8>,
}

impl<IO> Conn<IO> {
    /// Wraps a connected stream.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
        }
    }

    /// Gives back buffers that grew past what a typical exchange needs (a large head or body),
    /// so an idle pooled connection holds a few KiB, not the largest message it ever carried.
    pub(super) fn shrink(mut self) -> Self {
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = BytesMut::new();
        }
        if self.head.capacity() > KEEP_BUFFER_BYTES {
            self.head = Vec::new();
        }
        self
    }
}

impl Conn<TcpStream> {
    /// Whether nothing has arrived on this idle connection since its last response was read to its
    /// end: no bytes (an answer nobody asked for, like the `408` some servers send before closing
    /// an idle connection) and no close. Such a connection must not carry a request: its next
    /// "response" would be those stale bytes. Asks tokio's readiness first, which the last read
    /// cleared when it drained the socket, so a quiet connection costs no system call; only a
    /// readiness left set (a read that filled the buffer exactly, or new events) is checked on
    /// the socket itself.
    pub fn is_quiet(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Buffer capacity an idle connection keeps.
const KEEP_BUFFER_BYTES: usize = 32 * 1024;

/// Writes a request line (`target` is an origin-form URI's path and query, already valid).
pub fn request_line(dst: &mut Vec<u8>, method: &Method, target: &str) {
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Writes one header line (`HeaderValue` cannot hold CR, LF or NUL, so nothing can be injected).
pub fn header_line(dst: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Sends a bodyless request on `conn` (one write of the head `write_head` puts in the connection's
/// buffer) and reads the response head. Interim 1xx responses are skipped; a 101 is refused (no
/// upgrade was asked for).
pub async fn exchange<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    head_request: bool,
    write_head: impl FnOnce(&mut Vec<u8>),
) -> Result<Head, H1Error> {
    conn.head.clear();
    write_head(&mut conn.head);
    conn.io.write_all(&conn.head).await?;
    let mut received_any = !conn.buf.is_empty();
    loop {
        if !conn.buf.is_empty() {
            if let Some((head, len)) = parse_head(&conn.buf, head_request)? {
                conn.buf.advance(len);
                let status = head.response.status();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(H1Error::Malformed("unexpected 101 Switching Protocols"));
                }
                if status.is_informational() {
                    continue;
                }
                return Ok(head);
            }
            if conn.buf.len() >= MAX_HEAD_BYTES {
                return Err(H1Error::Malformed("response head too large"));
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(8 * 1024);
        }
        let n = read_some(&mut conn.io, &mut conn.buf).await?;
        if n == 0 {
            return Err(if received_any {
                H1Error::Truncated
            } else {
                H1Error::ClosedBeforeResponse
            });
        }
        received_any = true;
    }
}

async fn read_some<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)).await
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, header};

    use super::{super::eligible, *};

    #[test]
    fn request_heads_carry_method_target_and_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up:8080"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let mut out = Vec::new();
        request_line(&mut out, &Method::DELETE, "/api/x?y=1");
        for (name, value) in &h {
            header_line(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DELETE /api/x?y=1 HTTP/1.1\r\nhost: up:8080\r\nx-multi: a\r\nx-multi: b\r\n\r\n"
        );
        assert!(eligible(&Method::GET, true));
        assert!(!eligible(&Method::GET, false), "bodies go through hyper");
        assert!(!eligible(&Method::POST, true), "not idempotent");
    }
}
