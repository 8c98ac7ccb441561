//! The request id every proxied request carries upstream and back (`X-Request-Id`): the client's own
//! when it is a sane token, else a new UUID v4 from a cheap per-thread generator.
//!
//! Exists apart from the phases because it is made before any of them runs (the refusals carry
//! it too) and its generator has its own reasoning and test.

use std::cell::Cell;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header::HeaderValue as HV};

use crate::outgoing::X_REQUEST_ID;

/// The request id: the client's `X-Request-Id` when it is a sane token (at most 128 letters,
/// digits and `-_.:+/=@`, as UUIDs, ULIDs and base64 ids are), else a new UUID v4. Quotes, angle
/// brackets, back slashes and commas are refused: the id is written to logs, spans and
/// upstream headers, where they could break the format or split it into a list.
pub(crate) fn request_id_of(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        let sane = |c: &u8| c.is_ascii_alphanumeric() || b"-_.:+/=@".contains(c);
        if !b.is_empty() && b.len() <= 128 && b.iter().all(sane) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(id_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    // One allocation, and clones (request upstream, response) only count references.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
        .unwrap_or_else(|_| HV::from_static("invalid-request-id"))
}

thread_local! {
    /// State of this thread's request id sequence, seeded from the OS on first use.
    static ID_STATE: Cell<u64> = Cell::new(rand::random());
}

/// 16 bytes for a new request id: two steps of SplitMix64 over a per-thread state seeded from the
/// OS. Request ids correlate logs and spans, they are not secrets; SplitMix64's outputs are
/// distinct over its 2^64 period, and a random seed per thread keeps threads and restarts apart.
/// (The thread's ChaCha generator behind `rand::random` cost a fifth of the id.)
fn id_bytes() -> [u8; 16] {
    fn step(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = ID_STATE
        .try_with(|s| (step(s), step(s)))
        .unwrap_or_else(|_| (rand::random(), rand::random()));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids_and_sane_client_ids_are_kept() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let id = request_id_of(&HeaderMap::new());
            let u = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(u.get_version_num(), 4, "{u}");
            assert!(seen.insert(u), "repeated id {u}");
        }
        let other = std::thread::spawn(|| request_id_of(&HeaderMap::new()))
            .join()
            .unwrap();
        assert!(!seen.contains(&uuid::Uuid::parse_str(other.to_str().unwrap()).unwrap()));
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HV::from_static("abc-123"));
        assert_eq!(request_id_of(&h), "abc-123");
        h.insert(X_REQUEST_ID, HV::from_static("a,b"));
        assert_ne!(request_id_of(&h), "a,b");
    }
}
