//! Ingress mode's writes: `status.loadBalancer` and Events, by one replica only.
//!
//! Every replica routes; only the one holding the mode's `coordination.k8s.io` Lease
//! (the election is [`crate::election`], shared with Gateway API mode) writes, so two
//! tethers never fight over an Ingress. The holder, when it becomes the holder and
//! whenever the controller's view of tether's Ingresses changes:
//!
//! - patches `status.loadBalancer.ingress` to the configured address (`ip` or
//!   `hostname`) on each Ingress whose status differs, with a JSON merge patch on the
//!   `/status` subresource. A write comes back as a watch event, finds the status
//!   equal, and writes nothing: no loop.
//! - creates one Warning Event (reason `UnsupportedAnnotation`) on the Ingress for each
//!   annotation or field tether does not honour, once per Ingress generation (the
//!   log line is written by every replica, by the controller).
//!
//! Failed writes are retried with backoff; errors only log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use super::annotations::Verdict;
use super::controller::Report;
use crate::config::IngressSettings;
pub use crate::election::identity;
use crate::election::{field_manager, Elector, LeaseSettings, Writes, COMPONENT};

/// What a write of the Lease holder ran into.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An Ingress's status could not be patched.
    #[error("status of ingress {ingress}: {source}")]
    Status {
        /// `namespace/name`.
        ingress: String,
        /// What the API said.
        source: kube::Error,
    },
    /// An Event could not be created.
    #[error("event on ingress {ingress}: {source}")]
    Event {
        /// `namespace/name`.
        ingress: String,
        /// What the API said.
        source: kube::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The reason of the Events on annotations tether does not honour.
pub const UNSUPPORTED_REASON: &str = "UnsupportedAnnotation";

/// Writes status and Events while this replica holds the Lease.
pub struct Writer {
    /// The API client.
    pub client: Client,
    /// `[kubernetes.ingress]`.
    pub settings: IngressSettings,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// First retry delay after an API error.
    pub backoff: Duration,
}

impl Writer {
    /// Runs until dropped (which releases the Lease), writing for the Ingresses
    /// published on `ours`: tether's, with their report rows.
    pub async fn run(self, ours: watch::Receiver<Arc<Vec<Report>>>) {
        let elector = Elector {
            client: self.client.clone(),
            lease: LeaseSettings {
                name: self.settings.lease_name.clone(),
                namespace: self.settings.lease_namespace.clone(),
                duration: self.settings.lease_duration,
            },
            identity: self.identity.clone(),
            backoff: self.backoff,
        };
        elector.lead("ingress status", &self, ours).await;
    }

    /// Brings status and Events up to date for `snapshot`; the errors of the writes that
    /// failed (to retry).
    async fn write_all(&self, snapshot: &[Report], state: &mut Written) -> Vec<Error> {
        let mut errors = Vec::new();
        let present: BTreeSet<String> = snapshot.iter().map(|(i, _)| id(i)).collect();
        state.status.retain(|k, _| present.contains(k));
        state.events.retain(|(k, _)| present.contains(k));
        for (ingress, rows) in snapshot {
            if let Some(address) = &self.settings.address {
                if let Err(e) = self.status(ingress, address, state).await {
                    errors.push(e);
                }
            }
            if let Err(e) = self.events(ingress, rows, state).await {
                errors.push(e);
            }
        }
        errors
    }

    /// Patches the status of `ingress` to `address` unless it says so already.
    async fn status(&self, ingress: &Ingress, address: &str, state: &mut Written) -> Result<()> {
        let name = id(ingress);
        let wanted = load_balancer(address);
        let current = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_deref())
            .unwrap_or_default();
        let version = ingress.metadata.resource_version.clone();
        if current == std::slice::from_ref(&wanted)
            || state.status.get(&name).is_some_and(|v| *v == version)
        {
            return Ok(()); // as wanted, or written at this version (the echo is on its way)
        }
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace_of(ingress));
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [wanted]}}});
        let params = PatchParams {
            field_manager: Some(field_manager(&self.identity)),
            ..PatchParams::default()
        };
        api.patch_status(
            ingress.metadata.name.as_deref().unwrap_or_default(),
            &params,
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            ingress: name.clone(),
            source,
        })?;
        tracing::info!(ingress = %name, %address, "ingress status written");
        state.status.insert(name, version);
        Ok(())
    }

    /// Creates the Events of this generation of `ingress`, if not created yet.
    async fn events(
        &self,
        ingress: &Ingress,
        rows: &[super::migrate::Row],
        state: &mut Written,
    ) -> Result<()> {
        let name = id(ingress);
        let key = (name.clone(), ingress.metadata.generation);
        if state.events.contains(&key) {
            return Ok(());
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace_of(ingress));
        for (i, row) in rows
            .iter()
            .filter(|r| r.verdict == Verdict::Unsupported)
            .enumerate()
        {
            // Rows already created for this generation before a failure are skipped on
            // the retry.
            if state.created.contains(&(key.clone(), i)) {
                continue;
            }
            let event = self.event(ingress, row);
            api.create(&PostParams::default(), &event)
                .await
                .map_err(|source| Error::Event {
                    ingress: name.clone(),
                    source,
                })?;
            state.created.insert((key.clone(), i));
        }
        state.created.retain(|(k, _)| *k != key);
        state.events.insert(key);
        Ok(())
    }

    /// The Warning Event saying `row` of `ingress` is not honoured.
    fn event(&self, ingress: &Ingress, row: &super::migrate::Row) -> Event {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let object = ingress.metadata.name.as_deref().unwrap_or_default();
        let unique = k8s_openapi::jiff::Timestamp::now().as_nanosecond() as u128;
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{unique:x}")),
                namespace: Some(namespace_of(ingress).to_string()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                name: Some(object.to_string()),
                namespace: Some(namespace_of(ingress).to_string()),
                uid: ingress.metadata.uid.clone(),
                resource_version: ingress.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(UNSUPPORTED_REASON.into()),
            type_: Some("Warning".into()),
            message: Some(
                format!(
                    "{} = {:?} is not honoured by tether: {}",
                    row.item, row.value, row.how
                )
                .chars()
                .take(1024)
                .collect(),
            ),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(self.settings.controller.clone()),
            reporting_instance: Some(self.identity.chars().take(128).collect()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        }
    }
}

