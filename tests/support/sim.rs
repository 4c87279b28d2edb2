//! An in-process session simulator: thousands of sessions through the real affinity
//! path (decide → candidates → placement → commit → cookie) of a real backend snapshot,
//! with time from tokio's clock so tests run under `start_paused` and stay
//! deterministic. No sockets: the proxy's I/O is tested elsewhere; this is the policy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tether::affinity::{self, KeyRing, Outcome, SessionId};
use tether::backend::{Backend, EndpointSpec, EndpointState};
use tether::clock::Clock;
use tether::config::{AffinitySettings, Config, KeyMaterial};

/// What one simulated request saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub endpoint: String,
    pub outcome: Outcome,
    pub previous: Option<String>,
    pub session: SessionId,
    /// The cookie the client holds afterwards.
    pub cookie: String,
}

pub struct Sim {
    pub backend: Arc<Backend>,
    pub keys: Arc<KeyRing>,
}

impl Sim {
    /// A backend named `app` with `affinity` lines for `[backend.affinity]`.
    pub fn new(affinity_toml: &str) -> Sim {
        let text = format!(
            "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n[backend.affinity]\n{affinity_toml}\n"
        );
        let config = Config::parse(&text, "<sim>", Path::new(".")).unwrap();
        let keys = Arc::new(KeyRing::from_config(&[KeyMaterial {
            id: "k1".into(),
            secret: vec![7; 32],
            file: None,
        }]));
        let backend = Arc::new(Backend::with_clock(
            config.backends[0].clone(),
            keys.clone(),
            None,
            Clock::at(1_790_000_000),
        ));
        Sim { backend, keys }
    }

    pub fn settings(&self) -> &AffinitySettings {
        &self.backend.settings.affinity
    }

    /// Publishes ready endpoints `pod-0..pod-{n-1}` with weight 1.
    pub fn pods(&self, n: usize) {
        self.weighted(&vec![1; n]);
    }

    /// Publishes ready endpoints with these weights.
    pub fn weighted(&self, weights: &[u32]) {
        self.backend.publish(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| EndpointSpec {
                    identity: format!("pod-{i}").into(),
                    address: SocketAddr::from(([10, 0, 0, 1 + i as u8], 8080)),
                    weight: w,
                    state: EndpointState::Ready,
                    h2c: false,
                })
                .collect(),
        );
    }

    /// One request carrying `cookie` (none = a new client), served by the first
    /// candidate (every endpoint answers).
    pub fn request(&self, cookie: Option<&str>) -> Hit {
        let snapshot = self.backend.snapshot();
        let now = self.backend.clock().now();
        let d = affinity::decide(
            &self.keys,
            &snapshot,
            cookie.map(str::as_bytes),
            self.settings(),
            now,
        );
        self.serve(d, cookie)
    }

    /// A new session with a chosen id (to shape arrivals).
    pub fn new_session(&self, session: SessionId) -> Hit {
        let snapshot = self.backend.snapshot();
        let d = affinity::new_session(&snapshot, session, self.backend.clock().now());
        self.serve(d, None)
    }

    fn serve(&self, d: affinity::Decision, cookie: Option<&str>) -> Hit {
        let snapshot = self.backend.snapshot();
        let i = d.candidates(&snapshot).as_slice()[0];
        let p = d.placement(i, &snapshot);
        d.commit(i, &snapshot);
        let cookie = if p.set_cookie {
            d.cookie_value(&self.keys, i, &snapshot)
        } else {
            cookie.unwrap_or_default().to_string()
        };
        Hit {
            endpoint: snapshot.endpoints[i as usize].identity.to_string(),
            outcome: p.outcome,
            previous: p.previous.map(str::to_string),
            session: d.session,
            cookie,
        }
    }

    /// Live sessions per endpoint, as the load bound sees them.
    pub fn live(&self) -> Vec<(String, u64)> {
        let s = self.backend.snapshot();
        let now = self.backend.clock().now().unix;
        s.endpoints
            .iter()
            .map(|e| (e.identity.to_string(), e.sessions.live(now)))
            .collect()
    }
}
