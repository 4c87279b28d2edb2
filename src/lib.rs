//! tether: a sticky-session aware L7 reverse proxy for Kubernetes.
//!
//! The crate is organised one module per concern, in the order a request meets them:
//! [`server`] accepts connections, [`proxy`] routes and forwards, [`affinity`] reads and
//! mints the signed session cookie, [`balance`] places sessions on a replica-stable
//! consistent-hash table, [`backend`] holds the immutable per-backend snapshot the
//! request path reads, [`discovery`] feeds endpoints into it, [`health`] tracks passive
//! failures, and [`admin`] answers operators. [`config`] turns a TOML file into the
//! validated settings all of them start from.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod affinity;
pub mod backend;
pub mod balance;
pub mod clock;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod io;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod tls;

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A deterministic xorshift picker for generated-input tests: each call returns a
    /// number in `0..n`.
    pub fn picker(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }
}
