//! Static endpoints from the config file.

use std::sync::Arc;

use super::Discovery;
use crate::backend::{Backend, EndpointSpec, EndpointState};
use crate::config::StaticEndpoint;

/// The endpoints listed in a `[[backend]]`.
#[derive(Debug, Clone)]
pub struct StaticList {
    /// The configured endpoints.
    pub endpoints: Vec<StaticEndpoint>,
    /// Whether the backend speaks h2c to them.
    pub h2c: bool,
}

impl StaticList {
    /// The endpoint specs: identity is the configured name, else the address.
    pub fn specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .map(|e| EndpointSpec {
                identity: e
                    .name
                    .clone()
                    .unwrap_or_else(|| e.address.to_string())
                    .into(),
                address: e.address,
                weight: e.weight,
                state: EndpointState::Ready,
                h2c: self.h2c,
            })
            .collect()
    }
}

impl Discovery for StaticList {
    async fn run(self, backend: Arc<Backend>) {
        backend.publish(self.specs());
    }
}
