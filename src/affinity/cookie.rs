//! The affinity cookie codec: a compact, signed, opaque session token.
//!
//! Wire layout, version 2 (then base64url without padding):
//!
//! ```text
//! version u8 = 2 | key id length u8 | key id (1..=16 bytes)
//! | session id (16 bytes) | endpoint token (u64 BE)
//! | issued, placed, seen (u32 BE each, unix seconds)
//! | HMAC-SHA256 over all of the above, truncated to 16 bytes
//! ```
//!
//! `issued` is when the session started (absolute timeout), `placed` when it was pinned
//! to its current endpoint (rebalancing moves only sessions placed before an endpoint
//! was added), `seen` its last activity as of the last refresh (idle timeout, live-session
//! accounting, gradual rebalancing). All three are signed, so a client cannot extend or
//! re-date its session. Version 1 cookies (one u64 `issued`) still decode, with
//! `placed = seen = issued`, so upgrading tether keeps every session.
//!
//! At most 70 raw bytes, 94 characters encoded. Decoding never allocates, rejects
//! anything longer than [`MAX_ENCODED_LEN`] before looking at it, and verifies the tag in
//! constant time. Every failure is an [`Invalid`] reason: the caller treats the request as
//! a new session, never as an error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;

use crate::config::MAX_KEY_ID_BYTES;
use crate::keys::{KeyRing, SigningKey};

/// Format version written as the first byte.
pub const VERSION: u8 = 2;
/// Truncated MAC length: 128 bits, well above the 80-bit floor of RFC 2104 §5.
pub const TAG_LEN: usize = 16;
const FIXED_LEN: usize = 1 + 1 + 16 + 8 + 12 + TAG_LEN;
const FIXED_LEN_V1: usize = 1 + 1 + 16 + 8 + 8 + TAG_LEN;
/// Version 2 is the longer layout (three u32 times against version 1's one u64).
const MAX_RAW_LEN: usize = FIXED_LEN + MAX_KEY_ID_BYTES;
/// Longest cookie value accepted (and the longest ever produced).
pub const MAX_ENCODED_LEN: usize = MAX_RAW_LEN.div_ceil(3) * 4;

/// A 128-bit random session id: survives failover, so the app can find the session's
/// state in an external store after a re-pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Lowercase hex, as sent to backends in `x-tether-session`.
    pub fn to_hex(&self) -> HexId {
        // Two digits per byte from one table, rather than a digit at a time: this runs
        // on every request.
        const PAIRS: [[u8; 2]; 256] = {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut t = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
                i += 1;
            }
            t
        };
        let mut out = [0u8; 32];
        for (pair, &b) in out.chunks_exact_mut(2).zip(&self.0) {
            pair.copy_from_slice(&PAIRS[b as usize]);
        }
        HexId(out)
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

/// A session id rendered as 32 hex digits, on the stack.
#[derive(Debug, Clone, Copy)]
pub struct HexId([u8; 32]);

impl HexId {
    /// The digits as bytes (what goes on the wire).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// What a cookie asserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The session.
    pub session: SessionId,
    /// Keyed hash of the endpoint identity the session is pinned to.
    pub endpoint_token: u64,
    /// When the session started (unix seconds); kept across re-pins.
    pub issued: u64,
    /// When the session was pinned to its current endpoint (unix seconds).
    pub placed: u64,
    /// The session's last activity as of the last cookie refresh (unix seconds).
    pub seen: u64,
}

/// A cookie that verified, and which key verified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index of the verifying key in the ring (0 = current signing key).
    pub key_index: usize,
    /// The claims.
    pub claims: Claims,
}

/// The last cookie value that verified on one client connection, with its result.
///
/// A client sends the same cookie on every request of a keep-alive connection, and the
/// same bytes under the same key ring verify the same way, so the base64 decode and the
/// HMAC run once per value instead of once per request. The memo holds its key ring,
/// so a reloaded ring (a new `Arc`) never matches it; expiry is still checked on every
/// request by the caller, and a memo is never shared between connections.
#[derive(Debug, Default)]
pub struct Memo {
    last: Option<(Box<[u8]>, std::sync::Arc<KeyRing>, Verified)>,
}

