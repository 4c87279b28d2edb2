//! Which replica writes: the leader election both controllers' status writers share
//! (Ingress mode's `ingress::status`, Gateway API mode's `gateway::status`; this module
//! depends on neither).
//!
//! Every replica routes; only the one holding a `coordination.k8s.io` Lease (elected
//! with kube-lease-manager, which locks it with server-side apply) writes, so two
//! tethers never fight over an object's status. Each mode elects with a Lease of its
//! own, so the two modes' writers may sit on different replicas.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the elector ran into.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be read or created.
    #[error("lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What kube-lease-manager said.
        source: LeaseManagerError,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `source.component` of tether's Events and the prefix of its field managers.
pub const COMPONENT: &str = "tether";

/// Longest wait before a failed write (or Lease creation) is tried again.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// This replica's identity in the Lease: its pod name, else the host name with a random
/// suffix (two processes on one host stay distinct).
pub fn identity(pod_name: Option<&str>) -> String {
    if let Some(p) = pod_name.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| COMPONENT.to_string());
    let suffix: String = rand::Rng::sample_iter(rand::rng(), &rand::distr::Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{host}-{suffix}")
}

/// The field manager of this replica's writes (at most 128 characters, as the API
/// requires).
pub fn field_manager(identity: &str) -> String {
    format!("{COMPONENT}-{identity}")
        .chars()
        .take(128)
        .collect()
}

/// The Lease a mode elects its writer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace; `None`: the client's (the pod's own in a cluster).
    pub namespace: Option<String>,
    /// How long it holds after its last renewal; the holder renews a third of it
    /// before it runs out, and another replica takes over after it.
    pub duration: Duration,
}

/// Takes part in one Lease's election.
pub struct Elector {
    /// The API client.
    pub client: Client,
    /// The Lease.
    pub lease: LeaseSettings,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// First retry delay after an API error.
    pub backoff: Duration,
}

/// A running election: whether this replica holds the Lease now.
pub struct Term {
    /// `true` while this replica holds the Lease. Dropping it (with the [`Term`]) makes
    /// the manager's task release the Lease, so another replica takes over without
    /// waiting it out.
    pub leader: watch::Receiver<bool>,
    /// `namespace/name` of the Lease, for logs.
    pub lease: String,
    _task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Elector {
    /// Joins the election, retrying with backoff until the Lease can be read or created;
    /// `what` names the writer in logs.
    pub async fn join(&self, what: &str) -> Term {
        let namespace = self
            .lease
            .namespace
            .clone()
            .unwrap_or_else(|| self.client.default_namespace().to_string());
        let lease = format!("{namespace}/{}", self.lease.name);
        let mut delay = self.backoff;
        let manager = loop {
            match self.manager(&namespace).await {
                Ok(m) => break m,
                Err(source) => {
                    let e = Error::Lease {
                        lease: lease.clone(),
                        source,
                    };
                    tracing::warn!(error = %e, "{what}: no lease yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        };
        let (leader, task) = manager.watch().await;
        Term {
            leader,
            lease,
            _task: task,
        }
    }

    async fn manager(&self, namespace: &str) -> Result<LeaseManager, LeaseManagerError> {
        let duration = self.lease.duration.as_secs().max(2);
        LeaseManagerBuilder::new(self.client.clone(), &self.lease.name)
            .with_namespace(namespace)
            .with_identity(&self.identity)
            .with_field_manager(field_manager(&self.identity))
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .build()
            .await
    }
}

/// What the Lease holder writes: the API brought up to date for each snapshot the
/// controller publishes. Both modes' status writers are one of these; the loop around
/// them ([`Elector::lead`]) is written once.
pub trait Writes {
    /// What the controller publishes.
    type Snapshot: Send + Sync;
    /// What this term has written. A new term starts from the default: from what the API
    /// says, not from memory.
    type Written: Default + Send;
    /// A failed write.
    type Error: std::fmt::Display;
    /// Brings the API up to date for `snapshot`; the errors of the writes that failed
    /// (retried with backoff).
    fn write(
        &self,
        snapshot: &Self::Snapshot,
        written: &mut Self::Written,
    ) -> impl Future<Output = Vec<Self::Error>> + Send;
}

impl Elector {
    /// Writes what `updates` publishes with `writer` while this replica holds the Lease,
    /// until dropped (which releases it): after every change, on becoming the holder,
    /// and after failed writes, retried with backoff (from `backoff`, doubling, at most
    /// [`MAX_RETRY`]). `what` names the writer in logs.
    pub async fn lead<W: Writes>(
        &self,
        what: &str,
        writer: &W,
        mut updates: watch::Receiver<Arc<W::Snapshot>>,
    ) {
        // Dropping `term` (when this future is dropped) releases the Lease.
        let term = self.join(what).await;
        let lease = term.lease.clone();
        let mut leader = term.leader.clone();
        let mut written = W::Written::default();
        let mut is_leader = false;
        let mut retry: Option<tokio::time::Instant> = None;
        let mut delay = self.backoff;
        loop {
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() {
                        tracing::warn!(%lease, "{what}: lease manager stopped; no longer written");
                        return;
                    }
                    let now = *leader.borrow_and_update();
                    if now != is_leader {
                        is_leader = now;
                        tracing::info!(%lease, identity = %self.identity, leader = is_leader,
                            "{what} writer {}", if is_leader { "elected" } else { "stepped down" });
                        written = W::Written::default();
                    }
                }
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = sleep_until(retry) => {}
            }
            if !is_leader {
                updates.borrow_and_update();
                retry = None;
                continue;
            }
            let snapshot = updates.borrow_and_update().clone();
            let errors = writer.write(&snapshot, &mut written).await;
            for e in &errors {
                tracing::warn!(error = %e, "{what}: write failed; retrying");
            }
            if errors.is_empty() {
                retry = None;
                delay = self.backoff;
            } else {
                retry = Some(tokio::time::Instant::now() + delay);
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_the_pod_name_or_a_host_with_a_random_suffix() {
        assert_eq!(identity(Some("tether-0")), "tether-0");
        let (a, b) = (identity(None), identity(None));
        assert_ne!(a, b, "two processes on one host stay distinct");
        assert!(field_manager(&"x".repeat(300)).len() <= 128);
    }
}
