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

use std::{
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Most headers a response head may have.
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (like hyper's default read buffer limit for a head).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest chunk trailer section accepted.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Read size while streaming a body.
const READ_CHUNK: usize = 16 * 1024;

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

/// One upstream connection with its read and write buffers (kept across requests).
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    head: Vec<u8>,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
        }
    }

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

    /// Gives back buffers that grew past what a typical exchange needs (a large head or body),
    /// so an idle pooled connection holds a few KiB, not the largest message it ever carried.
    fn shrink(mut self) -> Self {
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = BytesMut::new();
        }
        if self.head.capacity() > KEEP_BUFFER_BYTES {
            self.head = Vec::new();
        }
        self
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

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head: the response without body, its framing, and whether the connection may
/// carry another request once the body has been read to its end.
#[derive(Debug)]
pub struct Head {
    /// Status, headers (values share one buffer with the head's bytes). `Keep-Alive`, and
    /// `Connection` when it only says `keep-alive`/`close`, are left out: this client acts on them
    /// and they are hop-by-hop. A `Connection` that names headers stays, for the proxy to drop those.
    pub response: Response<()>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection can be reused after the body.
    pub reusable: bool,
}

/// Parses a complete response head at the start of `buf`: the head and its length in bytes, None
/// when more bytes are needed. Interim (1xx other than 101) responses are returned like others;
/// the caller skips them.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, H1Error> {
    // Uninitialised slots: filling 100 empty headers (3 KiB) cost more than parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Malformed("more than 100 headers"));
        }
        Err(_) => return Err(H1Error::Malformed("not an HTTP/1.x response head")),
    };
    let code = parsed.code.ok_or(H1Error::Malformed("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("bad status code"))?;
    let http11 = parsed.version == Some(1);
    // Offsets of the values within `buf`, so they can share one `Bytes` with the head below.
    let base = buf.as_ptr() as usize;
    let count = parsed.headers.len();
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked = None::<bool>;
    let mut close = !http11;
    // One copy of the head, which every header value then shares.
    let shared = Bytes::copy_from_slice(
        buf.get(..len)
            .ok_or(H1Error::Malformed("head longer than the input"))?,
    );
    for h in parsed.headers.iter() {
        let start = (h.value.as_ptr() as usize).wrapping_sub(base);
        let end = start.wrapping_add(h.value.len());
        if start > end || end > shared.len() {
            return Err(H1Error::Malformed("header outside the head"));
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(shared.slice(start..end))
            .map_err(|_| H1Error::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            for part in h.value.split(|b| *b == b',') {
                let n = parse_length(part)?;
                if length.is_some_and(|l| l != n) {
                    return Err(H1Error::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            // Only the last coding counts: `chunked` must be last to delimit the body.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            // (An HTTP/1.0 answer is never reused, `keep-alive` or not: `close` starts true.)
            let mut names_headers = false;
            for t in h.value.split(|b| *b == b',').map(trim) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") {
                    names_headers = true;
                }
            }
            // Acted on here, and hop-by-hop: left out unless it names headers the proxy must drop.
            if !names_headers {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            // Hop-by-hop (the connection's own parameters): never passed on.
            continue;
        }
        headers.append(name, value);
    }
    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (framing, reusable) = if bodyless {
        (Framing::Empty, !close)
    } else {
        match (chunked, length) {
            // Both: the coding wins and the connection is not reused (RFC 9112 §6.3 item 3).
            (Some(true), Some(_)) => (Framing::Chunked, false),
            (Some(true), None) => (Framing::Chunked, !close),
            (Some(false), _) => (Framing::UntilClose, false),
            (None, Some(0)) => (Framing::Empty, !close),
            (None, Some(n)) => (Framing::Length(n), !close),
            (None, None) => (Framing::UntilClose, false),
        }
    };
    if chunked.is_some() && length.is_some() {
        // The coding overrides the length, which must not be forwarded (RFC 9112 §6.3 item 3): a
        // client would frame the decoded body by a length it does not have.
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some((
        Head {
            response,
            framing,
            reusable,
        },
        len,
    )))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or_default()
}

fn parse_length(b: &[u8]) -> Result<u64, H1Error> {
    let digits = trim(b);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(H1Error::Malformed("bad Content-Length"));
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(H1Error::Malformed("bad Content-Length"))
    })
}

/// Sends a bodyless request on `conn` (one write of the head `write_head` puts in the connection's
/// buffer) and reads the response head. Interim 1xx responses are skipped; a 101 is refused (no
/// upgrade was asked for).
pub async fn exchange(
    conn: &mut Conn,
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

async fn read_some(io: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)).await
}

/// What the chunk decoder produced from the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The last chunk and the trailers have been read.
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size (digits seen so far, value).
    Size { digits: u8, value: u64 },
    /// Skipping a chunk extension up to CR.
    Extension { value: u64 },
    /// Expecting the LF of the size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// In the trailer section: bytes seen on the current line, total trailer bytes.
    Trailer { line: usize, total: usize },
    /// Expecting LF of a trailer line (or of the final blank line when `line` is 0).
    TrailerLf { line: usize, total: usize },
    /// Finished.
    Done,
}

/// Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkDecoder {
    state: ChunkState,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size {
                digits: 0,
                value: 0,
            },
        }
    }
}

impl ChunkDecoder {
    /// Consumes framing bytes from `buf` and returns the next piece of body data (taken out of
    /// `buf` without copying), the end, or that more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        use ChunkState as S;
        loop {
            if let S::Data { left } = self.state {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.state = if left == 0 {
                    S::DataCr
                } else {
                    S::Data { left }
                };
                return Ok(Decoded::Data(data));
            }
            if self.state == S::Done {
                return Ok(Decoded::End);
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.state = match (self.state, b) {
                (S::Size { digits, value }, _) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err(H1Error::Malformed("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).map_or(0, u64::from);
                    S::Size {
                        digits: digits + 1,
                        value: (value << 4) | d,
                    }
                }
                (S::Size { digits: 0, .. }, _) => {
                    return Err(H1Error::Malformed("chunk size expected"));
                }
                (S::Size { value, .. }, b'\r') => S::SizeLf { value },
                (S::Size { value, .. }, b';' | b' ' | b'\t') => S::Extension { value },
                (S::Extension { value }, b'\r') => S::SizeLf { value },
                (S::Extension { .. }, b'\n') => {
                    return Err(H1Error::Malformed("bare LF in a chunk line"));
                }
                (S::Extension { value }, _) => S::Extension { value },
                (S::SizeLf { value: 0 }, b'\n') => S::Trailer { line: 0, total: 0 },
                (S::SizeLf { value }, b'\n') => S::Data { left: value },
                (S::DataCr, b'\r') => S::DataLf,
                (S::DataLf, b'\n') => S::Size {
                    digits: 0,
                    value: 0,
                },
                (S::Trailer { line, total }, b'\r') => S::TrailerLf { line, total },
                (S::Trailer { .. }, b'\n') => {
                    return Err(H1Error::Malformed("bare LF in chunk trailers"));
                }
                (S::Trailer { line, total }, _) => {
                    if total + 1 > MAX_TRAILER_BYTES {
                        return Err(H1Error::Malformed("chunk trailers too large"));
                    }
                    S::Trailer {
                        line: line + 1,
                        total: total + 1,
                    }
                }
                (S::TrailerLf { line: 0, .. }, b'\n') => S::Done,
                (S::TrailerLf { total, .. }, b'\n') => S::Trailer { line: 0, total },
                _ => return Err(H1Error::Malformed("invalid chunked framing")),
            };
        }
    }
}

/// Where a streamed body stands.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkDecoder),
    UntilClose,
}

/// A response body read from the connection as the client consumes it. When it has been read
/// exactly to its end on a reusable connection, `on_end` gets the connection back.
pub struct StreamBody {
    conn: Option<Conn>,
    remaining: Remaining,
    reusable: bool,
    on_end: Option<Box<dyn FnOnce(Conn) + Send>>,
}

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBody")
            .field("remaining", &self.remaining)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

/// The body of a response on the lean client.
#[derive(Debug)]
pub enum Body {
    /// Completely received already (or empty); the connection was released.
    Full(Option<Bytes>),
    /// Still arriving.
    Stream(StreamBody),
}

