//! The response head: parsed with `httparse` into a `Response<()>` whose header values share one
//! buffer, and the body framing and connection reuse it implies (RFC 9112 §6.3, §9.3).
//!
//! Exists apart from the connection so the framing rules, the part a proxy most often gets wrong
//! (request smuggling lives there), are read and tested on their own.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use super::H1Error;

/// Most headers a response head may have.
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (like hyper's default read buffer limit for a head).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
