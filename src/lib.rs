//! tether: a sticky-session aware L7 reverse proxy for Kubernetes.
//!
//! The crate is organised one module per concern, in the order a request meets them:
//! [`server`] accepts connections, [`proxy`] routes, decides and forwards (one exchange
//! in `proxy::exchange`, driven by the HTTP/1 codec and the HTTP/2 service), [`affinity`] reads and
//! mints the signed session cookie under the [`keys`] ring, [`balance`] places sessions
//! on a replica-stable consistent-hash table, [`backend`] holds the immutable
//! per-backend snapshot the request path reads, [`upstream`] talks to the pods,
//! [`discovery`] feeds endpoints into the snapshots, [`health`] tracks passive failures,
//! [`stats`] counts and [`metrics`] renders the counts, [`history`] samples them for
//! the dashboard's charts, and [`admin`] answers operators. [`http`] holds the message
//! rules every path shares and [`fault`] says whose fault a failure was. [`config`]
//! turns a TOML file into the validated settings all of them start from. [`gateway`]
//! holds the typed Gateway API objects and GEP-1619's rules, and [`ingress`] what tether
//! makes of ingress-nginx Ingresses (`tether migrate`).
//!
//! Dependencies point one way, down the layers: `server` → `admin` → `proxy` /
//! `history` → `affinity` / `metrics` → `backend` → `upstream` → `http`, with `stats`, `keys`,
//! `fault`, `retry`, `config`, `clock`, `balance` and `health` below them;
//! `ingress` → `gateway` / `config` sit beside the request path and nothing on it uses
//! them; `tests/layout.rs` holds the crate to it.
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
pub mod election;
pub mod fault;
pub mod gateway;
pub mod health;
pub mod history;
pub mod http;
pub mod ingress;
pub mod io;
pub mod keys;
pub mod metrics;
pub mod proxy;
pub mod retry;
pub mod server;
pub mod sni;
pub mod stats;
pub mod tls;
pub mod upstream;

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
