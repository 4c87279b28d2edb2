//! Placement: which endpoint owns a session.
//!
//! New sessions and failovers are placed on a consistent-hash table built once per
//! endpoint change and only read per request. Everything that must agree across tether
//! replicas (the key hash, the table) is computed with [`hash`]'s fixed, specified
//! functions, never with the process-seeded hashers used for in-process maps.

pub mod hash;
pub mod load;
pub mod ring;

pub use load::{RateLimiter, SessionCounter};
pub use ring::{Member, Ring};
