//! Gateway API mode's writes: the status of tether's GatewayClasses, Gateways and the
//! HTTPRoutes attached to them, by one replica only.
//!
//! Every replica routes and computes status (the pure
//! [`super::controller::status`]); only the one holding the mode's Lease (the election
//! Ingress mode uses too, [`crate::election`]) writes it, so two tethers never fight
//! over an object's conditions. The holder writes, when it becomes the holder and after
//! every burst of changes, the status updates the controller computed: only objects
//! whose status differs from what they should say, so a write comes back as a watch
//! event, is found equal, and writes nothing (no loop).
//!
//! Writes are JSON merge patches on the `/status` subresource. tether owns the whole
//! status of its GatewayClasses and Gateways. An HTTPRoute's `parents` is shared with
//! other controllers, and a merge patch replaces a list whole, so the patch carries the
//! resourceVersion the list was read at: if another controller wrote in between, the
//! API answers 409 Conflict, nothing is lost, and the watch event of that write brings
//! a fresh computation. (Server-side apply would merge `parents` by key instead, but
//! the CRD declares `parents` an atomic list, so it would not spare the read.)
//!
//! Failed writes are retried with backoff; errors only log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::api::{Gateway, GatewayClass, HTTPRoute};
use super::controller::StatusUpdate;
use crate::config::GatewaySettings;
use crate::election::{field_manager, Elector, Writes};

/// What a status write ran into.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A status could not be patched.
    #[error("status of {object}: {source}")]
    Status {
        /// `Kind namespace/name`.
        object: String,
        /// What the API said.
        source: kube::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes Gateway API status while this replica holds the Lease.
pub struct Writer {
    /// The API client.
    pub client: Client,
    /// `[kubernetes.gateway]`.
    pub settings: GatewaySettings,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// First retry delay after an API error.
    pub backoff: Duration,
}

impl Writer {
    /// Runs until dropped (which releases the Lease), writing the updates published on
    /// `updates`.
    pub async fn run(self, updates: watch::Receiver<Arc<Vec<StatusUpdate>>>) {
        let elector = Elector {
            client: self.client.clone(),
            lease: self.settings.lease.clone(),
            identity: self.identity.clone(),
            backoff: self.backoff,
        };
        elector.lead("gateway api status", &self, updates).await;
    }

    /// Patches one object's status, unless this term wrote it at the same
    /// resourceVersion already (its echo is on its way).
    async fn write_one(&self, update: &StatusUpdate, written: &mut Written) -> Result<()> {
        let (object, version) = describe(update);
        if written.get(&object) == Some(&version) {
            return Ok(());
        }
        let params = PatchParams {
            field_manager: Some(field_manager(&self.identity)),
            ..PatchParams::default()
        };
        let result = match update {
            StatusUpdate::GatewayClass { name, status, .. } => {
                let api: Api<GatewayClass> = Api::all(self.client.clone());
                let patch = json!({ "status": status });
                api.patch_status(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            StatusUpdate::Gateway {
                namespace,
                name,
                status,
                ..
            } => {
                let api: Api<Gateway> = Api::namespaced(self.client.clone(), namespace);
                let mut status = serde_json::to_value(status).unwrap_or(Value::Null);
                if status.get("addresses").is_none() {
                    // No address configured (any more): remove one written before.
                    status["addresses"] = Value::Null;
                }
                let patch = json!({ "status": status });
                api.patch_status(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            StatusUpdate::HTTPRoute {
                namespace,
                name,
                version,
                status,
            } => {
                let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), namespace);
                let mut patch = json!({ "status": { "parents": status.parents } });
                if let Some(v) = version {
                    patch["metadata"] = json!({ "resourceVersion": v });
                }
                api.patch_status(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(%object, "gateway api status written");
                written.insert(object, version);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Changed since it was read: the change's watch event recomputes.
                tracing::debug!(%object, "gateway api status: changed meanwhile; recomputing");
                Ok(())
            }
            Err(source) => Err(Error::Status { object, source }),
        }
    }
}

impl Writes for Writer {
    type Snapshot = Vec<StatusUpdate>;
    type Written = Written;
    type Error = Error;

    async fn write(&self, snapshot: &Vec<StatusUpdate>, written: &mut Written) -> Vec<Error> {
        // Objects up to date are forgotten: a later update is computed from a newer
        // resourceVersion than any written.
        let pending: std::collections::BTreeSet<String> =
            snapshot.iter().map(|u| describe(u).0).collect();
        written.retain(|k, _| pending.contains(k));
        let mut errors = Vec::new();
        for u in snapshot {
            if let Err(e) = self.write_one(u, written).await {
                errors.push(e);
            }
        }
        errors
    }
}

/// `Kind namespace/name` → the resourceVersion whose status this term wrote.
type Written = BTreeMap<String, Option<String>>;

/// `Kind namespace/name` and the resourceVersion an update was computed from.
fn describe(update: &StatusUpdate) -> (String, Option<String>) {
    match update {
        StatusUpdate::GatewayClass { name, version, .. } => {
            (format!("GatewayClass {name}"), version.clone())
        }
        StatusUpdate::Gateway {
            namespace,
            name,
            version,
            ..
        } => (format!("Gateway {namespace}/{name}"), version.clone()),
        StatusUpdate::HTTPRoute {
            namespace,
            name,
            version,
            ..
        } => (format!("HTTPRoute {namespace}/{name}"), version.clone()),
    }
}
