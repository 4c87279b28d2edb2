//! Endpoint discovery: where a backend's endpoints come from.
//!
//! A source turns its view of the world into complete endpoint lists and hands each to
//! [`Backend::publish`], which rebuilds and swaps the snapshot. Sources never edit a
//! snapshot in place and never run on the request path. Static lists come from the
//! config file ([`static_list`]); the Kubernetes EndpointSlice watcher is the other
//! source. [`objects`] watches whole kinds of objects for the Ingress and Gateway API
//! controllers.

pub mod kubernetes;
pub mod objects;
pub mod static_list;

use std::future::Future;
use std::sync::Arc;

use crate::backend::Backend;

/// A source of endpoints for one backend.
pub trait Discovery: Send + 'static {
    /// Publishes the endpoint set into `backend`, and keeps publishing changes until the
    /// returned future is dropped (a static source publishes once and returns).
    fn run(self, backend: Arc<Backend>) -> impl Future<Output = ()> + Send;
}
