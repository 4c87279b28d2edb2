//! Backends and their immutable routing snapshots.
//!
//! A [`Backend`] owns one [`Snapshot`] behind an `ArcSwap`: the endpoints with their
//! states, their cookie tokens, passive-health cells and connection pools, and the
//! consistent-hash table over the eligible ones. Discovery calls [`Backend::publish`]
//! with the full endpoint list after every change; the snapshot is rebuilt off the
//! request path and published with a single `store`. Requests only `load()`, so they
//! never see a half-applied change and never take a lock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use arc_swap::ArcSwap;

use crate::balance::{Member, RateLimiter, Ring, SessionCounter};
use crate::clock::{Clock, Now};
use crate::config::{BackendSettings, Source};
use crate::health::PassiveHealth;
use crate::keys::KeyRing;
use crate::upstream::pool::Pool;

/// Most connection attempts one request makes (distinct endpoints in ring order).
pub const MAX_ATTEMPTS: usize = 3;

/// How many departed endpoint identities are remembered, so a failover can still name
/// the endpoint a session came from after it left the table.
const DEPARTED_MEMORY: usize = 4096;

/// Whether an endpoint takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Takes new sessions and sticky traffic.
    Ready,
    /// Keeps its existing sessions, takes no new ones (terminating but serving, or drained
    /// by an operator). Used for new sessions only when no endpoint is ready.
    Draining,
}

/// One endpoint as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Stable identity: the pod (or configured) name, else the address. Sessions are
    /// pinned to this, never to the address.
    pub identity: Arc<str>,
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of new sessions. 0 takes no new sessions at all (a weight-0
    /// Service of a weighted backend) but keeps serving the sessions pinned to it, like
    /// a draining endpoint without the drain timeout.
    pub weight: u32,
    /// Eligibility for new sessions.
    pub state: EndpointState,
    /// Speak h2c to it (backend `protocol = "h2c"`, or EndpointSlice appProtocol
    /// `kubernetes.io/h2c`).
    pub h2c: bool,
}

/// One endpoint inside a snapshot.
#[derive(Debug)]
pub struct Endpoint {
    /// Stable identity; also what `x-tether-previous-endpoint` names.
    pub identity: Arc<str>,
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of new sessions.
    pub weight: u32,
    /// Eligibility for new sessions (after any operator drain).
    pub state: EndpointState,
    /// Whether an operator drained it through the admin API.
    pub admin_drained: bool,
    /// When it started draining (unix seconds); its sessions fail over `drain_timeout`
    /// after this.
    pub draining_since: Option<u64>,
    /// When this replica first saw it (unix seconds); 0 for endpoints of the first full
    /// list, so a restart of tether does not look like a scale-out.
    pub added: u64,
    /// Cookie token of this endpoint under each key of the ring (index = key index).
    pub tokens: Box<[u64]>,
    /// Passive health, shared across snapshots so a rebuild does not forget failures.
    pub health: Arc<PassiveHealth>,
    /// Idle upstream connections, shared across snapshots so a rebuild keeps them warm.
    pub pool: Arc<Pool>,
    /// Live sessions pinned here, shared across snapshots.
    pub sessions: Arc<SessionCounter>,
    /// Paces rebalancing moves into this endpoint (`gradual`).
    pub moves: Arc<RateLimiter>,
    /// Request and error counters, shared across snapshots.
    pub stats: Arc<crate::stats::EndpointStats>,
}

/// What a cookie's endpoint token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An endpoint in this snapshot (any state).
    Present(u32),
    /// An endpoint that left the table; its identity when still remembered.
    Departed(Option<Arc<str>>),
}

