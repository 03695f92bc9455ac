//! Page tokens: opaque to clients, checked on the way back in.
//!
//! A token carries which listing it belongs to, a fingerprint of the request's filters
//! (a token is only valid for the query that produced it), the position after the
//! last item of its page, and a checksum. Hex keeps it safe in URLs and shells.

use sha2::{Digest, Sha256};

/// Token format version.
const FORMAT: u8 = 1;
/// Bytes of checksum at the end of a token.
const CHECKSUM_LEN: usize = 8;
/// Longest token accepted, in characters.
pub const MAX_TOKEN_CHARS: usize = 1024;

/// Which listing a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Listing {
    /// ListTwins: the cursor is the last asset path of the page.
    Twins = 1,
    /// ListAudit: the cursor is the last record's sequence number (8 bytes, big endian).
    Audit = 2,
}

/// A fingerprint of a request's filters.
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

/// Encodes a token for the page after `cursor`.
pub fn encode(listing: Listing, filters: [u8; 8], cursor: &[u8]) -> String {
    let mut payload = Vec::with_capacity(2 + 8 + cursor.len() + CHECKSUM_LEN);
    payload.push(FORMAT);
    payload.push(listing as u8);
    payload.extend_from_slice(&filters);
    payload.extend_from_slice(cursor);
    let sum = checksum(&payload);
    payload.extend_from_slice(&sum);
    payload.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token of `listing` for a request with these `filters`: its cursor, or
/// why it is not acceptable (for an INVALID_ARGUMENT on `page_token`).
pub fn decode(token: &str, listing: Listing, filters: [u8; 8]) -> Result<Vec<u8>, String> {
    const GARBLED: &str = "not a page token this service issued";
    if token.len() > MAX_TOKEN_CHARS || !token.len().is_multiple_of(2) {
        return Err(GARBLED.to_string());
    }
    let mut bytes = Vec::with_capacity(token.len() / 2);
    for pair in token.as_bytes().chunks(2) {
        let hex = std::str::from_utf8(pair).map_err(|_| GARBLED.to_string())?;
        bytes.push(u8::from_str_radix(hex, 16).map_err(|_| GARBLED.to_string())?);
    }
    if bytes.len() < 2 + 8 + CHECKSUM_LEN {
        return Err(GARBLED.to_string());
    }
    let (payload, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if checksum(payload) != sum || payload[0] != FORMAT {
        return Err(GARBLED.to_string());
    }
    if payload[1] != listing as u8 {
        return Err("the token belongs to another listing".to_string());
    }
    if payload[2..10] != filters {
        return Err("the token was issued for a request with other filters".to_string());
    }
    Ok(payload[10..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let filters = fingerprint(&[b"acme", b"press"]);
        let token = encode(Listing::Twins, filters, b"acme/plant-a/line-1/press-2");
        assert_eq!(
            decode(&token, Listing::Twins, filters).unwrap(),
            b"acme/plant-a/line-1/press-2"
        );
        assert!(decode(&token, Listing::Audit, filters).is_err());
        assert!(decode(&token, Listing::Twins, fingerprint(&[b"acme", b""])).is_err());
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 20;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(
            decode(
                &String::from_utf8(tampered).unwrap(),
                Listing::Twins,
                filters
            )
            .is_err()
        );
        for garbage in ["", "zz", "abc", "not-a-token", "ééé", &"0".repeat(2000)] {
            assert!(
                decode(garbage, Listing::Twins, filters).is_err(),
                "{garbage}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_text_never_panics(token in ".{0,80}", hex in "[0-9a-f]{0,120}") {
            let filters = fingerprint(&[b"acme"]);
            let _ = decode(&token, Listing::Twins, filters);
            let _ = decode(&hex, Listing::Audit, filters);
        }

        #[test]
        fn any_cursor_round_trips(cursor in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let filters = fingerprint(&[b"x"]);
            let token = encode(Listing::Audit, filters, &cursor);
            proptest::prop_assert_eq!(decode(&token, Listing::Audit, filters).unwrap(), cursor);
        }
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
    }
}