impl Memo {
    /// [`decode`], answered from the memo when `value` and `keys` are the last ones
    /// that verified.
    pub fn decode(
        &mut self,
        keys: &std::sync::Arc<KeyRing>,
        value: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Verified, Invalid> {
        let value = value.as_ref();
        if let Some((v, k, verified)) = &self.last {
            if **v == *value && std::sync::Arc::ptr_eq(k, keys) {
                return Ok(*verified);
            }
        }
        let verified = decode(keys, value)?;
        self.last = Some((value.into(), keys.clone(), verified));
        Ok(verified)
    }
}

/// A [`Memo`] shared by the concurrent streams of one HTTP/2 connection: lock-free (one
/// atomic load to answer, one allocation only when the value changes), so the streams
/// of a connection that all carry the same cookie verify it once.
#[derive(Debug, Default)]
pub struct SharedMemo {
    last: arc_swap::ArcSwapOption<(Box<[u8]>, std::sync::Arc<KeyRing>, Verified)>,
}

impl SharedMemo {
    /// [`decode`], answered from the memo when `value` and `keys` are the last ones
    /// that verified on this connection.
    pub fn decode(
        &self,
        keys: &std::sync::Arc<KeyRing>,
        value: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Verified, Invalid> {
        let value = value.as_ref();
        if let Some(last) = &*self.last.load() {
            let (v, k, verified) = &**last;
            if **v == *value && std::sync::Arc::ptr_eq(k, keys) {
                return Ok(*verified);
            }
        }
        let verified = decode(keys, value)?;
        self.last.store(Some(std::sync::Arc::new((
            value.into(),
            keys.clone(),
            verified,
        ))));
        Ok(verified)
    }
}

/// Why a cookie value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not base64, wrong length, wrong version or inconsistent layout.
    #[error("malformed cookie")]
    Malformed,
    /// Signed with a key id the ring does not hold.
    #[error("unknown key id")]
    UnknownKey,
    /// The tag does not match: tampered or forged.
    #[error("bad signature")]
    BadSignature,
    /// Genuine, but past the idle or absolute session timeout.
    #[error("expired session")]
    Expired,
}

/// Encodes and signs claims with `key`.
pub fn encode(key: &SigningKey, claims: &Claims) -> String {
    let mut out = Vec::with_capacity(MAX_ENCODED_LEN);
    encode_into(key, claims, &mut out);
    // base64 is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// [`encode`], appending the value to `out` (the HTTP/1 codec writes it straight into the
/// `Set-Cookie` line, with no string of its own).
pub fn encode_into(key: &SigningKey, claims: &Claims, out: &mut Vec<u8>) {
    let id = key.id();
    let mut raw = [0u8; MAX_RAW_LEN];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        raw[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(&[VERSION, id.len() as u8]);
    put(id);
    put(&claims.session.0);
    put(&claims.endpoint_token.to_be_bytes());
    for t in [claims.issued, claims.placed, claims.seen] {
        // u32 seconds last until 2106.
        put(&(t.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    }
    let mut mac = key.mac();
    mac.update(&raw[..n]);
    let tag = mac.finalize().into_bytes();
    raw[n..n + TAG_LEN].copy_from_slice(&tag[..TAG_LEN]);
    n += TAG_LEN;
    let start = out.len();
    let len = base64::encoded_len(n, false).unwrap_or(0);
    out.resize(start + len, 0);
    if URL_SAFE_NO_PAD
        .encode_slice(&raw[..n], &mut out[start..])
        .is_err()
    {
        out.truncate(start);
    }
}

/// Decodes and verifies a cookie value against every key in the ring.
pub fn decode(keys: &KeyRing, value: &(impl AsRef<[u8]> + ?Sized)) -> Result<Verified, Invalid> {
    let value = value.as_ref();
    if value.len() > MAX_ENCODED_LEN || value.len() < FIXED_LEN_V1 {
        return Err(Invalid::Malformed);
    }
    let mut raw = [0u8; MAX_RAW_LEN + 3];
    let n = URL_SAFE_NO_PAD
        .decode_slice(value, &mut raw)
        .map_err(|_| Invalid::Malformed)?;
    let raw = &raw[..n];
    let fixed = match raw.first() {
        Some(&VERSION) => FIXED_LEN,
        Some(1) => FIXED_LEN_V1,
        _ => return Err(Invalid::Malformed),
    };
    if n < fixed + 1 {
        return Err(Invalid::Malformed);
    }
    let id_len = raw[1] as usize;
    if id_len == 0 || id_len > MAX_KEY_ID_BYTES || n != fixed + id_len {
        return Err(Invalid::Malformed);
    }
    let id = &raw[2..2 + id_len];
    let (key_index, key) = keys.find(id).ok_or(Invalid::UnknownKey)?;
    let (body, tag) = raw.split_at(n - TAG_LEN);
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_truncated_left(tag)
        .map_err(|_| Invalid::BadSignature)?;
    let rest = &body[2 + id_len..];
    let mut session = [0u8; 16];
    session.copy_from_slice(&rest[..16]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&rest[16..24]);
    let endpoint_token = u64::from_be_bytes(word);
    let (issued, placed, seen) = if raw[0] == VERSION {
        let t = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&rest[24 + 4 * i..28 + 4 * i]);
            u64::from(u32::from_be_bytes(w))
        };
        (t(0), t(1), t(2))
    } else {
        word.copy_from_slice(&rest[24..32]);
        let issued = u64::from_be_bytes(word);
        (issued, issued, issued)
    };
    Ok(Verified {
        key_index,
        claims: Claims {
            session: SessionId(session),
            endpoint_token,
            issued,
            placed,
            seen,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_render_as_32_lowercase_hex_digits_in_byte_order() {
        for n in [
            0u128,
            1,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            u128::MAX,
        ] {
            let id = SessionId(n.to_be_bytes());
            assert_eq!(id.to_hex().as_str(), format!("{n:032x}"));
            assert_eq!(id.to_hex().as_bytes(), format!("{n:032x}").as_bytes());
        }
    }
    use crate::config::KeyMaterial;

    fn ring(ids: &[&str]) -> KeyRing {
        KeyRing::from_config(
            &ids.iter()
                .map(|id| KeyMaterial {
                    id: id.to_string(),
                    secret: format!("secret-of-{id}-padded-to-32-bytes!!").into_bytes(),
                    file: None,
                })
                .collect::<Vec<_>>(),
        )
    }

    fn claims() -> Claims {
        Claims {
            session: SessionId([7; 16]),
            endpoint_token: 0x0123_4567_89ab_cdef,
            issued: 1_790_000_000,
            placed: 1_790_000_100,
            seen: 1_790_000_200,
        }
    }

    #[test]
    fn memo_answers_only_for_the_same_value_under_the_same_ring() {
        let old = std::sync::Arc::new(ring(&["k1"]));
        let value = encode(old.signer(), &claims());
        let mut memo = Memo::default();
        assert_eq!(memo.decode(&old, &value).unwrap().claims, claims());
        assert_eq!(memo.decode(&old, &value).unwrap().claims, claims());
        // One flipped character: not the memoized value, verified and refused.
        let mut forged = value.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(memo.decode(&old, &forged).is_err());
        // The key was rotated out by a reload: the memoized value no longer verifies.
        let rotated = std::sync::Arc::new(ring(&["k2"]));
        assert_eq!(memo.decode(&rotated, &value), Err(Invalid::UnknownKey));
    }

    #[test]
    fn round_trips_and_fits_in_120_bytes() {
        let keys = ring(&["k1"]);
        let v = encode(keys.signer(), &claims());
        assert!(v.len() <= 120, "{} bytes", v.len());
        assert_eq!(
            decode(&keys, &v),
            Ok(Verified {
                key_index: 0,
                claims: claims()
            })
        );
        let longest = ring(&["sixteen-chars-id"]);
        assert!(encode(longest.signer(), &claims()).len() <= 120);
        assert!(encode(longest.signer(), &claims()).len() <= MAX_ENCODED_LEN);
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let keys = ring(&["k1"]);
        let v = encode(keys.signer(), &claims());
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..v.len() {
            for &c in alphabet {
                let mut bytes = v.clone().into_bytes();
                if bytes[i] == c {
                    continue;
                }
                bytes[i] = c;
                let tampered = String::from_utf8(bytes).unwrap();
                assert!(decode(&keys, &tampered).is_err(), "accepted {tampered}");
            }
        }
    }

    #[test]
    fn truncated_oversized_and_garbage_values_are_malformed() {
        let keys = ring(&["k1"]);
        let v = encode(keys.signer(), &claims());
        for bad in [
            "",
            "not base64 !!",
            &v[..v.len() - 1],
            &v[..v.len() - 4],
            &"A".repeat(5000),
            &format!("{v}AAAA"),
        ] {
            assert!(decode(&keys, bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn later_keys_verify_and_unknown_keys_do_not() {
        let old = ring(&["k0"]);
        let v = encode(old.signer(), &claims());
        assert_eq!(decode(&ring(&["k1", "k0"]), &v).map(|v| v.key_index), Ok(1));
        assert_eq!(decode(&ring(&["k1"]), &v), Err(Invalid::UnknownKey));
        // Same id, different secret: a forgery attempt.
        let forged = KeyRing::from_config(&[KeyMaterial {
            id: "k0".into(),
            secret: vec![9; 32],
            file: None,
        }]);
        assert_eq!(decode(&forged, &v), Err(Invalid::BadSignature));
    }

    #[test]
    fn version_1_cookies_still_decode() {
        let keys = ring(&["k1"]);
        let mut raw = vec![1u8, 2, b'k', b'1'];
        raw.extend_from_slice(&[7; 16]);
        raw.extend_from_slice(&42u64.to_be_bytes());
        raw.extend_from_slice(&1_790_000_000u64.to_be_bytes());
        let mut mac = keys.signer().mac();
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        let v = decode(&keys, &URL_SAFE_NO_PAD.encode(&raw)).unwrap();
        assert_eq!(v.claims.endpoint_token, 42);
        assert_eq!(
            (v.claims.issued, v.claims.placed, v.claims.seen),
            (1_790_000_000, 1_790_000_000, 1_790_000_000)
        );
        raw[5] ^= 1;
        assert!(decode(&keys, &URL_SAFE_NO_PAD.encode(&raw)).is_err());
    }

    #[test]
    fn endpoint_tokens_are_keyed() {
        let a = ring(&["k1"]);
        let b = ring(&["k2"]);
        assert_eq!(a.endpoint_token(0, "pod-a"), a.endpoint_token(0, "pod-a"));
        assert_ne!(a.endpoint_token(0, "pod-a"), a.endpoint_token(0, "pod-b"));
        assert_ne!(a.endpoint_token(0, "pod-a"), b.endpoint_token(0, "pod-a"));
    }
}
