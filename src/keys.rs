//! The key ring: HMAC-SHA256 keys that sign and verify affinity cookies.
//!
//! The first key signs; every key verifies, so a key can be rotated in by putting a new
//! one first and rotated out later without breaking a live session. Keys are keyed once
//! here and cloned per use: cloning an `Hmac` copies its precomputed inner and outer pads,
//! which is cheaper than re-keying on every request.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::KeyMaterial;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the endpoint-token derivation, so a token can never be confused
/// with (or used to forge) a cookie MAC made with the same key.
const TOKEN_CONTEXT: &[u8] = b"tether endpoint token v1\0";

/// One signing key, ready to use.
#[derive(Clone)]
pub struct SigningKey {
    /// The key id as written into cookies.
    id: Box<[u8]>,
    /// The keyed MAC state, cloned for each signature.
    mac: HmacSha256,
}

impl SigningKey {
    /// The key id bytes.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// A fresh MAC keyed with this key.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

/// The ordered set of keys; index 0 signs.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    /// True when the ring was generated at start because the config had no keys.
    ephemeral: bool,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(&k.id).into_owned())
            .collect();
        f.debug_struct("KeyRing")
            .field("ids", &ids)
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

impl KeyRing {
    /// Builds the ring from validated key material; with none, generates an ephemeral key.
    pub fn from_config(keys: &[KeyMaterial]) -> Self {
        if keys.is_empty() {
            return Self::ephemeral();
        }
        Self {
            keys: keys
                .iter()
                .map(|k| Self::key(k.id.as_bytes(), &k.secret))
                .collect(),
            ephemeral: false,
        }
    }

    /// A ring holding one random key that lives only as long as this process.
    pub fn ephemeral() -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            keys: vec![Self::key(b"ephemeral", &secret)],
            ephemeral: true,
        }
    }

    fn key(id: &[u8], secret: &[u8]) -> SigningKey {
        SigningKey {
            id: id.into(),
            // HMAC accepts keys of any length, so this cannot fail.
            mac: match HmacSha256::new_from_slice(secret) {
                Ok(m) => m,
                Err(_) => unreachable!("hmac takes keys of any length"),
            },
        }
    }

    /// Whether this ring was generated because no keys were configured.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a ring always holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs new cookies.
    pub fn signer(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The id of the key at `index`.
    pub fn id(&self, index: usize) -> Option<&[u8]> {
        self.keys.get(index).map(|k| k.id())
    }

    /// Finds a key by id, with its index (0 = the signing key).
    pub fn find(&self, id: &[u8]) -> Option<(usize, &SigningKey)> {
        self.keys.iter().enumerate().find(|(_, k)| &*k.id == id)
    }

    /// The opaque token that names an endpoint in cookies signed with key `index`.
    ///
    /// A keyed hash of the endpoint identity: stable across replicas and restarts that
    /// share the key, and meaningless to anyone without it, so it reveals neither the
    /// pod's address nor its name and cannot be forged to pin a chosen pod.
    pub fn endpoint_token(&self, index: usize, identity: &str) -> u64 {
        let mut mac = self.keys[index].mac();
        mac.update(TOKEN_CONTEXT);
        mac.update(identity.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first)
    }
}