/// The immutable routing state of a backend at one point in time.
#[derive(Debug)]
pub struct Snapshot {
    /// Endpoints sorted by identity.
    pub endpoints: Box<[Endpoint]>,
    /// Placement table over the eligible endpoints.
    pub ring: Ring,
    /// Number of distinct endpoints in `ring`.
    pub ring_members: usize,
    /// Sum of the weights of the ring members.
    pub ring_weight: u64,
    /// Token → endpoint index, one map per key index.
    by_token: Box<[AHashMap<u64, u32>]>,
    /// Token → identity of departed endpoints, one map per key index.
    departed: Arc<[AHashMap<u64, Arc<str>>]>,
    /// Increases with every publish; 0 until discovery published its first full list.
    pub generation: u64,
    /// The endpoint this tether runs next to (`prefer_local`), if it is in the table.
    pub local: Option<u32>,
    /// Live sessions of the whole backend, for the mean of the load bound.
    pub sessions: Arc<SessionCounter>,
    /// ε of the load bound.
    pub load_factor: f64,
}

/// Up to [`MAX_ATTEMPTS`] distinct endpoint indices, in the order to try them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidates {
    items: [u32; MAX_ATTEMPTS],
    len: usize,
}

impl Candidates {
    /// Adds `e` unless it is there already or the list is full.
    pub(crate) fn push(&mut self, e: u32) {
        if self.len < MAX_ATTEMPTS && !self.contains(e) {
            self.items[self.len] = e;
            self.len += 1;
        }
    }

    fn contains(&self, e: u32) -> bool {
        self.items[..self.len].contains(&e)
    }

    /// The candidates in order.
    pub fn as_slice(&self) -> &[u32] {
        &self.items[..self.len]
    }

    /// True when there is nowhere to send the request.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// === impl Snapshot ===

impl Snapshot {
    fn empty(keys: usize, sessions: Arc<SessionCounter>, load_factor: f64) -> Self {
        Snapshot {
            endpoints: Box::new([]),
            ring: Ring::build(&[]),
            ring_members: 0,
            ring_weight: 0,
            by_token: vec![AHashMap::new(); keys].into_boxed_slice(),
            departed: vec![AHashMap::new(); keys].into(),
            generation: 0,
            local: None,
            sessions,
            load_factor,
        }
    }

    /// Whether endpoint `i` can take one more session within the load bound: its live
    /// sessions + 1 at most ⌈(1 + ε) × (total + 1) × its weight share⌉ (consistent hashing
    /// with bounded loads, Mirrokni et al.). After any placement no endpoint holds more
    /// than (1 + ε) × its weighted mean + 1.
    pub fn within_bound(&self, i: u32, unix: u64) -> bool {
        self.fits(i, self.sessions.live(unix), unix)
    }

    /// [`Snapshot::within_bound`] with the backend's live sessions already counted
    /// (a count scans every bucket, and a walk asks for several endpoints at once).
    fn fits(&self, i: u32, total: u64, unix: u64) -> bool {
        let e = &self.endpoints[i as usize];
        let share = f64::from(e.weight) / self.ring_weight.max(1) as f64;
        let capacity = ((1.0 + self.load_factor) * (total + 1) as f64 * share).ceil();
        (e.sessions.live(unix) + 1) as f64 <= capacity
    }

    /// Resolves a verified cookie's endpoint token under key `key_index`.
    #[inline]
    pub fn resolve(&self, key_index: usize, token: u64) -> Resolved {
        if let Some(&i) = self.by_token.get(key_index).and_then(|m| m.get(&token)) {
            return Resolved::Present(i);
        }
        Resolved::Departed(
            self.departed
                .get(key_index)
                .and_then(|m| m.get(&token))
                .cloned(),
        )
    }

    /// Where to send a request, in order: `first` (the endpoint the affinity policy
    /// chose: the pinned one, a rebalancing target, the local pod) if it is up, then the
    /// distinct endpoints of the key's ring order, skipping those in passive-health
    /// cool-off and, when `bounded`, those over the load bound (the remaining attempts then
    /// follow the plain ring order). When everything is cooling off, `first` and the ring
    /// owner are tried anyway: a stale "down" must not turn into an outage.
    pub fn candidates(&self, first: Option<u32>, bounded: bool, key: u64, now: Now) -> Candidates {
        self.candidates_with(first, bounded, key, now, None)
    }

