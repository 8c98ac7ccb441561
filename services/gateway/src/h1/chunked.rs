//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from whatever bytes have
//! arrived: chunk extensions are skipped, trailers read (bounded) and dropped.
//!
//! Exists as a pure state machine over a buffer so that every read boundary can be tested
//! without a socket.

use bytes::{Buf, Bytes, BytesMut};

use super::H1Error;

/// Largest chunk trailer section accepted.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

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
}
