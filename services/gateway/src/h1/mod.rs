//! A lean HTTP/1.1 client for the proxy's most common upstream exchange: an idempotent request
//! without a body (GET, HEAD, OPTIONS, DELETE) on a kept-alive connection of the worker's pool.
//!
//! Exists because hyper's client connection, general enough for bodies streamed both ways and
//! upgrades, costs every request a connection task of its own and a channel hop per message: the
//! request is queued to that task, the response head comes back through a oneshot and the body
//! through another channel, each a task wake-up. Both proxies make the same 4 system calls and 4
//! TCP segments per request, so the gap to nginx was user time; with this client the gateway's user
//! CPU per request fell from above nginx's to about nginx's (interleaved `wrk` pairs, see
//! docs/benchmarks.md).
//! Here the request's own future writes the head with one `send`, reads the response on the same
//! socket, and a body already in the read buffer (the usual small API answer) is handed over whole,
//! the connection going back to the pool before the response is even written to the client.
//!
//! Everything else (request bodies, which need concurrent streaming both ways) stays on hyper's
//! client. Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` with `chunked` last decodes chunks (trailers are read and dropped), with any
//! other last coding reads until close; otherwise `Content-Length` (equal repeated values only);
//! otherwise until close. A connection is reused only after an HTTP/1.1 response without
//! `Connection: close`, framed by length or chunks, consumed exactly to its end.
//!
//! Split by concern: `head` parses a response head and decides its framing, `chunked` decodes the
//! chunked coding, `conn` owns a connection and runs the request/response-head exchange, `body`
//! streams the response body and hands the connection back. The connection is generic over its
//! I/O so that the exchange and bodies are unit-tested on scripted reads and writes.

mod body;
mod chunked;
mod conn;
mod head;

use http::Method;

pub use self::{
    body::{Body, StreamBody, body},
    chunked::{ChunkDecoder, Decoded},
    conn::{Conn, exchange, header_line, request_line},
    head::{Framing, Head, MAX_HEAD_BYTES, parse_head},
};

/// Why an exchange on the lean client failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Reading or writing the socket failed.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before any byte of a response arrived (a kept-alive connection the
    /// upstream had closed: the request can be sent again on a new one).
    #[error("upstream closed the connection before answering")]
    ClosedBeforeResponse,
    /// The connection ended in the middle of a response.
    #[error("upstream closed the connection in the middle of the response")]
    Truncated,
    /// The response is not valid HTTP/1.x.
    #[error("invalid upstream response: {0}")]
    Malformed(&'static str),
}

impl H1Error {
    /// Whether nothing of a response was received, so an idempotent request can be re-sent.
    pub fn nothing_received(&self) -> bool {
        matches!(self, H1Error::ClosedBeforeResponse | H1Error::Io(_))
    }
}

/// Whether the lean client can carry this request: an idempotent method without a body
/// (`body_is_empty`). (`Upgrade` is hop-by-hop: the proxy never forwards it.)
pub fn eligible(method: &Method, body_is_empty: bool) -> bool {
    body_is_empty
        && matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        )
}

/// The exchange and bodies over scripted upstream I/O: each read returns the next scripted piece
/// (so a head or chunk can be split where a socket might split it), then the upstream closes.
#[cfg(test)]
mod scripted_io {
    use std::{
        collections::VecDeque,
        io,
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    /// An upstream that answers with `reads`, one per read call, then closes; keeps what it got.
    #[derive(Debug, Default)]
    struct Script {
        reads: VecDeque<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Script {
        fn conn(reads: &[&[u8]]) -> Conn<Script> {
            Conn::new(Script {
                reads: reads.iter().map(|r| r.to_vec()).collect(),
                written: Vec::new(),
            })
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut next) = self.reads.pop_front() {
                let n = next.len().min(buf.remaining());
                buf.put_slice(&next[..n]);
                if n < next.len() {
                    self.reads.push_front(next.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn get(conn: &mut Conn<Script>) -> Result<Head, H1Error> {
        exchange(conn, false, |b| {
            request_line(b, &Method::GET, "/x");
            b.extend_from_slice(b"\r\n");
        })
        .await
    }

    /// The body read to its end, and whether the connection came back to be reused.
    async fn read_body(conn: Conn<Script>, head: &Head) -> (Result<Bytes, H1Error>, bool) {
        let back = Arc::new(AtomicBool::new(false));
        let flag = back.clone();
        let b = body(conn, head.framing, head.reusable, move |_| {
            flag.store(true, Ordering::Relaxed);
        });
        let read = b.collect().await.map(|c| c.to_bytes());
        (read, back.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_head_split_across_reads_is_put_together_and_the_connection_reused() {
        let mut conn = Script::conn(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le",
            b"ngth: 5\r\nX-A: b\r\n",
            b"\r\nhel",
            b"lo",
        ]);
        let head = get(&mut conn).await.unwrap();
        assert_eq!(conn.io.written, b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(head.response.status(), StatusCode::OK, "the 100 is skipped");
        assert_eq!(head.response.headers()["x-a"], "b");
        assert_eq!(head.framing, Framing::Length(5));
        let (read, reused) = read_body(conn, &head).await;
        assert_eq!(read.unwrap(), "hello");
        assert!(
            reused,
            "a body read exactly to its end frees the connection"
        );
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
        let mut conn = Script::conn(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhel",
            b"lo\r\n6 ; x\r\n, worl\r\n1\r\nd\r",
            b"\n0\r\nX-Checksum: abc\r\n",
            b"\r\n",
        ]);
        let head = get(&mut conn).await.unwrap();
        assert_eq!((head.framing, head.reusable), (Framing::Chunked, true));
        let (read, reused) = read_body(conn, &head).await;
        assert_eq!(read.unwrap(), "hello, world");
        assert!(reused, "the trailers were read to the end of the message");
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error_and_its_connection_is_not_reused() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel",
        ] {
            let mut conn = Script::conn(&[wire]);
            let head = get(&mut conn).await.unwrap();
            let (read, reused) = read_body(conn, &head).await;
            assert!(
                matches!(read, Err(H1Error::Truncated)),
                "{:?}: {read:?}",
                String::from_utf8_lossy(wire)
            );
            assert!(!reused);
        }
    }

    #[tokio::test]
    async fn a_too_large_head_is_refused_and_a_silent_close_can_be_retried() {
        let mut big = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 1024, b'a');
        let mut conn = Script::conn(&[&big]);
        let e = get(&mut conn).await.unwrap_err();
        assert!(
            matches!(e, H1Error::Malformed("response head too large")),
            "{e:?}"
        );
        assert!(!e.nothing_received());

        let e = get(&mut Script::conn(&[])).await.unwrap_err();
        assert!(matches!(e, H1Error::ClosedBeforeResponse), "{e:?}");
        assert!(
            e.nothing_received(),
            "an idempotent request may be sent again"
        );
        let e = get(&mut Script::conn(&[b"HTTP/1.1 200"]))
            .await
            .unwrap_err();
        assert!(matches!(e, H1Error::Truncated), "{e:?}");
        assert!(!e.nothing_received());
    }
}
