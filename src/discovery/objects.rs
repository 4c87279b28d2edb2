//! Whole kinds of Kubernetes objects, watched for the controllers (Ingress mode and
//! Gateway API mode): each kind reflected into a store kube-runtime keeps current, and
//! all of them read together as bursts of changes.
//!
//! One mechanism, so both modes retry, debounce and wait for complete lists alike: a
//! watch error is logged and retried with kube-runtime's default backoff (the stores
//! keep what they had, so routes stay as they are); a burst of changes is collected
//! until `debounce` passes without one; and nothing is handed on until every kind has
//! been listed in full, because a half-listed view would drop routes that exist.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// One kind's changes: `true` where a (re-)list completed.
pub type Changes = BoxStream<'static, Result<bool, watcher::Error>>;

/// Every object of kind `K` in the cluster, kept current in the returned store, and the
/// stream whose polling keeps it so (hand it to [`Bursts::new`]).
pub fn reflect<K>(client: &Client) -> (Store<K>, Changes)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    reflect_with(client, watcher::Config::default())
}

/// [`reflect`], for only the objects `config` selects (labels, fields): e.g. the
/// Secrets of type `kubernetes.io/tls`, so no other Secret is ever read.
pub fn reflect_with<K>(client: &Client, config: watcher::Config) -> (Store<K>, Changes)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let changes = reflector::reflector(
        writer,
        watcher::watcher(Api::<K>::all(client.clone()), config),
    )
    .default_backoff()
    .map(|e| e.map(|e| matches!(e, Event::InitDone)))
    .boxed();
    (store, changes)
}

/// [`reflect`] for a kind whose CRD may not be installed (the experimental channel's
/// `XBackendTrafficPolicy`, say): while the API server answers 404 for it, the kind
/// counts as listed and empty, so the other kinds route as if it did not exist; the
/// watch keeps retrying with backoff and picks the kind up once the CRD appears.
pub fn reflect_optional<K>(client: &Client) -> (Store<K>, Changes)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, changes) = reflect::<K>(client);
    let changes = changes
        .map(|r| match r {
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.is_not_found() => {
                tracing::debug!(
                    kind = %K::kind(&K::DynamicType::default()),
                    "not served by the API server (CRD not installed); treated as empty"
                );
                Ok(true)
            }
            other => other,
        })
        .boxed();
    (store, changes)
}

/// A value another task publishes on `rx` (such as the verdicts on TLS Secrets that
/// the SNI table publishes), read by [`Bursts`] as a kind that is listed from the
/// start: each change it publishes is a change, and it never holds a burst back.
pub fn published<T: Send + Sync + 'static>(rx: tokio::sync::watch::Receiver<T>) -> Changes {
    futures::stream::once(async { Ok(true) })
        .chain(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some((Ok(true), rx))
        }))
        .boxed()
}

/// The changes of several kinds, read as bursts.
pub struct Bursts {
    events: SelectAll<BoxStream<'static, Result<(usize, bool), watcher::Error>>>,
    /// Which kinds have been listed in full at least once.
    listed: Vec<bool>,
    /// How long a burst is collected after its last change.
    debounce: Duration,
    /// What the watches are of, for the log (`"ingress"`, `"gateway api"`).
    what: &'static str,
}

impl Bursts {
    /// Reads `kinds` (from [`reflect`]) together.
    pub fn new(kinds: Vec<Changes>, debounce: Duration, what: &'static str) -> Self {
        let listed = vec![false; kinds.len()];
        let events = futures::stream::select_all(
            kinds
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.map(move |r| r.map(|l| (i, l))).boxed()),
        );
        Bursts {
            events,
            listed,
            debounce,
            what,
        }
    }

    /// Waits for a change, collects the burst it starts, and returns once every kind
    /// has been listed in full: the stores then hold a complete view. `None` when the
    /// watches end.
    pub async fn next(&mut self) -> Option<()> {
        loop {
            let mut next = self.events.next().await;
            loop {
                match next {
                    None => return None,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "{} watch failed; retrying, routes stay as they are", self.what);
                    }
                    Some(Ok((kind, listed))) => {
                        if let Some(l) = self.listed.get_mut(kind) {
                            *l |= listed;
                        }
                    }
                }
                match tokio::time::timeout(self.debounce, self.events.next()).await {
                    Ok(n) => next = n,
                    Err(_) => break,
                }
            }
            if self.listed.iter().all(|l| *l) {
                return Some(());
            }
        }
    }
}
