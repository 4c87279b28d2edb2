//! The replica-stable hash functions.
//!
//! Specification: XXH3-64 (xxHash 0.8, `XXH3_64bits_withSeed`) with the fixed seeds
//! below. XXH3 is defined byte-for-byte and endian-independent, so every tether build on
//! every platform maps the same input to the same value; that is what lets two replicas
//! route one cookie alike and pick the same failover target.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed for session keys ("tether\0\x01").
pub const SESSION_SEED: u64 = 0x7465_7468_6572_0001;
/// Seed for an endpoint's table offset ("tether\0\x02").
pub const OFFSET_SEED: u64 = 0x7465_7468_6572_0002;
/// Seed for an endpoint's table skip ("tether\0\x03").
pub const SKIP_SEED: u64 = 0x7465_7468_6572_0003;

/// The placement key of a session id.
#[inline]
pub fn session(id: &[u8; 16]) -> u64 {
    xxh3_64_with_seed(id, SESSION_SEED)
}

/// The placement key of an arbitrary affinity key (a header value, a client address).
#[inline]
pub fn key(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, SESSION_SEED)
}

/// An endpoint's (offset, skip) in a table of prime size `m`: its permutation of slots.
pub fn permutation(identity: &str, m: u64) -> (u64, u64) {
    let offset = xxh3_64_with_seed(identity.as_bytes(), OFFSET_SEED) % m;
    let skip = xxh3_64_with_seed(identity.as_bytes(), SKIP_SEED) % (m - 1) + 1;
    (offset, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_pinned_to_the_specification() {
        // If these change, cookies minted by older replicas land elsewhere: never change
        // them without a format version bump.
        assert_eq!(session(&[0; 16]), xxh3_64_with_seed(&[0; 16], SESSION_SEED));
        assert_eq!(xxh3_64_with_seed(b"", 0), 0x2d06_8005_38d3_94c2);
        let (o, s) = permutation("pod-a", 65537);
        assert!(o < 65537 && (1..65537).contains(&s));
    }
}
