//! Gateway API: the typed objects tether reads and writes, and the GEP-1619 rules that
//! turn an HTTPRoute rule's `sessionPersistence` into tether's affinity settings.
//!
//! `api` holds serde structs for the fields tether uses (the `gateway-api` crate is built on
//! an older kube / k8s-openapi than tether's); `session` holds the rules from GEP-1619
//! that every producer of affinity settings shares: `tether migrate` today, the Gateway
//! API controller later. Nothing here talks to a cluster.

pub mod api;
pub mod session;
