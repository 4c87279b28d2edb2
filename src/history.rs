//! The admin dashboard's history: the last 15 minutes of each backend's request rate and
//! failovers (by reason), and of each pod's live sessions and request rate, in
//! fixed-size rings in memory, served as JSON on `GET /debug/history`.
//!
//! A sampler task ([`History::run`]) wakes every [`INTERVAL`] on tokio's clock and reads
//! what the request path already counts ([`crate::stats`]' relaxed atomics and each
//! endpoint's live-session counter), so the request path takes no lock and does no extra
//! work for the history. A rate is the difference of two readings over the time between
//! them; a counter that started over (a reload builds new backends, a pod that comes
//! back gets new counters) is read from zero, never as a negative rate.
//!
//! Memory is bounded twice over. Every series holds at most one window of samples
//! ([`WINDOW`] / [`INTERVAL`] = 90), and samples older than the window are dropped even
//! when the sampler fell behind. Pods come and go (scale-out, rollouts, churn): a series
//! whose pod, or backend, has been absent for a whole window has nothing left to show
//! and is dropped, and there are at most [`MAX_PODS`] pod series across all backends.
//! At the cap a new pod takes the place of the pod gone longest; when every charted pod
//! is still present it is left out and counted (`untracked_pods`). A pod series is two
//! rings of 90 eight-byte slots (about 1.5 KiB with its name), so under 1 MiB in all;
//! backend series are bounded by the config.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backend::Backend;
use crate::clock::{Clock, Now};
use crate::stats::{AffinityEvent, EndpointStats};

/// How often the sampler reads the counters.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How far back the history goes.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Pod series kept across all backends, so churn cannot grow memory without bound.
pub const MAX_PODS: usize = 512;

/// The failover reasons charted, in the order they are listed.
const FAILOVERS: [AffinityEvent; 4] = [
    AffinityEvent::FailoverEndpointGone,
    AffinityEvent::FailoverEndpointDown,
    AffinityEvent::FailoverConnectFailed,
    AffinityEvent::FailoverDrained,
];

/// One slot per sample; `None` where there is no value (the pod was absent, or it is a
/// counter's first reading).
type Ring<T> = VecDeque<Option<T>>;

/// The recent past of every backend and pod, for the dashboard's charts.
#[derive(Debug)]
pub struct History {
    /// Time between samples.
    interval: Duration,
    /// How far back samples are kept.
    window: Duration,
    /// Samples per series: the window divided by the interval.
    capacity: usize,
    /// Pod series kept across all backends.
    max_pods: usize,
    /// Unix times for the JSON, read from tokio's clock so a paused test clock moves them.
    clock: Clock,
    /// The rings. A `std` mutex is right here: only the sampler (once per interval) and
    /// admin requests take it, never the request path, and nobody holds it across an
    /// `.await`; an immutable snapshot published through arc-swap would cost a copy of
    /// every ring per sample to spare admin requests a wait of microseconds.
    rings: Mutex<Rings>,
}

impl Default for History {
    fn default() -> Self {
        History::new(INTERVAL, WINDOW, MAX_PODS)
    }
}

impl History {
    /// A history sampled every `interval` (at least a millisecond), `window` long, with
    /// at most `max_pods` pod series.
    pub fn new(interval: Duration, window: Duration, max_pods: usize) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let capacity = (window.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
        History {
            interval,
            window,
            capacity: capacity.max(1),
            max_pods,
            clock: Clock::new(),
            rings: Mutex::new(Rings::default()),
        }
    }

