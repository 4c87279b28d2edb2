//! An in-process session simulator: thousands of sessions through the real exchange
//! ([`Proxy::exchange`]: the affinity decision, the candidates and their tries, the
//! placement, its commit and the `Set-Cookie` line) of a real backend snapshot. The
//! network is an in-memory set of pods ([`Pods`], the exchange's fourth [`Upstream`])
//! in which every endpoint answers 200, and time comes from tokio's clock, so tests run
//! under `start_paused` and stay deterministic. No sockets: the proxy's I/O is tested
//! elsewhere; this is the policy as the proxy runs it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, COOKIE};
use http::StatusCode;
use tether::affinity::cookie::{HexId, Memo};
use tether::affinity::{KeyRing, Outcome, SessionId};
use tether::backend::{Backend, Endpoint, EndpointSpec, EndpointState};
use tether::clock::Clock;
use tether::config::{AffinitySettings, BackendSettings, Config, KeyMaterial};
use tether::proxy::exchange::{Arrival, Cut, Route, Try, Upstream};
use tether::proxy::{ClientFault, Connection, Error, Proxy, State};
use tether::upstream::pool::ConnectError;

/// What one simulated request saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub endpoint: String,
    pub outcome: Outcome,
    pub previous: Option<String>,
    pub session: SessionId,
    /// The cookie value the client holds afterwards.
    pub cookie: String,
}

pub struct Sim {
    pub backend: Arc<Backend>,
    pub keys: Arc<KeyRing>,
    /// The receiver of [`Proxy::exchange`]; its routing state holds [`Sim::backend`].
    proxy: Proxy,
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
        let mut state = State::new(&config, keys.clone(), None);
        state.backends[0] = backend.clone();
        let proxy = Proxy::new(state);
        Sim {
            backend,
            keys,
            proxy,
        }
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

    /// One request carrying `cookie` (none = a new client), on a new HTTP/1 connection,
    /// through the exchange; every endpoint answers.
    pub async fn request(&self, cookie: Option<&str>) -> Hit {
        self.exchange(cookie, &|_| true)
            .await
            .expect("every pod answers")
    }

    /// A new session whose id `admit` accepts, placed by the exchange: new clients
    /// arrive until one's session is admitted, and the others hang up before their
    /// request is sent (the exchange sees the client's fault, [`Try::Client`]), so
    /// they are placed nowhere and counted in no endpoint's load. Tests shape arrivals
    /// with it: the exchange draws session ids at random, as it must, and this keeps
    /// only the arrivals a test asks for.
    pub async fn new_session_where(&self, admit: impl Fn(SessionId) -> bool) -> Hit {
        loop {
            match self.exchange(None, &admit).await {
                Ok(hit) => return hit,
                Err(Error::Client(ClientFault::Aborted)) => {}
                Err(e) => panic!("a new session failed: {e}"),
            }
        }
    }

    async fn exchange(
        &self,
        cookie: Option<&str>,
        admit: &dyn Fn(SessionId) -> bool,
    ) -> Result<Hit, Error> {
        let name = &self.settings().cookie.name;
        let mut fields = HeaderMap::new();
        if let Some(value) = cookie {
            let line = HeaderValue::from_str(&format!("{name}={value}")).unwrap();
            fields.insert(COOKIE, line);
        }
        let mut pods = Pods {
            fields,
            admit,
            session: None,
            placed: None,
            answered: None,
        };
        let conn = Connection::new(SocketAddr::from(([192, 0, 2, 1], 40000)), false);
        let route = Route {
            backend: self.backend.clone(),
            keys: self.keys.clone(),
            logged: false,
            max_body: None,
            request_buffer: 64 * 1024,
            response_buffer: 64 * 1024,
            filters: None,
            target: None,
        };
        let mut memo = Memo::default();
        let mut line = Vec::new();
        let started = tokio::time::Instant::now();
        let served = self
            .proxy
            .exchange(
                &mut pods,
                &conn,
                &route,
                Arrival::Http1(&mut memo),
                started,
                &mut line,
            )
            .await?;
        assert_eq!(served.status, StatusCode::OK);
        let cookie = if served.set_cookie {
            set_cookie_value(&line, name)
        } else {
            cookie.unwrap_or_default().to_string()
        };
        let (outcome, previous) = pods.placed.expect("a served request was placed");
        Ok(Hit {
            endpoint: pods.answered.expect("a served request was answered"),
            outcome,
            previous,
            session: pods.session.expect("the exchange began a session"),
            cookie,
        })
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

/// The in-memory pods one request meets: every endpoint answers 200 at once, unless the
/// client hangs up first (its session not admitted). Records what the exchange told
/// the request: its session, the placement stamped on its last try, and who answered.
struct Pods<'a> {
    fields: HeaderMap,
    admit: &'a dyn Fn(SessionId) -> bool,
    session: Option<SessionId>,
    placed: Option<(Outcome, Option<String>)>,
    answered: Option<String>,
}

impl Upstream for Pods<'_> {
    type Fields = HeaderMap;
    type Answer = ();
    /// The endpoint reached.
    type Connection = Arc<str>;

    fn fields(&self) -> &HeaderMap {
        &self.fields
    }

    fn replayable(&self) -> bool {
        true
    }

    fn begin(
        &mut self,
        _conn: &Connection,
        session: &HexId,
        _changes: tether::proxy::exchange::Changes<'_>,
    ) {
        self.session = Some(parse_session(session.as_str()));
    }

    fn place(&mut self, outcome: Outcome, previous: Option<&str>) {
        self.placed = Some((outcome, previous.map(str::to_string)));
    }

    async fn connect(
        &mut self,
        endpoint: &Endpoint,
        _settings: &BackendSettings,
        _fresh: bool,
    ) -> Result<Arc<str>, ConnectError> {
        Ok(endpoint.identity.clone())
    }

    async fn send(&mut self, endpoint: Arc<str>, _settings: &BackendSettings) -> Try<()> {
        let session = self.session.expect("the exchange begins before it sends");
        if !(self.admit)(session) {
            return Try::Client(ClientFault::Aborted.into());
        }
        self.answered = Some(endpoint.to_string());
        Try::Answer {
            status: StatusCode::OK,
            answer: (),
        }
    }

    async fn settle(&mut self, _answer: &mut (), _settings: &BackendSettings) -> Result<(), Cut> {
        Ok(())
    }
}

/// The session id from its `x-tether-session` hex form.
fn parse_session(hex: &str) -> SessionId {
    assert_eq!(hex.len(), 32, "session id {hex:?}");
    let mut id = [0u8; 16];
    for (b, pair) in id.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *b = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
    }
    SessionId(id)
}

/// The cookie value in a `Set-Cookie` line `name=value; attributes`.
fn set_cookie_value(line: &[u8], name: &str) -> String {
    let line = std::str::from_utf8(line).expect("a Set-Cookie line is ASCII");
    let pair = line.split(';').next().unwrap_or_default();
    let value = pair
        .strip_prefix(name)
        .and_then(|v| v.strip_prefix('='))
        .unwrap_or_else(|| panic!("Set-Cookie {line:?} is not for {name}"));
    value.to_string()
}
