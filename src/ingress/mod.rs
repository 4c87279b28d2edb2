//! Kubernetes Ingress: what tether makes of Ingress objects written for ingress-nginx.
//!
//! `annotations` is the one mapping of ingress-nginx annotations onto tether's affinity
//! settings, with a verdict for every annotation (mapped, approximated, unsupported),
//! so no annotation is ever dropped without a word. `migrate` uses it to turn Ingress
//! manifests into Gateway API objects and tether.toml offline (`tether migrate`), and
//! `controller` (Ingress mode) routes the live Ingresses of tether's IngressClasses
//! through the same translation ([`migrate::compile`]). `status` writes their
//! `status.loadBalancer` and Events from the one replica holding a Lease.

pub mod annotations;
pub mod controller;
pub mod migrate;
pub mod status;