    /// [`Self::candidates`] with `first` counted as up whatever its health says now: a
    /// request's list after its first choice failed, as it was when the choice was made
    /// (that failure, or a concurrent request's to the same endpoint, must not turn the
    /// rest into the "everything is down" fallback or rerun the bounded walk).
    pub fn candidates_after(&self, first: u32, bounded: bool, key: u64, now: Now) -> Candidates {
        self.candidates_with(Some(first), bounded, key, now, Some(first))
    }

    fn candidates_with(
        &self,
        first: Option<u32>,
        bounded: bool,
        key: u64,
        now: Now,
        up_anyway: Option<u32>,
    ) -> Candidates {
        let mut out = Candidates::default();
        let up = |e: u32| Some(e) == up_anyway || self.is_up(e, now);
        if let Some(p) = first {
            if up(p) {
                out.push(p);
            }
        }
        let mut total = None;
        let mut walk = |out: &mut Candidates, bounded: bool| {
            // Bounded walk: stop once enough candidates are found or every member was seen.
            // Under the load bound one is enough: it chooses where the session goes, and
            // each bound check scans the endpoint's session buckets, the costliest part of
            // a new session's placement.
            let want = if bounded { 1 } else { MAX_ATTEMPTS };
            let mut seen = [0u32; 16];
            let mut seen_len = 0;
            for (steps, e) in self.ring.walk(key).enumerate() {
                if out.len >= want || seen_len == self.ring_members || steps > 4096 {
                    break;
                }
                if seen[..seen_len].contains(&e) {
                    continue;
                }
                if seen_len == seen.len() {
                    break;
                }
                seen[seen_len] = e;
                seen_len += 1;
                if up(e)
                    && (!bounded || {
                        let total = *total.get_or_insert_with(|| self.sessions.live(now.unix));
                        self.fits(e, total, now.unix)
                    })
                {
                    out.push(e);
                }
            }
        };
        walk(&mut out, bounded);
        if bounded {
            // The bound chooses where the session goes; retries after a failure may go
            // to any endpoint that is up, in ring order.
            walk(&mut out, false);
        }
        if out.is_empty() {
            if let Some(p) = first {
                out.push(p);
            }
            if let Some(owner) = self.ring.owner(key) {
                out.push(owner);
            }
        }
        out
    }

    /// Whether endpoint `e` is out of passive-health cool-off.
    pub fn is_up(&self, e: u32, now: Now) -> bool {
        !self.endpoints[e as usize].health.is_down(now.instant)
    }

    /// Whether any endpoint can take new sessions.
    pub fn has_eligible(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Whether discovery has published a complete endpoint list yet.
    pub fn is_synced(&self) -> bool {
        self.generation > 0
    }
}

// === impl Backend ===

/// A named group of endpoints with its affinity settings and current snapshot.
pub struct Backend {
    /// Validated settings (name, affinity, timeouts).
    pub settings: BackendSettings,
    /// Keys the snapshot's tokens are computed under.
    keys: Arc<KeyRing>,
    /// The current snapshot; requests `load()` it, [`Backend::publish`] replaces it.
    snapshot: ArcSwap<Snapshot>,
    /// Rebuild state carried between publishes. A mutex is right here: only discovery
    /// and the admin API take it, never a request.
    builder: Mutex<BuilderState>,
    /// Precomputed `Set-Cookie` attributes (everything after the value).
    cookie_attributes: Box<str>,
    /// Identity of the endpoint this tether runs next to, when `prefer_local` is on.
    local: Option<Arc<str>>,
    /// Live sessions of the whole backend (see [`Snapshot::sessions`]).
    sessions: Arc<SessionCounter>,
    /// The time session logic reads.
    clock: Clock,
    /// Limits retries to a fraction of requests.
    pub retry_budget: crate::retry::RetryBudget,
    /// Counters for `/metrics`.
    pub stats: crate::stats::BackendStats,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

/// What an endpoint keeps across snapshots: passive health, idle connections, live
/// sessions, the rebalancing pace.
#[derive(Clone)]
struct Carried {
    health: Arc<PassiveHealth>,
    pool: Arc<Pool>,
    sessions: Arc<SessionCounter>,
    moves: Arc<RateLimiter>,
    stats: Arc<crate::stats::EndpointStats>,
}

#[derive(Default)]
struct BuilderState {
    /// What each (identity, address) carries between snapshots.
    carried: AHashMap<(Arc<str>, SocketAddr, bool), Carried>,
    /// When each present identity was first seen (0 = in the first full list).
    added: AHashMap<Arc<str>, u64>,
    /// When each draining identity started draining.
    draining_since: AHashMap<Arc<str>, u64>,
    /// Identities an operator drained.
    admin_drained: ahash::AHashSet<Arc<str>>,
    /// The last list discovery published, so an operator drain can re-publish it.
    last_specs: Vec<EndpointSpec>,
    /// Identities that left, oldest first.
    departed: VecDeque<Arc<str>>,
    generation: u64,
}

impl Backend {
    /// A backend with no endpoints yet. `pod_name` is this tether's own pod (the downward
    /// API's `POD_NAME`); it matters only with `prefer_local`.
    pub fn new(settings: BackendSettings, keys: Arc<KeyRing>, pod_name: Option<&str>) -> Self {
        Self::with_clock(settings, keys, pod_name, Clock::new())
    }

