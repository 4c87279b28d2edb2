//! Gateway API: the typed objects tether reads and writes, and the GEP-1619 rules that
//! turn an HTTPRoute rule's `sessionPersistence` into tether's affinity settings.
//!
//! `api` holds serde structs for the fields tether uses (the `gateway-api` crate is built on
//! an older kube / k8s-openapi than tether's); `session` holds the rules from GEP-1619
//! that every producer of affinity settings shares: `tether migrate` and the Gateway API
//! controller. `controller` is Gateway API mode: it watches GatewayClasses, Gateways and
//! HTTPRoutes and compiles the routes attached to tether's Gateways into backends and
//! routes the server merges with its config file, and computes the status of what it
//! serves; `status` writes that status from the replica holding the Lease.

pub mod api;
pub mod controller;
pub mod session;
pub mod status;
