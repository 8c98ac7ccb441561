//! The response body on the lean client: whole when it already arrived with the head (the usual
//! small answer: the connection goes back to the pool at once), else streamed from the connection
//! as the client reads it, by length, by chunks or until close.
//!
//! Exists as the one place that decides when a connection may go back to the pool: only after a
//! body read exactly to its end on a reusable connection.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::{io::AsyncRead, net::TcpStream};

use super::{ChunkDecoder, Conn, Decoded, Framing, H1Error};

/// Read size while streaming a body.
const READ_CHUNK: usize = 16 * 1024;

/// Where a streamed body stands.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkDecoder),
    UntilClose,
}

/// A response body read from the connection as the client consumes it. When it has been read
/// exactly to its end on a reusable connection, `on_end` gets the connection back.
pub struct StreamBody<IO = TcpStream> {
    conn: Option<Conn<IO>>,
    remaining: Remaining,
    reusable: bool,
    on_end: Option<Box<dyn FnOnce(Conn<IO>) + Send>>,
}

impl<IO> std::fmt::Debug for StreamBody<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBody")
            .field("remaining", &self.remaining)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

/// The body of a response on the lean client.
#[derive(Debug)]
pub enum Body<IO = TcpStream> {
    /// Completely received already (or empty); the connection was released.
    Full(Option<Bytes>),
    /// Still arriving.
    Stream(StreamBody<IO>),
}

/// Turns a parsed head's framing into its body: a body already complete in the read buffer is
/// taken out whole and the connection handed to `on_end` right away.
pub fn body<IO>(
    mut conn: Conn<IO>,
    framing: Framing,
    reusable: bool,
    on_end: impl FnOnce(Conn<IO>) + Send + 'static,
) -> Body<IO> {
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

impl<IO: AsyncRead + Unpin> StreamBody<IO> {
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

impl<IO: AsyncRead + Unpin> http_body::Body for Body<IO> {
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