    /// Like [`Backend::new`], reading time from `clock`.
    pub fn with_clock(
        settings: BackendSettings,
        keys: Arc<KeyRing>,
        pod_name: Option<&str>,
        clock: Clock,
    ) -> Self {
        let cookie_attributes = settings.affinity.cookie.attributes();
        let local = match (settings.affinity.prefer_local, pod_name, &settings.source) {
            (true, Some(pod), Source::Kubernetes(k)) => {
                Some(format!("{}/{pod}", k.namespace).into())
            }
            (true, Some(pod), Source::Static(_)) => Some(pod.into()),
            // Pods of several Services: this tether's pod is in the first one's namespace.
            (true, Some(pod), Source::Weighted(services)) => services
                .first()
                .map(|s| format!("{}/{pod}", s.source.namespace).into()),
            _ => None,
        };
        let sessions = Arc::new(SessionCounter::new(
            settings.affinity.session_idle,
            settings.affinity.refresh_interval(),
        ));
        Backend {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(
                keys.len(),
                sessions.clone(),
                settings.affinity.load_factor,
            )),
            keys,
            builder: Mutex::new(BuilderState::default()),
            cookie_attributes,
            local,
            sessions,
            clock,
            retry_budget: crate::retry::RetryBudget::new(settings.retry_budget),
            stats: Default::default(),
            settings,
        }
    }