    /// Samples `backends()` every interval, the first time at once, until the task is
    /// aborted. The closure returns the backends of the current routing state, so a
    /// reload's new backends are sampled from the next tick on.
    pub async fn run<F>(self: Arc<Self>, backends: F)
    where
        F: Fn() -> Vec<Arc<Backend>>,
    {
        let mut every = tokio::time::interval(self.interval);
        // A sampler that fell behind takes one sample, not a burst of them at one
        // instant: each rate is over the time since the previous reading either way.
        every.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            self.sample(&backends());
        }
    }

    /// Takes one sample of `backends` now.
    pub fn sample(&self, backends: &[Arc<Backend>]) {
        let now = self.clock.now();
        let limits = Limits {
            capacity: self.capacity,
            window: self.window,
            max_pods: self.max_pods,
        };
        self.lock().sample(now, backends, limits);
    }

    /// The history as JSON: `times` (unix seconds, oldest first) and per backend its
    /// request rate, failovers per sample by reason, and per pod its live sessions and
    /// request rate, every series aligned with `times` (`null` where there is no value).
    pub fn to_json(&self) -> Value {
        let rings = self.lock();
        let backends: Vec<Value> = rings
            .backends
            .iter()
            .map(|b| {
                let failovers: serde_json::Map<String, Value> = FAILOVERS
                    .iter()
                    .zip(&b.failovers)
                    .map(|(e, ring)| (e.labels().1.to_string(), json!(ring)))
                    .collect();
                let pods: Vec<Value> = b
                    .pods
                    .iter()
                    .map(|(identity, p)| {
                        json!({
                            "identity": &**identity,
                            "live_sessions": p.sessions,
                            "requests_per_second": rates(&p.requests),
                        })
                    })
                    .collect();
                json!({
                    "name": &*b.name,
                    "requests_per_second": rates(&b.requests),
                    "failovers": failovers,
                    "pods": pods,
                })
            })
            .collect();
        json!({
            "interval_seconds": self.interval.as_secs_f64(),
            "window_seconds": self.window.as_secs_f64(),
            "max_pods": self.max_pods,
            "untracked_pods": rings.untracked,
            "times": rings.times.iter().map(|t| t.unix).collect::<Vec<_>>(),
            "backends": backends,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Rings> {
        match self.rings.lock() {
            Ok(g) => g,
            // A panic mid-sample leaves rings of unequal length at worst; the next
            // samples and the age-out bring them back in step.
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Rates rounded to a thousandth, for JSON a person can read.
fn rates(ring: &Ring<f32>) -> Vec<Option<f64>> {
    ring.iter()
        .map(|v| v.map(|r| (f64::from(r) * 1000.0).round() / 1000.0))
        .collect()
}

// === impl Rings ===

/// What bounds the rings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Samples per series.
    capacity: usize,
    /// The age past which a sample goes, however few there are.
    window: Duration,
    /// Pod series across all backends.
    max_pods: usize,
}

/// When a sample was taken.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    /// For ages and rates.
    instant: Instant,
    /// For the charts' time axis.
    unix: u64,
}

/// Every series, each as long as `times`.
#[derive(Debug, Default)]
struct Rings {
    /// When each sample was taken, oldest first: the x axis every series shares.
    times: VecDeque<Stamp>,
    /// In the order they first appeared (the config's, unless a reload added some).
    backends: Vec<BackendSeries>,
    /// Pods of the latest sample left out because the cap was reached.
    untracked: usize,
}

/// A pod seen in this sample with no series yet.
/// Held aside until the series of pods that went are dropped, so they can make room.
struct NewPod {
    /// Its backend's name.
    backend: Arc<str>,
    identity: Arc<str>,
    /// Its counters, for the first reading.
    stats: Arc<EndpointStats>,
    /// Its live sessions now.
    sessions: u64,
}

impl Rings {
    fn sample(&mut self, now: Now, backends: &[Arc<Backend>], limits: Limits) {
        let previous = self.times.back().map(|s| s.instant);
        // Room for this sample: one window of samples at most, none older than it.
        while let Some(oldest) = self.times.front() {
            let full = self.times.len() >= limits.capacity;
            let old = now.instant.saturating_duration_since(oldest.instant) >= limits.window;
            if !full && !old {
                break;
            }
            self.times.pop_front();
            for b in &mut self.backends {
                b.pop_front();
            }
        }
        self.times.push_back(Stamp {
            instant: now.instant,
            unix: now.unix,
        });
        let len = self.times.len();
        for b in &mut self.backends {
            b.seen = false;
            for p in b.pods.values_mut() {
                p.seen = false;
            }
        }

        // Present backends and pods with a series record their values.
        let mut new_pods = Vec::new();
        for backend in backends {
            let i = match self
                .backends
                .iter()
                .position(|s| *s.name == *backend.name())
            {
                Some(i) => i,
                None => {
                    let series =
                        BackendSeries::new(backend.name(), len - 1, limits.capacity, now.instant);
                    self.backends.push(series);
                    self.backends.len() - 1
                }
            };
            let series = &mut self.backends[i];
            series.record(backend, now.instant, previous);
            let snapshot = backend.snapshot();
            let unix = backend.clock().now().unix;
            for e in snapshot.endpoints.iter() {
                let sessions = e.sessions.live(unix);
                match series.pods.get_mut(&e.identity) {
                    Some(p) => p.record(&e.stats, sessions, now.instant, previous),
                    None => new_pods.push(NewPod {
                        backend: series.name.clone(),
                        identity: e.identity.clone(),
                        stats: e.stats.clone(),
                        sessions,
                    }),
                }
            }
        }

        // Absent ones a gap; those absent for the whole window go.
        for b in &mut self.backends {
            if !b.seen {
                b.gap();
            }
            for p in b.pods.values_mut() {
                if !p.seen {
                    p.gap();
                }
            }
        }
        let oldest = self.times.front().map_or(now.instant, |s| s.instant);
        self.backends.retain(|b| b.last_seen >= oldest);
        for b in &mut self.backends {
            b.pods.retain(|_, p| p.last_seen >= oldest);
        }

        // New pods, within the cap.
        self.untracked = 0;
        let mut count: usize = self.backends.iter().map(|b| b.pods.len()).sum();
        for pod in new_pods {
            if count >= limits.max_pods {
                if !self.evict_gone_longest() {
                    self.untracked += 1;
                    continue;
                }
                count -= 1;
            }
            let mut series = PodSeries::new(len - 1, limits.capacity, now.instant);
            series.record(&pod.stats, pod.sessions, now.instant, previous);
            // The backend of a new pod was recorded in this sample, so it is still here.
            if let Some(b) = self.backends.iter_mut().find(|b| b.name == pod.backend) {
                b.pods.insert(pod.identity, series);
                count += 1;
            }
        }
    }

    /// Drops the series of the pod absent longest, if any pod is absent.
    fn evict_gone_longest(&mut self) -> bool {
        let gone = self
            .backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                b.pods
                    .iter()
                    .filter(|(_, p)| !p.seen)
                    .map(move |(id, p)| (p.last_seen, i, id.clone()))
            })
            .min_by_key(|(at, _, _)| *at);
        match gone {
            Some((_, i, id)) => self.backends[i].pods.remove(&id).is_some(),
            None => false,
        }
    }
}

/// The last reading of a counter, and whose counter it was.
#[derive(Debug)]
struct Reading<S, C> {
    /// Identifies the counter: a reload or a returning pod brings a new one.
    source: Weak<S>,
    /// What it said.
    count: C,
    /// When: rates are over the time since.
    at: Instant,
}

impl<S, C: Copy> Reading<S, C> {
    /// The previous count of the same counter and the time since it was read; a new
    /// counter counted from zero since the previous sample (it did not exist then, or
    /// it would have been read); `None` on a first reading.
    fn since(
        last: Option<&Self>,
        source: &Arc<S>,
        zero: C,
        now: Instant,
        previous: Option<Instant>,
    ) -> Option<(C, Duration)> {
        match last {
            Some(r) if std::ptr::eq(r.source.as_ptr(), Arc::as_ptr(source)) => {
                Some((r.count, now.saturating_duration_since(r.at)))
            }
            Some(_) => previous.map(|p| (zero, now.saturating_duration_since(p))),
            None => None,
        }
    }
}

/// Increase per second between two readings.
fn per_second(before: u64, now: u64, over: Duration) -> Option<f32> {
    let seconds = over.as_secs_f64();
    (seconds > 0.0).then(|| (now.saturating_sub(before) as f64 / seconds) as f32)
}

/// Increase between two readings, saturated to a slot.
fn increase(before: u64, now: u64) -> u32 {
    u32::try_from(now.saturating_sub(before)).unwrap_or(u32::MAX)
}

// === impl BackendSeries ===

/// The counters a backend sample reads: requests, then failovers by reason.
type BackendCounts = (u64, [u64; FAILOVERS.len()]);

/// One backend's series, and its pods'.
#[derive(Debug)]
struct BackendSeries {
    /// What a reload's new backend is matched by: its series go on.
    name: Arc<str>,
    /// Requests finished per second.
    requests: Ring<f32>,
    /// Failovers in each sample, by reason (in [`FAILOVERS`] order).
    failovers: [Ring<u32>; FAILOVERS.len()],
    /// The previous reading of the backend's counters.
    last: Option<Reading<Backend, BackendCounts>>,
    /// When it was last present; it goes once no sample in the window saw it.
    last_seen: Instant,
    /// Present in the sample being taken.
    seen: bool,
    /// By identity, so the JSON lists them in a stable order.
    pods: BTreeMap<Arc<str>, PodSeries>,
}

impl BackendSeries {
    fn new(name: &str, gaps: usize, capacity: usize, now: Instant) -> Self {
        BackendSeries {
            name: name.into(),
            requests: ring(gaps, capacity),
            failovers: std::array::from_fn(|_| ring(gaps, capacity)),
            last: None,
            last_seen: now,
            seen: false,
            pods: BTreeMap::new(),
        }
    }

    fn record(&mut self, backend: &Arc<Backend>, now: Instant, previous: Option<Instant>) {
        let counts: BackendCounts = (
            backend.stats.requests(),
            FAILOVERS.map(|e| backend.stats.affinity_count(e)),
        );
        let before = Reading::since(
            self.last.as_ref(),
            backend,
            (0, [0; FAILOVERS.len()]),
            now,
            previous,
        );
        self.requests
            .push_back(before.and_then(|((r, _), over)| per_second(r, counts.0, over)));
        for (i, ring) in self.failovers.iter_mut().enumerate() {
            ring.push_back(before.map(|((_, f), _)| increase(f[i], counts.1[i])));
        }
        self.last = Some(Reading {
            source: Arc::downgrade(backend),
            count: counts,
            at: now,
        });
        self.last_seen = now;
        self.seen = true;
    }

    fn gap(&mut self) {
        self.requests.push_back(None);
        for ring in &mut self.failovers {
            ring.push_back(None);
        }
    }

    /// Drops the oldest sample of this backend and its pods.
    fn pop_front(&mut self) {
        self.requests.pop_front();
        for ring in &mut self.failovers {
            ring.pop_front();
        }
        for p in self.pods.values_mut() {
            p.sessions.pop_front();
            p.requests.pop_front();
        }
    }
}

// === impl PodSeries ===

/// One pod's series (a pod is an endpoint, by identity).
#[derive(Debug)]
struct PodSeries {
    /// Live sessions pinned to the pod, as this replica counts them.
    sessions: Ring<u64>,
    /// Responses from the pod per second.
    requests: Ring<f32>,
    /// The previous reading of the pod's response counter.
    last: Option<Reading<EndpointStats, u64>>,
    /// When it was last present; it goes once no sample in the window saw it.
    last_seen: Instant,
    /// Present in the sample being taken.
    seen: bool,
}

impl PodSeries {
    fn new(gaps: usize, capacity: usize, now: Instant) -> Self {
        PodSeries {
            sessions: ring(gaps, capacity),
            requests: ring(gaps, capacity),
            last: None,
            last_seen: now,
            seen: false,
        }
    }

    fn record(
        &mut self,
        stats: &Arc<EndpointStats>,
        sessions: u64,
        now: Instant,
        previous: Option<Instant>,
    ) {
        let total = stats.total();
        let before = Reading::since(self.last.as_ref(), stats, 0, now, previous);
        self.requests
            .push_back(before.and_then(|(r, over)| per_second(r, total, over)));
        self.sessions.push_back(Some(sessions));
        self.last = Some(Reading {
            source: Arc::downgrade(stats),
            count: total,
            at: now,
        });
        self.last_seen = now;
        self.seen = true;
    }

    fn gap(&mut self) {
        self.sessions.push_back(None);
        self.requests.push_back(None);
    }
}

/// A ring of `capacity` slots starting with `gaps` empty samples (a series that begins
/// after the oldest sample still lines up with `times`).
fn ring<T>(gaps: usize, capacity: usize) -> Ring<T> {
    let mut r = VecDeque::with_capacity(capacity);
    r.resize_with(gaps, || None);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{EndpointSpec, EndpointState};
    use crate::config::Config;
    use crate::keys::KeyRing;
    use std::net::SocketAddr;
    use std::path::Path;
    use tokio::time::advance;

    fn backend(name: &str) -> Arc<Backend> {
        let c = Config::parse(
            &format!("[[backend]]\nname='{name}'\nendpoints=['127.0.0.1:1']\n"),
            "t",
            Path::new("."),
        )
        .unwrap();
        Arc::new(Backend::new(
            c.backends[0].clone(),
            Arc::new(KeyRing::ephemeral()),
            None,
        ))
    }

    fn publish(b: &Backend, pods: &[&str]) {
        b.publish(
            pods.iter()
                .enumerate()
                .map(|(i, p)| EndpointSpec {
                    identity: (*p).into(),
                    address: SocketAddr::from(([127, 0, 0, 1], 1 + i as u16)),
                    weight: 1,
                    state: EndpointState::Ready,
                    h2c: false,
                })
                .collect(),
        );
    }

    /// `n` requests answered by `pod` (each counted by the backend and the pod).
    fn serve(b: &Backend, pod: &str, n: u64) {
        let s = b.snapshot();
        let e = s.endpoints.iter().find(|e| &*e.identity == pod).unwrap();
        for _ in 0..n {
            b.stats.observe(Duration::from_millis(1));
            e.stats.response(http::StatusCode::OK);
        }
    }

    /// `n` new sessions on `pod`.
    fn sessions(b: &Backend, pod: &str, n: u64) {
        let s = b.snapshot();
        let e = s.endpoints.iter().find(|e| &*e.identity == pod).unwrap();
        let unix = b.clock().now().unix;
        for _ in 0..n {
            e.sessions.add(unix);
            s.sessions.add(unix);
        }
    }

    fn pod<'a>(json: &'a Value, backend: &str, pod: &str) -> Option<&'a Value> {
        json["backends"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == backend)?["pods"]
            .as_array()?
            .iter()
            .find(|p| p["identity"] == pod)
    }

    fn last(series: &Value) -> &Value {
        series.as_array().unwrap().last().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn rates_failovers_and_sessions_per_pod_come_from_the_counters() {
        let h = History::default();
        let b = backend("app");
        publish(&b, &["pod-a", "pod-b"]);
        let all = [b.clone()];
        h.sample(&all);
        serve(&b, "pod-a", 30);
        serve(&b, "pod-b", 20);
        sessions(&b, "pod-a", 4);
        sessions(&b, "pod-b", 2);
        for _ in 0..3 {
            b.stats.affinity(AffinityEvent::FailoverEndpointGone);
        }
        b.stats.affinity(AffinityEvent::FailoverDrained);
        advance(INTERVAL).await;
        h.sample(&all);

        let j = h.to_json();
        assert_eq!(j["times"].as_array().unwrap().len(), 2);
        let app = &j["backends"][0];
        assert_eq!(app["requests_per_second"], json!([null, 5.0]));
        assert_eq!(app["failovers"]["endpoint_gone"], json!([null, 3]));
        assert_eq!(app["failovers"]["drained"], json!([null, 1]));
        assert_eq!(app["failovers"]["endpoint_down"], json!([null, 0]));
        let a = pod(&j, "app", "pod-a").unwrap();
        assert_eq!(a["requests_per_second"], json!([null, 3.0]));
        assert_eq!(a["live_sessions"], json!([0, 4]));
        let b_ = pod(&j, "app", "pod-b").unwrap();
        assert_eq!(b_["requests_per_second"], json!([null, 2.0]));
        assert_eq!(b_["live_sessions"], json!([0, 2]));

        // The next interval is quieter: rates are per interval, not cumulative.
        serve(&b, "pod-a", 5);
        advance(INTERVAL).await;
        h.sample(&all);
        let j = h.to_json();
        assert_eq!(*last(&j["backends"][0]["requests_per_second"]), 0.5);
        assert_eq!(*last(&j["backends"][0]["failovers"]["endpoint_gone"]), 0);
        assert_eq!(
            *last(&pod(&j, "app", "pod-b").unwrap()["requests_per_second"]),
            0.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_holds_one_window_and_no_more() {
        let h = History::default();
        let b = backend("app");
        publish(&b, &["pod-a"]);
        for _ in 0..200 {
            serve(&b, "pod-a", 10);
            h.sample(std::slice::from_ref(&b));
            advance(INTERVAL).await;
        }
        let j = h.to_json();
        let times: Vec<u64> = serde_json::from_value(j["times"].clone()).unwrap();
        assert_eq!(times.len(), 90);
        assert!(times.last().unwrap() - times[0] < 900, "{times:?}");
        let a = pod(&j, "app", "pod-a").unwrap();
        for series in [
            &j["backends"][0]["requests_per_second"],
            &j["backends"][0]["failovers"]["drained"],
            &a["live_sessions"],
            &a["requests_per_second"],
        ] {
            assert_eq!(series.as_array().unwrap().len(), 90, "{series}");
        }
        assert_eq!(*last(&a["requests_per_second"]), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sampler_that_fell_behind_keeps_nothing_older_than_the_window() {
        let h = History::default();
        let b = backend("app");
        publish(&b, &["pod-a"]);
        h.sample(std::slice::from_ref(&b));
        advance(Duration::from_secs(60)).await;
        h.sample(std::slice::from_ref(&b));
        advance(WINDOW).await;
        serve(&b, "pod-a", 90);
        h.sample(std::slice::from_ref(&b));
        let j = h.to_json();
        assert_eq!(j["times"].as_array().unwrap().len(), 1);
        // The rate is over the time since the last reading, however long.
        assert_eq!(j["backends"][0]["requests_per_second"], json!([0.1]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_that_left_ages_out_after_one_window_and_not_before() {
        let h = History::default();
        let b = backend("app");
        publish(&b, &["pod-a", "pod-b"]);
        h.sample(std::slice::from_ref(&b));
        publish(&b, &["pod-a"]);
        for n in 1..90 {
            advance(INTERVAL).await;
            h.sample(std::slice::from_ref(&b));
            let j = h.to_json();
            let gone = pod(&j, "app", "pod-b").expect("still in the window");
            assert_eq!(gone["live_sessions"][0], 0, "after {n} samples");
            assert_eq!(*last(&gone["live_sessions"]), Value::Null);
        }
        advance(INTERVAL).await;
        h.sample(std::slice::from_ref(&b));
        let j = h.to_json();
        assert!(pod(&j, "app", "pod-b").is_none(), "{j}");
        assert!(pod(&j, "app", "pod-a").is_some());
        // A backend a reload removed goes the same way.
        for _ in 0..90 {
            advance(INTERVAL).await;
            h.sample(&[]);
        }
        assert_eq!(h.to_json()["backends"], json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn churn_is_capped_and_pods_gone_longest_make_room_first() {
        let h = History::new(INTERVAL, WINDOW, 3);
        let b = backend("app");
        let all = [b.clone()];
        publish(&b, &["a", "b", "c"]);
        h.sample(&all);
        publish(&b, &["b", "c"]);
        advance(INTERVAL).await;
        h.sample(&all);
        publish(&b, &["c"]);
        advance(INTERVAL).await;
        h.sample(&all);
        // d takes the place of a (gone longest), e of b; f finds every series present.
        publish(&b, &["c", "d", "e", "f"]);
        advance(INTERVAL).await;
        h.sample(&all);
        let j = h.to_json();
        let names: Vec<&str> = j["backends"][0]["pods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["identity"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "d", "e"]);
        assert_eq!(j["untracked_pods"], 1);
        // A new series lines up with the samples before it.
        assert_eq!(
            pod(&j, "app", "d").unwrap()["live_sessions"],
            json!([null, null, null, 0])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_that_starts_over_is_read_from_zero() {
        let h = History::default();
        let old = backend("app");
        publish(&old, &["pod-a"]);
        serve(&old, "pod-a", 1000);
        h.sample(std::slice::from_ref(&old));
        // A reload: a new backend of the same name, with new counters.
        let new = backend("app");
        new.inherit(&old);
        serve(&new, "pod-a", 40);
        advance(INTERVAL).await;
        h.sample(std::slice::from_ref(&new));
        let j = h.to_json();
        assert_eq!(j["backends"][0]["requests_per_second"], json!([null, 4.0]));
        // The pod kept its counters across the reload (they are carried).
        let a = pod(&j, "app", "pod-a").unwrap();
        assert_eq!(a["requests_per_second"], json!([null, 4.0]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sampler_samples_at_once_and_then_every_interval() {
        let h = Arc::new(History::default());
        let b = backend("app");
        publish(&b, &["pod-a"]);
        let sampled = b.clone();
        let task = tokio::spawn(h.clone().run(move || vec![sampled.clone()]));
        tokio::task::yield_now().await;
        assert_eq!(h.to_json()["times"].as_array().unwrap().len(), 1);
        serve(&b, "pod-a", 20);
        tokio::time::sleep(INTERVAL * 3).await;
        tokio::task::yield_now().await;
        let j = h.to_json();
        assert_eq!(j["times"].as_array().unwrap().len(), 4);
        assert_eq!(
            j["backends"][0]["requests_per_second"],
            json!([null, 2.0, 0.0, 0.0])
        );
        task.abort();
    }
}