/// Turns a parsed head's framing into its body: a body already complete in the read buffer is
/// taken out whole and the connection handed to `on_end` right away.
pub fn body(
    mut conn: Conn,
    framing: Framing,
    reusable: bool,
    on_end: impl FnOnce(Conn) + Send + 'static,
) -> Body {
    let remaining = match framing {
        Framing::Empty => {
            if reusable && conn.buf.is_empty() {
                on_end(conn.shrink());
            }
            return Body::Full(None);
        }
        Framing::Length(n) => {
            if let Ok(len) = usize::try_from(n)
                && conn.buf.len() >= len
            {
                let data = conn.buf.split_to(len).freeze();
                if reusable && conn.buf.is_empty() {
                    on_end(conn.shrink());
                }
                return Body::Full(Some(data));
            }
            Remaining::Length(n)
        }
        Framing::Chunked => Remaining::Chunked(ChunkDecoder::default()),
        Framing::UntilClose => Remaining::UntilClose,
    };
    Body::Stream(StreamBody {
        conn: Some(conn),
        remaining,
        reusable,
        on_end: Some(Box::new(on_end)),
    })
}

impl StreamBody {
    fn finish(&mut self) {
        if let (Some(conn), Some(on_end)) = (self.conn.take(), self.on_end.take())
            && self.reusable
            && conn.buf.is_empty()
        {
            on_end(conn.shrink());
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.remaining {
                Remaining::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Remaining::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Remaining::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(d))),
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Remaining::UntilClose => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                    }
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(READ_CHUNK);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            )) {
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(match self.remaining {
                        Remaining::UntilClose => None,
                        _ => Some(Err(H1Error::Truncated)),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => s.poll_data(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Stream(s) => s.conn.is_none() || matches!(s.remaining, Remaining::Length(0)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(StreamBody {
                remaining: Remaining::Length(n),
                ..
            }) => SizeHint::with_exact(*n),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split_every: usize) -> Result<(Vec<u8>, bool), H1Error> {
        let mut dec = ChunkDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split_every.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End => return Ok((out, buf.is_empty())),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in [1, 2, 3, 7, wire.len()] {
            let (body, exact_end) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"hello, world", "split every {split}");
            assert!(exact_end, "nothing after the end remains, split {split}");
        }
        let (body, _) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(body, b"0123456789", "hex sizes are read as hex");
        let (_, ended) = decode_all(b"5\r\nhel", 64).unwrap();
        assert!(!ended, "an unfinished body does not end");
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: y\n",
        ] {
            assert!(
                matches!(decode_all(bad, 64), Err(H1Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn head(wire: &str, head_request: bool) -> (Head, usize) {
        parse_head(wire.as_bytes(), head_request).unwrap().unwrap()
    }

    #[test]
    fn connection_management_headers_are_acted_on_and_left_out_unless_they_name_headers() {
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\nX-A: b\r\n\r\n",
            false,
        );
        assert!(h.reusable);
        let names: Vec<&str> = h.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-length", "x-a"]);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive , CLOSE\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!h.reusable, "close anywhere in the list counts");
        assert!(h.response.headers().get(header::CONNECTION).is_none());
        // Naming a header: kept, so the proxy drops the named one too.
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        assert_eq!(h.response.headers()[header::CONNECTION], "close, X-Secret");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (h, n) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
            false,
        );
        assert_eq!(n, 51 - 5);
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        assert_eq!(h.response.headers()["x-a"], "b");
        let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        let (h, _) = head("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Empty, true));
        let (h, _) = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!(
            (h.framing, h.reusable),
            (Framing::Chunked, false),
            "both: chunks win, connection closed"
        );
        assert!(
            h.response.headers().get(header::CONTENT_LENGTH).is_none(),
            "the overridden length is not forwarded"
        );
        let (h, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Length(2), false));
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false);
        assert!(!h.reusable, "HTTP/1.0 connections are not reused");
        let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Length(4));
        let (h, _) = head("HTTP/1.1 100 Continue\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn invalid_response_heads_are_refused_and_partial_ones_wait() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_head(bad.as_bytes(), false),
                    Err(H1Error::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

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