    /// The identity of the local endpoint (`prefer_local`), if configured.
    pub fn local_identity(&self) -> Option<&str> {
        self.local.as_deref()
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The key ring cookies of this backend are signed with.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The clock session logic reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `Set-Cookie` attributes after the value, e.g. `; Path=/; HttpOnly; SameSite=Lax`.
    pub fn cookie_attributes(&self) -> &str {
        &self.cookie_attributes
    }

    /// The current snapshot.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BuilderState> {
        match self.builder.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes over `prev`'s endpoints after a config reload: what each endpoint carries
    /// (health, pool, live sessions, counters), when it was added, drains, departed
    /// identities, and the backend's own live-session count (the load bound's mean:
    /// without it every endpoint would look over its bound after a reload, and new
    /// sessions would ignore the load until the count caught up); then publishes
    /// `prev`'s last endpoint list under this backend's settings and keys, so the
    /// backend is routable at once and sessions keep their endpoints (tokens are
    /// identity-derived).
    pub fn inherit(&self, prev: &Backend) {
        self.sessions.copy_from(&prev.sessions);
        let specs = {
            let old = prev.lock();
            let mut state = self.lock();
            state.carried = old.carried.clone();
            state.added = old.added.clone();
            state.draining_since = old.draining_since.clone();
            state.admin_drained = old.admin_drained.clone();
            state.departed = old.departed.clone();
            state.generation = old.generation;
            old.last_specs.clone()
        };
        if !specs.is_empty() || prev.snapshot().is_synced() {
            let mut state = self.lock();
            self.rebuild(&mut state, specs);
        }
    }

    /// Drains (or undrains) an endpoint by identity, as an operator: it keeps its
    /// sessions until `drain_timeout` and takes no new ones. Returns false when no such
    /// endpoint exists. Survives later discovery updates until undrained.
    pub fn set_drained(&self, identity: &str, drained: bool) -> bool {
        let mut state = self.lock();
        if !state.last_specs.iter().any(|s| &*s.identity == identity) {
            return false;
        }
        if drained {
            state.admin_drained.insert(identity.into());
        } else {
            state.admin_drained.remove(identity);
        }
        let specs = state.last_specs.clone();
        self.rebuild(&mut state, specs);
        true
    }

    /// Replaces the endpoint set. Builds the new snapshot here, on the caller's task,
    /// and publishes it with one atomic store.
    pub fn publish(&self, specs: Vec<EndpointSpec>) {
        let mut state = self.lock();
        self.rebuild(&mut state, specs);
        self.stats.discovery_event(self.clock.now().unix);
    }

    fn rebuild(&self, state: &mut BuilderState, mut specs: Vec<EndpointSpec>) {
        specs.sort_by(|a, b| a.identity.cmp(&b.identity));
        specs.dedup_by(|a, b| a.identity == b.identity);
        let previous = self.snapshot.load_full();
        let nkeys = self.keys.len();
        let now = self.clock.now();
        let first_list = state.generation == 0;
        let affinity = &self.settings.affinity;

        let mut carried = AHashMap::with_capacity(specs.len());
        let mut added = AHashMap::with_capacity(specs.len());
        let mut draining_since = AHashMap::new();
        let endpoints: Box<[Endpoint]> = specs
            .iter()
            .map(|s| {
                let k = (s.identity.clone(), s.address, s.h2c);
                let c = state.carried.get(&k).cloned().unwrap_or_else(|| Carried {
                    health: Arc::new(PassiveHealth::new()),
                    pool: Arc::new(Pool::new(
                        s.address,
                        self.settings.max_idle_per_endpoint,
                        s.h2c,
                    )),
                    sessions: Arc::new(SessionCounter::new(
                        affinity.session_idle,
                        affinity.refresh_interval(),
                    )),
                    moves: Arc::new(RateLimiter::new(affinity.rebalance_rate, now.instant)),
                    stats: Arc::default(),
                });
                carried.insert(k, c.clone());
                let first_seen = match state.added.get(&s.identity) {
                    Some(&t) => t,
                    None if first_list => 0,
                    None => now.unix,
                };
                added.insert(s.identity.clone(), first_seen);
                let admin_drained = state.admin_drained.contains(&s.identity);
                let st = if admin_drained {
                    EndpointState::Draining
                } else {
                    s.state
                };
                let since = (st == EndpointState::Draining).then(|| {
                    state
                        .draining_since
                        .get(&s.identity)
                        .copied()
                        .unwrap_or(now.unix)
                });
                if let Some(t) = since {
                    draining_since.insert(s.identity.clone(), t);
                }
                Endpoint {
                    identity: s.identity.clone(),
                    address: s.address,
                    weight: s.weight,
                    state: st,
                    admin_drained,
                    draining_since: since,
                    added: first_seen,
                    tokens: (0..nkeys)
                        .map(|i| self.keys.endpoint_token(i, &s.identity))
                        .collect(),
                    health: c.health,
                    pool: c.pool,
                    sessions: c.sessions,
                    moves: c.moves,
                    stats: c.stats,
                }
            })
            .collect();
        state.carried = carried;
        state.added = added;
        state.draining_since = draining_since;
        state
            .admin_drained
            .retain(|id| specs.iter().any(|s| &s.identity == id));
        state.last_specs = specs;

        let mut by_token = vec![AHashMap::with_capacity(endpoints.len()); nkeys];
        for (i, e) in endpoints.iter().enumerate() {
            for (k, t) in e.tokens.iter().enumerate() {
                by_token[k].insert(*t, i as u32);
            }
        }

        // Remember who left (and forget who came back) so failovers can name them.
        let present = |id: &str| endpoints.iter().any(|e| &*e.identity == id);
        let before = state.departed.len();
        state.departed.retain(|id| !present(id));
        let mut changed = state.departed.len() != before;
        for e in previous.endpoints.iter() {
            if !present(&e.identity) && !state.departed.contains(&e.identity) {
                state.departed.push_back(e.identity.clone());
                changed = true;
            }
        }
        while state.departed.len() > DEPARTED_MEMORY {
            state.departed.pop_front();
        }
        let departed = if changed || previous.departed.len() != nkeys || previous.generation == 0 {
            (0..nkeys)
                .map(|k| {
                    state
                        .departed
                        .iter()
                        .map(|id| (self.keys.endpoint_token(k, id), id.clone()))
                        .collect()
                })
                .collect()
        } else {
            previous.departed.clone()
        };

        // New sessions go to ready endpoints; when none is ready, to the draining ones
        // that still serve (as kube-proxy does), rather than to nobody. Weight 0 never
        // takes a new session (it is a Service the operator weighted out); its pinned
        // sessions stay, since a session with a valid cookie goes to its endpoint.
        let any_ready = endpoints
            .iter()
            .any(|e| e.weight > 0 && e.state == EndpointState::Ready);
        let members: Vec<Member<'_>> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.weight > 0 && (!any_ready || e.state == EndpointState::Ready))
            .map(|(i, e)| Member {
                identity: &e.identity,
                weight: e.weight,
                index: i as u32,
            })
            .collect();
        let ring = Ring::build(&members);
        let ring_members = members.len();
        let ring_weight = members.iter().map(|m| u64::from(m.weight)).sum();
        drop(members);

        state.generation += 1;
        let local = self.local.as_ref().and_then(|id| {
            endpoints
                .iter()
                .position(|e| &e.identity == id)
                .map(|i| i as u32)
        });
        let snapshot = Snapshot {
            endpoints,
            ring,
            ring_members,
            ring_weight,
            by_token: by_token.into_boxed_slice(),
            departed,
            generation: state.generation,
            local,
            sessions: self.sessions.clone(),
            load_factor: affinity.load_factor,
        };
        tracing::info!(
            backend = %self.settings.name,
            endpoints = snapshot.endpoints.len(),
            eligible = snapshot.ring_members,
            generation = snapshot.generation,
            "published endpoints"
        );
        self.snapshot.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;
    use std::time::Duration;
    use tokio::time::Instant;

    fn backend() -> Backend {
        let c = Config::parse(
            "[[backend]]\nname='app'\nendpoints=['127.0.0.1:1']\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        Backend::new(c.backends[0].clone(), Arc::new(KeyRing::ephemeral()), None)
    }

    fn at(instant: Instant) -> Now {
        Now { unix: 0, instant }
    }

    /// A backend with `n` ready endpoints `a`, `b`, ... on ports 1, 2, ...
    fn ready(n: u8) -> Backend {
        let b = backend();
        b.publish(
            (0..n)
                .map(|i| {
                    let name = char::from(b'a' + i).to_string();
                    spec(&name, u16::from(i) + 1, EndpointState::Ready)
                })
                .collect(),
        );
        b
    }

    /// Gives endpoint `e` 100 live sessions: far more than its share under the bound.
    fn overload(s: &Snapshot, e: u32, unix: u64) {
        for _ in 0..100 {
            s.endpoints[e as usize].sessions.add(unix);
            s.sessions.add(unix);
        }
    }

    fn spec(name: &str, port: u16, state: EndpointState) -> EndpointSpec {
        EndpointSpec {
            identity: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            state,
            h2c: false,
        }
    }

    #[test]
    fn departed_endpoints_are_remembered_by_token() {
        let b = ready(2);
        let token_a = b.snapshot().endpoints[0].tokens[0];
        assert_eq!(b.snapshot().resolve(0, token_a), Resolved::Present(0));
        b.publish(vec![spec("b", 2, EndpointState::Ready)]);
        assert_eq!(
            b.snapshot().resolve(0, token_a),
            Resolved::Departed(Some("a".into()))
        );
        assert_eq!(b.snapshot().resolve(0, 42), Resolved::Departed(None));
    }

    #[test]
    fn same_identity_at_a_new_address_keeps_its_token() {
        let b = backend();
        b.publish(vec![spec("a", 1, EndpointState::Ready)]);
        let t = b.snapshot().endpoints[0].tokens[0];
        b.publish(vec![spec("a", 9, EndpointState::Ready)]);
        assert_eq!(b.snapshot().endpoints[0].tokens[0], t);
        assert_eq!(b.snapshot().endpoints[0].address.port(), 9);
    }

    #[test]
    fn draining_endpoints_take_no_new_sessions_unless_none_is_ready() {
        let b = backend();
        b.publish(vec![
            spec("a", 1, EndpointState::Draining),
            spec("b", 2, EndpointState::Ready),
        ]);
        let s = b.snapshot();
        assert_eq!(s.ring_members, 1);
        assert!(
            (0..1000u64).all(|k| s.ring.owner(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) == Some(1))
        );
        b.publish(vec![spec("a", 1, EndpointState::Draining)]);
        assert!(b.snapshot().has_eligible());
    }

    #[test]
    fn a_reloaded_backend_keeps_its_load_bound_mean() {
        let b = ready(2);
        let s = b.snapshot();
        let unix = 1_000_000;
        overload(&s, 0, unix);
        for _ in 0..10 {
            s.endpoints[1].sessions.add(unix);
            s.sessions.add(unix);
        }
        assert!(s.within_bound(1, unix) && !s.within_bound(0, unix));
        // A config reload builds a new backend that inherits the old one.
        let next = backend();
        next.inherit(&b);
        let s = next.snapshot();
        assert_eq!(s.sessions.live(unix), 110);
        assert!(
            s.within_bound(1, unix),
            "10 of 110 is under the bound; against a total of 0 it would not be"
        );
        assert!(!s.within_bound(0, unix));
    }

    #[test]
    fn weight_zero_endpoints_take_no_new_sessions_and_keep_their_tokens() {
        let b = backend();
        let mut old = spec("old", 1, EndpointState::Ready);
        old.weight = 0;
        b.publish(vec![old.clone(), spec("web", 2, EndpointState::Ready)]);
        let s = b.snapshot();
        assert_eq!(s.ring_members, 1);
        assert!(
            (0..1000u64).all(|k| s.ring.owner(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) == Some(1))
        );
        // Still present: a cookie naming it resolves to it, so its sessions stay.
        let token = s.endpoints[0].tokens[0];
        assert_eq!(s.resolve(0, token), Resolved::Present(0));
        assert_eq!(s.endpoints[0].state, EndpointState::Ready);
        // Alone, it still takes none: weight 0 means no new session at all.
        b.publish(vec![old]);
        assert!(!b.snapshot().has_eligible());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_session_goes_within_the_bound_and_retries_follow_the_ring() {
        let b = ready(3);
        let s = b.snapshot();
        let now = at(Instant::now());
        let key = 7;
        let owner = s.ring.owner(key).unwrap();
        // The key's owner holds far more than its share of the live sessions.
        overload(&s, owner, now.unix);
        let bounded = s.candidates(None, true, key, now);
        let first = bounded.as_slice()[0];
        assert_ne!(first, owner);
        assert!(s.within_bound(first, now.unix));
        // After a failure the request may still go to any endpoint that is up.
        assert_eq!(bounded.as_slice().len(), 3);
        assert!(bounded.as_slice().contains(&owner));
        assert_eq!(s.candidates(None, false, key, now).as_slice()[0], owner);
    }

    /// The lazy list (`affinity::Attempts`) starts with the target; once the target has
    /// failed and is cooling off (marked by this request or a concurrent one), the rest
    /// is the list of decision time: the endpoint that was already cooling off is not
    /// tried just because everything now looks down.
    #[tokio::test(start_paused = true)]
    async fn attempts_do_not_retry_an_endpoint_that_was_cooling_off_when_the_request_came() {
        let b = ready(2);
        let s = b.snapshot();
        let now = at(Instant::now());
        let mut d = crate::affinity::keyed(&s, b"client-1", now);
        let owner = d.target.unwrap();
        let pinned = 1 - owner;
        // Pinned away from the key's ring owner, which is cooling off.
        d.target = Some(pinned);
        s.endpoints[owner as usize]
            .health
            .mark_down(now.instant, Duration::from_secs(5));
        assert_eq!(d.candidates(&s).as_slice(), &[pinned]);
        let mut a = d.attempts(&s);
        assert_eq!(a.get(0), Some(pinned));
        s.endpoints[pinned as usize]
            .health
            .mark_down(now.instant, Duration::from_secs(5));
        assert!(!a.after(0));
        assert_eq!(a.get(1), None);
        // A target already down is not tried first: the list is the candidates, here
        // the fallback of the ring owner.
        let mut a = d.attempts(&s);
        assert_eq!(a.get(0), d.candidates(&s).as_slice().first().copied());
    }

    /// A bounded (new-session) decision's retries follow the plain ring after its
    /// target, as the eager list did, even once the target is cooling off.
    #[tokio::test(start_paused = true)]
    async fn attempts_after_a_bounded_target_fails_follow_the_decision_time_ring_order() {
        let b = ready(3);
        let s = b.snapshot();
        let now = at(Instant::now());
        let mut differed = 0;
        for k in 0..200u32 {
            for e in s.endpoints.iter() {
                e.health.mark_up();
            }
            let mut d = crate::affinity::keyed(&s, &k.to_be_bytes(), now);
            // The key's owner is far over the load bound: the bound places it elsewhere.
            let owner = d.target.unwrap();
            overload(&s, owner, now.unix);
            d.bounded = true;
            d.target = d.candidates(&s).as_slice().first().copied();
            let target = d.target.unwrap();
            let eager = d.candidates(&s);
            let mut a = d.attempts(&s);
            assert_eq!(a.get(0), Some(target));
            s.endpoints[target as usize]
                .health
                .mark_down(now.instant, Duration::from_secs(5));
            // What a fresh bounded walk would pick now, to know the case is telling.
            if d.candidates(&s).as_slice() != &eager.as_slice()[1..] {
                differed += 1;
            }
            let lazy: Vec<_> = (0..MAX_ATTEMPTS).map_while(|n| a.get(n)).collect();
            assert_eq!(lazy, eager.as_slice(), "key {k}");
        }
        assert!(
            differed > 0,
            "no key where the order after the target matters"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn candidates_skip_cooling_endpoints_but_never_return_nothing() {
        let b = ready(2);
        let s = b.snapshot();
        let now = Instant::now();
        assert_eq!(s.candidates(Some(0), false, 7, at(now)).as_slice().len(), 2);
        assert_eq!(s.candidates(Some(0), false, 7, at(now)).as_slice()[0], 0);
        s.endpoints[0].health.mark_down(now, Duration::from_secs(5));
        assert_eq!(s.candidates(Some(0), false, 7, at(now)).as_slice(), &[1]);
        s.endpoints[1].health.mark_down(now, Duration::from_secs(5));
        assert!(!s.candidates(Some(0), false, 7, at(now)).is_empty());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            s.candidates(Some(0), false, 7, at(Instant::now()))
                .as_slice()
                .len(),
            2
        );
    }
}