impl Writes for Writer {
    type Snapshot = Vec<Report>;
    type Written = Written;
    type Error = Error;

    async fn write(&self, snapshot: &Vec<Report>, written: &mut Written) -> Vec<Error> {
        self.write_all(snapshot, written).await
    }
}

/// What this replica wrote in its current term.
#[derive(Default)]
pub struct Written {
    /// `namespace/name` → the resourceVersion whose status was patched.
    status: BTreeMap<String, Option<String>>,
    /// (`namespace/name`, generation) whose Events are all created.
    events: BTreeSet<(String, Option<i64>)>,
    /// Events created of a generation not yet complete: (that key, row index).
    created: BTreeSet<((String, Option<i64>), usize)>,
}

/// `status.loadBalancer.ingress[0]` for `address`: an IP, else a hostname.
fn load_balancer(address: &str) -> IngressLoadBalancerIngress {
    if address.parse::<std::net::IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(address.to_string()),
            ..IngressLoadBalancerIngress::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(address.to_string()),
            ..IngressLoadBalancerIngress::default()
        }
    }
}

fn namespace_of(i: &Ingress) -> &str {
    i.metadata.namespace.as_deref().unwrap_or("default")
}

fn id(i: &Ingress) -> String {
    format!(
        "{}/{}",
        namespace_of(i),
        i.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_published_as_ip_and_a_name_as_hostname() {
        assert_eq!(
            load_balancer("203.0.113.7").ip.as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            load_balancer("2001:db8::1").ip.as_deref(),
            Some("2001:db8::1")
        );
        let h = load_balancer("lb.example.com");
        assert_eq!(
            (h.ip, h.hostname.as_deref()),
            (None, Some("lb.example.com"))
        );
    }
}
