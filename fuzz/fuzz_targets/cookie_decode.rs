//! Any bytes as an affinity cookie value: decoding never panics, and whatever verifies
//! re-encodes to a cookie that verifies to the same claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::affinity::{cookie, KeyRing};
use tether::config::KeyMaterial;

fuzz_target!(|data: &[u8]| {
    let keys = KeyRing::from_config(&[
        KeyMaterial { id: "k1".into(), secret: vec![1; 32], file: None },
        KeyMaterial { id: "k2".into(), secret: vec![2; 32], file: None },
    ]);
    let Ok(value) = std::str::from_utf8(data) else { return };
    if let Ok(v) = cookie::decode(&keys, value) {
        let again = cookie::encode(keys.signer(), &v.claims);
        let back = cookie::decode(&keys, &again).expect("a re-encoded cookie verifies");
        assert_eq!(back.claims, v.claims);
    }
});
