//! Listeners, connection handling and graceful shutdown.
//!
//! [`start`] binds the proxy and admin listeners (port 0 works: tests and the demo read
//! the bound addresses back), starts discovery, and serves until [`Running::shutdown`]:
//! readiness turns false, listeners close, in-flight requests get the grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminHook};
use crate::config::{Config, Source};
use crate::discovery::kubernetes::{self, KubernetesDiscovery, WeightedDiscovery};
use crate::discovery::static_list::StaticList;
use crate::discovery::Discovery;
use crate::gateway::controller as gateway;
use crate::gateway::status as gateway_status;
use crate::history::History;
use crate::ingress::controller::{self as ingress, Compiled, Controller};
use crate::ingress::status;
use crate::io::SendTimeout;
use crate::keys::KeyRing;
use crate::proxy::{h2, native, Connection, Proxy, State};
use crate::tls::Tls;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API client could not be configured.
    #[error(transparent)]
    Kubernetes(#[from] crate::discovery::kubernetes::Error),
    /// `prefer_local` is on but the pod name is unknown.
    #[error("backend {0}: prefer_local needs the POD_NAME environment variable (set it from the downward API: fieldRef metadata.name)")]
    NoPodName(String),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct Running {
    /// Where the proxy listener is bound.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// The proxy, for embedding programs and tests (e.g. to publish endpoints).
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Background tasks (TLS file watch, reload watch, history sampler); aborted at shutdown.
    discovery: Vec<JoinHandle<()>>,
    /// Applies new configs.
    reloader: Arc<Reloader>,
    grace: Duration,
    /// Listeners keep accepting this long after shutdown begins.
    delay: Duration,
}

/// What the embedding program adds to a config.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra admin routes (the demo's pod controls).
    pub admin_hook: Option<Arc<dyn AdminHook>>,
    /// This tether's pod name, for `prefer_local` (the downward API's `POD_NAME`).
    pub pod_name: Option<String>,
    /// The config file, re-read on reload (SIGHUP, or when it or a key file changes).
    pub config_path: Option<std::path::PathBuf>,
    /// Extra threads, each with its own runtime and SO_REUSEPORT listener on the proxy
    /// address (thread per core); 0 = serve on the calling runtime only.
    pub accept_threads: usize,
}

impl Options {
    /// Options from the environment: `POD_NAME`.
    pub fn from_env() -> Self {
        Options {
            admin_hook: None,
            pod_name: std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()),
            config_path: None,
            accept_threads: 0,
        }
    }
}

/// Binds listeners, starts discovery, and starts serving.
pub async fn start(config: &Config, options: Options) -> Result<Running, Error> {
    let Options {
        admin_hook: hook,
        pod_name,
        config_path,
        accept_threads,
    } = options;
    let keys = Arc::new(KeyRing::from_config(&config.keys));
    if keys.is_ephemeral() {
        tracing::warn!(
            "no [[keys]] configured: signing cookies with an EPHEMERAL key; sessions will not \
             survive a restart and replicas will not agree. Generate one with `tether keygen`."
        );
    }
    if let Some(b) = config
        .backends
        .iter()
        .find(|b| b.affinity.prefer_local && pod_name.is_none())
    {
        return Err(Error::NoPodName(b.name.clone()));
    }
    crate::upstream::pool::set_worker_threads(accept_threads + 1);
    let proxy = Arc::new(Proxy::new(State::new(config, keys, pod_name.as_deref())));
    let mut kube_client = None;
    let tasks = start_discovery(&proxy.state(), config, &mut kube_client).await?;
    let mut background = Vec::new();
    // Certificates for the TLS listener from Secrets: what each controller asks for,
    // on a channel of its own. Gateway listeners win a host both bind (the sources are
    // handed to the watcher Gateway API's first): a Gateway is the cluster operator's,
    // an Ingress any namespace's. None without a TLS listener: the controllers then
    // note that HTTPS cannot be served.
    let mut certificate_sources = Vec::new();
    // What the Secrets' watcher finds of the Secrets named, back to Gateway API status.
    let (verdicts_tx, verdicts_rx) = match &config.server.tls {
        Some(_) => {
            let (tx, rx) = watch::channel(Arc::new(crate::sni::Verdicts::new()));
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let mut certificate_channel = || {
        config.server.tls.as_ref().map(|_| {
            let (tx, rx) = watch::channel(Arc::new(Vec::new()));
            certificate_sources.push(rx);
            tx
        })
    };
    // Ingress mode: the controller publishes what the Ingresses route; each change is
    // merged with the file's config and applied as a reload.
    let ingress_rx = match &config.kubernetes.ingress {
        Some(settings) => {
            let client = match &kube_client {
                Some(c) => Clone::clone(c),
                None => {
                    let c = kubernetes::client(&config.kubernetes).await?;
                    kube_client = Some(c.clone());
                    c
                }
            };
            let (tx, rx) = watch::channel(Arc::new(Compiled::default()));
            // Every replica routes; the one holding the Lease writes status and Events.
            let (ours, ours_rx) = watch::channel(Arc::new(Vec::new()));
            let writer = status::Writer {
                client: client.clone(),
                settings: settings.clone(),
                identity: status::identity(pod_name.as_deref()),
                backoff: config.kubernetes.backoff_min,
            };
            background.push(tokio::spawn(writer.run(ours_rx)));
            let controller = Controller {
                client,
                settings: settings.clone(),
                ours: Some(ours),
                tls: certificate_channel(),
            };
            background.push(tokio::spawn(controller.run(tx)));
            Some(rx)
        }
        None => None,
    };
    // Gateway API mode: the same, for HTTPRoutes attached to tether's Gateways.
    let gateway_rx = match &config.kubernetes.gateway {
        Some(settings) => {
            let client = match &kube_client {
                Some(c) => Clone::clone(c),
                None => {
                    let c = kubernetes::client(&config.kubernetes).await?;
                    kube_client = Some(c.clone());
                    c
                }
            };
            let (tx, rx) = watch::channel(Arc::new(gateway::Compiled::default()));
            // Every replica routes; the one holding the mode's Lease writes status.
            let (updates, updates_rx) = watch::channel(Arc::new(Vec::new()));
            let writer = gateway_status::Writer {
                client: client.clone(),
                settings: settings.clone(),
                identity: crate::election::identity(pod_name.as_deref()),
                backoff: config.kubernetes.backoff_min,
            };
            background.push(tokio::spawn(writer.run(updates_rx)));
            let controller = gateway::Controller {
                client,
                settings: settings.clone(),
                status: Some(updates),
                tls: certificate_channel(),
                secrets: verdicts_rx,
            };
            background.push(tokio::spawn(controller.run(tx)));
            Some(rx)
        }
        None => None,
    };
    let reloader = Arc::new(Reloader {
        proxy: proxy.clone(),
        pod_name,
        path: config_path,
        current: std::sync::Mutex::new(config.clone()),
        ingress: std::sync::Mutex::new(Arc::new(Compiled::default())),
        gateway: std::sync::Mutex::new(Arc::new(gateway::Compiled::default())),
        discovery: std::sync::Mutex::new(tasks),
        kube_client: tokio::sync::Mutex::new(kube_client),
    });
    if let Some(mut rx) = ingress_rx {
        let reloader = reloader.clone();
        background.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let compiled = rx.borrow_and_update().clone();
                let _ = reloader.apply_ingress(compiled).await;
            }
        }));
    }
    if let Some(mut rx) = gateway_rx {
        let reloader = reloader.clone();
        background.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let compiled = rx.borrow_and_update().clone();
                let _ = reloader.apply_gateway(compiled).await;
            }
        }));
    }

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let extra = accept_threads;
    let proxy_listener = if extra == 0 {
        bind(config.server.listen).await?
    } else {
        reuseport_listener(config.server.listen)?
    };
    let admin_listener = bind(config.server.admin).await?;
    let local = |l: &TcpListener, addr| {
        l.local_addr()
            .map_err(|source| Error::Bind { addr, source })
    };
    let proxy_addr = local(&proxy_listener, config.server.listen)?;
    let admin_addr = local(&admin_listener, config.server.admin)?;
    let mut discovery = background;

    let (shutdown, rx) = watch::channel(false);
    let grace = config.server.shutdown_grace;
    let limits = Limits {
        header_timeout: config.server.header_timeout,
        max_header_bytes: config.server.max_header_bytes,
        max_connections: config.server.max_connections,
        send_timeout: config.server.send_timeout,
    };
    let tls = match &config.server.tls {
        Some(t) => {
            let tls = Arc::new(Tls::load(&t.cert_file, &t.key_file)?);
            discovery.push(tokio::spawn(tls.clone().watch(Duration::from_secs(2))));
            if let (false, Some(client)) = (
                certificate_sources.is_empty(),
                reloader.kube_client.lock().await.clone(),
            ) {
                let debounce = [
                    config.kubernetes.ingress.as_ref().map(|i| i.debounce),
                    config.kubernetes.gateway.as_ref().map(|g| g.debounce),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::from_millis(200));
                let secrets = crate::sni::Watcher {
                    client,
                    certificates: tls.certificates(),
                    debounce,
                    verdicts: verdicts_tx,
                };
                // Created Ingress mode's first; Gateway API's wins, so it goes first.
                let mut sources = std::mem::take(&mut certificate_sources);
                sources.reverse();
                discovery.push(tokio::spawn(secrets.run(sources)));
            }
            Some(tls)
        }
        None => None,
    };
    // Thread per core: each extra thread runs its own current-thread runtime accepting on
    // its own SO_REUSEPORT listener, so connections spread over threads in the kernel and
    // a request never crosses threads.
    let mut threads = Vec::new();
    for n in 0..extra {
        let listener = reuseport_std(proxy_addr).map_err(|source| Error::Bind {
            addr: proxy_addr,
            source,
        })?;
        let (rx, tls) = (rx.clone(), tls.clone());
        let ended = proxy.send_timeouts();
        let serves = ProxyOnly::Proxy(proxy.clone());
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("tether-accept-{}", n + 1))
            .spawn(move || {
                crate::upstream::pool::bind_worker_thread(n + 1);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start an accept thread's runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serve(l, rx, grace, limits, ended, tls, serves).await,
                        Err(e) => tracing::error!(error = %e, "accept thread cannot listen"),
                    }
                });
                let _ = done.send(());
            })
            .map_err(|source| Error::Bind {
                addr: proxy_addr,
                source,
            })?;
        threads.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    let proxy_task = tokio::spawn(serve(
        proxy_listener,
        rx.clone(),
        grace,
        limits,
        proxy.send_timeouts(),
        tls,
        ProxyOnly::Proxy(proxy.clone()),
    ));
    // The dashboard's history: sampled off the request path, from whatever backends
    // the routing state holds at each tick (a reload's included).
    let history = Arc::new(History::default());
    let sampled = proxy.clone();
    discovery.push(tokio::spawn(
        history
            .clone()
            .run(move || sampled.state().backends.clone()),
    ));
    let p = proxy.clone();
    let admin_limits = Limits {
        max_connections: Some(256),
        ..limits
    };
    let admin_task = tokio::spawn(serve(
        admin_listener,
        rx,
        grace,
        admin_limits,
        Default::default(),
        None,
        Serves::Admin(move |_peer, _secure| {
            let (p, history, hook) = (p.clone(), history.clone(), hook.clone());
            service_fn(move |req: Request<Incoming>| {
                let (p, history, hook) = (p.clone(), history.clone(), hook.clone());
                async move {
                    let answer = admin::handle(&req, &p, &history, hook.as_ref()).await;
                    Ok::<_, Infallible>(answer)
                }
            })
        }),
    ));
    tracing::info!(%proxy_addr, %admin_addr, "tether listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        proxy,
        shutdown,
        tasks: {
            let mut t = vec![proxy_task, admin_task];
            t.extend(threads);
            t
        },
        discovery,
        reloader,
        grace,
        delay: config.server.shutdown_delay,
    })
}

impl Running {
    /// Turns readiness off at once, keeps accepting for `shutdown_delay` (so the
    /// Service stops sending new connections here), stops accepting, then lets in-flight
    /// requests and upgraded connections finish within the grace period.
    pub async fn shutdown(self) {
        self.proxy.begin_shutdown();
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let _ = self.shutdown.send(true);
        for d in &self.discovery {
            d.abort();
        }
        self.reloader.stop_discovery();
        let deadline = tokio::time::Instant::now() + self.grace + Duration::from_secs(1);
        for t in self.tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        self.proxy.close_tunnels(deadline).await;
    }

    /// Re-reads the config file and applies it (see [`Reloader::reload`]).
    pub async fn reload(&self) -> Result<(), String> {
        self.reloader.reload().await
    }

    /// Applies `config` as a reload would.
    pub async fn apply(&self, config: &Config) -> Result<(), String> {
        self.reloader.apply(config).await
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully; reloads on SIGHUP and
    /// when the config file or a key file changes.
    pub async fn run_until_signal(mut self) {
        let watcher = tokio::spawn(self.reloader.clone().watch(Duration::from_secs(2)));
        self.discovery.push(watcher);
        wait_for_signal().await;
        tracing::info!(grace = ?self.grace, "shutting down");
        self.shutdown().await;
        tracing::info!("stopped");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A std listener on `addr` with SO_REUSEPORT, so several threads can accept on it.
fn reuseport_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    listener.into_std()
}

fn reuseport_listener(addr: SocketAddr) -> Result<TcpListener, Error> {
    reuseport_std(addr)
        .and_then(TcpListener::from_std)
        .map_err(|source| Error::Bind { addr, source })
}

/// The one API client every Kubernetes discovery shares, made at its first use.
async fn shared_client(
    kube_client: &mut Option<kube::Client>,
    config: &Config,
) -> Result<kube::Client, Error> {
    if let Some(c) = kube_client {
        return Ok(c.clone());
    }
    let c = kubernetes::client(&config.kubernetes).await?;
    *kube_client = Some(c.clone());
    Ok(c)
}

/// Starts endpoint discovery for every backend of `state`: static lists are published at
/// once, Kubernetes watchers are spawned (their handles returned).
async fn start_discovery(
    state: &State,
    config: &Config,
    kube_client: &mut Option<kube::Client>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut tasks = Vec::new();
    for (backend, settings) in state.backends.iter().zip(&config.backends) {
        match &settings.source {
            Source::Static(endpoints) => {
                StaticList {
                    endpoints: endpoints.clone(),
                    h2c: settings.h2c,
                }
                .run(backend.clone())
                .await
            }
            Source::Kubernetes(source) => {
                let client = shared_client(kube_client, config).await?;
                let discovery = KubernetesDiscovery {
                    client,
                    h2c: settings.h2c,
                    source: source.clone(),
                    backoff: (config.kubernetes.backoff_min, config.kubernetes.backoff_max),
                };
                tasks.push(tokio::spawn(discovery.run(backend.clone())));
            }
            Source::Weighted(services) => {
                let client = shared_client(kube_client, config).await?;
                let discovery = WeightedDiscovery {
                    client,
                    h2c: settings.h2c,
                    services: services.clone(),
                    backoff: (config.kubernetes.backoff_min, config.kubernetes.backoff_max),
                };
                tasks.push(tokio::spawn(discovery.run(backend.clone())));
            }
        }
    }
    Ok(tasks)
}

/// `[kubernetes.ingress]` of the current file config.
fn previous_ingress(current: &std::sync::Mutex<Config>) -> Option<crate::config::IngressSettings> {
    match current.lock() {
        Ok(c) => c.kubernetes.ingress.clone(),
        Err(p) => p.into_inner().kubernetes.ingress.clone(),
    }
}

/// Applies new configs without a restart: routes, backends, affinity settings, keys.
///
/// A new routing state is built beside the old one and swapped in with one store, so
/// in-flight requests finish on the old one. Each backend that exists in both configs
/// inherits the old one's endpoints and what they carry (health, connection pools, live
/// session counts, counters), so its sessions keep their endpoints and it is routable at
/// once; discovery restarts for the new backends. A config that does not validate is
/// rejected, logged and counted, and the old one keeps serving. Listener addresses,
/// workers and TLS files are read at start only (a change is logged).
pub struct Reloader {
    proxy: Arc<Proxy>,
    pod_name: Option<String>,
    path: Option<std::path::PathBuf>,
    /// The config file's config, as last applied (without the Ingresses').
    current: std::sync::Mutex<Config>,
    /// What the Ingresses route (Ingress mode), merged into every config applied.
    ingress: std::sync::Mutex<Arc<Compiled>>,
    /// What the HTTPRoutes route (Gateway API mode), merged after the Ingresses'.
    gateway: std::sync::Mutex<Arc<gateway::Compiled>>,
    discovery: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Also serialises reloads.
    kube_client: tokio::sync::Mutex<Option<kube::Client>>,
}

impl Reloader {
    /// Re-reads the config file and applies it.
    pub async fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Err("no config file to reload (started without one)".into());
        };
        match Config::from_file(path) {
            Ok(c) => {
                for w in &c.warnings {
                    tracing::warn!("{w}");
                }
                self.apply(&c).await
            }
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    fn failed(&self, reason: String) -> String {
        self.proxy.count_reload(false);
        tracing::error!(%reason, "config reload rejected; the previous config keeps serving");
        reason
    }

    /// Applies a validated config (merged with what the Ingresses route, in Ingress
    /// mode).
    pub async fn apply(&self, config: &Config) -> Result<(), String> {
        let kube_client = self.kube_client.lock().await;
        let extra = self.extra();
        if previous_ingress(&self.current) != config.kubernetes.ingress {
            tracing::warn!("[kubernetes.ingress] changes take effect at the next restart");
        }
        let previous_gateway = match self.current.lock() {
            Ok(c) => c.kubernetes.gateway.clone(),
            Err(p) => p.into_inner().kubernetes.gateway.clone(),
        };
        if previous_gateway != config.kubernetes.gateway {
            tracing::warn!("[kubernetes.gateway] changes take effect at the next restart");
        }
        self.install(kube_client, config, &extra).await
    }

    /// Applies what the Ingresses route now, merged with the config file's config.
    pub async fn apply_ingress(&self, extra: Arc<Compiled>) -> Result<(), String> {
        self.apply_kubernetes(&self.ingress, extra).await
    }

    /// Applies what the HTTPRoutes route now, merged with the config file's config.
    pub async fn apply_gateway(&self, routes: Arc<gateway::Compiled>) -> Result<(), String> {
        self.apply_kubernetes(&self.gateway, routes).await
    }

    /// Puts what one kind of Kubernetes object routes now into its `slot`, and applies
    /// the config file's config merged with every slot.
    async fn apply_kubernetes<T>(
        &self,
        slot: &std::sync::Mutex<Arc<T>>,
        now: Arc<T>,
    ) -> Result<(), String> {
        let kube_client = self.kube_client.lock().await;
        let base = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        match slot.lock() {
            Ok(mut s) => *s = now,
            Err(p) => *p.into_inner() = now,
        }
        self.install(kube_client, &base, &self.extra()).await
    }

    /// What Kubernetes resources route: the Ingresses', then the HTTPRoutes' (as one
    /// fragment for [`ingress::merge`]). Their backend names never clash: an
    /// HTTPRoute's are `httproute:…`, with `:` that no Ingress backend name holds.
    fn extra(&self) -> Compiled {
        let mut extra = match self.ingress.lock() {
            Ok(i) => (**i).clone(),
            Err(p) => (**p.into_inner()).clone(),
        };
        let routes = match self.gateway.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        extra.backends.extend(routes.backends.iter().cloned());
        extra
            .routes
            .extend(routes.routes.iter().map(|r| ingress::IngressRoute {
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                to: r.to.clone(),
                matches: r.matches.clone(),
                filters: r.filters.clone(),
                ingress: format!("HTTPRoute {}", r.route),
            }));
        extra
    }

    /// Builds and swaps in the state for `base` merged with `extra`; `base` becomes the
    /// current file config.
    async fn install(
        &self,
        mut kube_client: tokio::sync::MutexGuard<'_, Option<kube::Client>>,
        base: &Config,
        extra: &Compiled,
    ) -> Result<(), String> {
        let (merged, dropped) = ingress::merge(base, extra);
        for d in &dropped {
            tracing::warn!("ingress: {d}");
        }
        let config = &merged;
        if let Some(b) = config
            .backends
            .iter()
            .find(|b| b.affinity.prefer_local && self.pod_name.is_none())
        {
            return Err(self.failed(Error::NoPodName(b.name.clone()).to_string()));
        }
        let old = self.proxy.state();
        let keys = Arc::new(KeyRing::from_config(&config.keys));
        let keys = if config.keys.is_empty() && old.keys.is_ephemeral() {
            // Keep the ephemeral key: replacing it would invalidate every cookie.
            old.keys.clone()
        } else {
            keys
        };
        let state = State::new(config, keys, self.pod_name.as_deref());
        for b in &state.backends {
            if let Some(prev) = old.backends.iter().find(|o| o.name() == b.name()) {
                b.inherit(prev);
            }
        }
        let tasks = match start_discovery(&state, config, &mut kube_client).await {
            Ok(t) => t,
            Err(e) => return Err(self.failed(e.to_string())),
        };
        let previous = match self.current.lock() {
            Ok(mut c) => std::mem::replace(&mut *c, base.clone()),
            Err(p) => p.into_inner().clone(),
        };
        if previous.server.listen != config.server.listen
            || previous.server.admin != config.server.admin
            || previous.server.workers != config.server.workers
        {
            tracing::warn!("listen, admin and workers changes take effect at the next restart");
        }
        self.proxy.replace_state(state);
        let old_tasks = match self.discovery.lock() {
            Ok(mut d) => std::mem::replace(&mut *d, tasks),
            Err(p) => std::mem::replace(&mut *p.into_inner(), tasks),
        };
        for t in old_tasks {
            t.abort();
        }
        self.proxy.count_reload(true);
        tracing::info!(
            backends = config.backends.len(),
            routes = config.routes.len(),
            keys = config.keys.len(),
            "config reloaded"
        );
        Ok(())
    }

    fn stop_discovery(&self) {
        if let Ok(d) = self.discovery.lock() {
            for t in d.iter() {
                t.abort();
            }
        }
    }

    /// Reloads on SIGHUP, and when the config file or a key file changes (polled every
    /// `every`: a Kubernetes Secret or ConfigMap update arrives as a changed file).
    async fn watch(self: Arc<Self>, every: Duration) {
        let files = |s: &Reloader| -> Vec<std::path::PathBuf> {
            let mut v: Vec<_> = s.path.iter().cloned().collect();
            if let Ok(c) = s.current.lock() {
                v.extend(c.keys.iter().filter_map(|k| k.file.clone()));
            }
            v
        };
        let stamp = |files: &[std::path::PathBuf]| -> Vec<Option<std::time::SystemTime>> {
            files
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect()
        };
        let mut last = stamp(&files(&self));
        let mut tick = tokio::time::interval(every);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.reload().await;
                }
                _ = tick.tick() => {
                    let now = stamp(&files(&self));
                    if now != last {
                        tracing::info!("config or key file changed: reloading");
                        let _ = self.reload().await;
                    }
                }
            }
            last = stamp(&files(&self));
        }
    }
}

/// Per-listener connection settings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Slowloris guard: a client must finish sending request headers within this time.
    header_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    max_header_bytes: usize,
    /// Concurrent connections accepted; more wait in the kernel's accept queue.
    max_connections: Option<usize>,
    /// A client that takes no bytes for this long while being written to is cut off.
    send_timeout: Duration,
}

/// Ends a connection with a reset instead of a FIN (zero linger), so a client whose
/// close-delimited response was cut off sees an error, not what would pass for the end
/// of the body. Only then: a reset also discards what is still queued for the client.
fn reset(stream: &SendTimeout<tokio::net::TcpStream>) {
    let _ = socket2::SockRef::from(stream.get_ref()).set_linger(Some(Duration::ZERO));
}

/// What a listener serves.
enum Serves<F> {
    /// The proxy: HTTP/1 connections, plaintext or TLS whose ALPN did not choose h2, are
    /// its HTTP/1 codec's ([`native`]); HTTP/2 (ALPN h2, or a plaintext connection
    /// opening with the preface) is its HTTP/2 server's ([`h2`]).
    Proxy(Arc<Proxy>),
    /// The admin endpoints, through hyper (HTTP/1.1 and cleartext HTTP/2), with the
    /// service this makes for each connection.
    Admin(F),
}

/// The proxy listener's admin service: none is ever made.
enum NoService {}

/// What the proxy listener serves.
type ProxyOnly = Serves<fn(SocketAddr, bool) -> NoService>;

impl hyper::service::Service<Request<Incoming>> for NoService {
    type Response = hyper::Response<crate::upstream::body::ProxyBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, _: Request<Incoming>) -> Self::Future {
        match *self {}
    }
}

/// Accepts connections until shutdown, then drains them for at most `grace`.
#[allow(clippy::too_many_arguments)]
async fn serve<F, S, B>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: Limits,
    ended: Arc<std::sync::atomic::AtomicU64>,
    tls: Option<Arc<Tls>>,
    serves: Serves<F>,
) where
    F: Fn(SocketAddr, bool) -> S,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The admin listener's connections, which hyper serves.
    let graceful = GracefulShutdown::new();
    // The proxy's connections, so shutdown waits for them as hyper's watcher does for
    // its own.
    let proxied = tokio_util::task::TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Duration::from_secs(30));
    let native_limits = native::Limits {
        header_timeout: limits.header_timeout,
        max_header_bytes: limits.max_header_bytes,
    };
    let h2_limits = h2::Limits {
        header_timeout: limits.header_timeout,
        // The HTTP/1 codec's rule: an idle keep-alive connection goes after the time a
        // request head is given.
        idle_timeout: limits.header_timeout,
        max_header_bytes: limits.max_header_bytes,
        send_timeout: limits.send_timeout,
    };
    let permits = limits
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    loop {
        let permit = match &permits {
            Some(p) => tokio::select! {
                permit = p.clone().acquire_owned() => permit.ok(),
                _ = shutdown.changed() => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = SendTimeout::new(stream, limits.send_timeout, ended.clone());
        let proxy = match &serves {
            Serves::Proxy(proxy) => proxy.clone(),
            Serves::Admin(make_service) => {
                let svc = make_service(peer, false);
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
                continue;
            }
        };
        let rx = shutdown.clone();
        let token = proxied.token();
        // Two task shapes: a plaintext connection's task does not carry room for a TLS
        // session it never has (task memory is the size of its largest state, and TLS
        // made every connection pay ~KBs).
        let Some(acceptor) = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current()))
        else {
            tokio::spawn(async move {
                let conn = Connection::new(peer, false);
                let handoff = proxy
                    .serve_native(stream, &conn, native_limits, rx.clone())
                    .await;
                match handoff {
                    // HTTP/2 by prior knowledge (RFC 9113 §3.3).
                    native::Handoff::Http2(stream) => {
                        if let Err(e) = proxy.serve_h2(stream, &conn, h2_limits, rx).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    native::Handoff::Closed(_) => {}
                    native::Handoff::Aborted { stream, unframed } => {
                        if unframed {
                            reset(&stream);
                        }
                    }
                }
                drop((token, permit));
            });
            continue;
        };
        tokio::spawn(async move {
            // The handshake runs here, off the accept loop, bounded like a request head
            // so a silent client cannot hold a slot.
            let tls_stream =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
            let conn = Connection::new(peer, true);
            // ALPN's choice is the only protocol served (RFC 9113 §3.2-3.4): HTTP/2 when
            // it chose h2, else HTTP/1.
            if tls_stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]) {
                if let Err(e) = proxy.serve_h2(tls_stream, &conn, h2_limits, rx).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            } else {
                match proxy
                    .serve_native(tls_stream, &conn, native_limits, rx)
                    .await
                {
                    // The TLS session ends with close_notify, so the client can tell a
                    // complete close-delimited response from a cut one...
                    native::Handoff::Closed(mut stream) => {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                    }
                    // ...which therefore ends without one: that missing close_notify is
                    // the client's sign.
                    native::Handoff::Aborted { .. } => {}
                    // An HTTP/2 preface after ALPN chose HTTP/1.
                    native::Handoff::Http2(_) => {
                        tracing::debug!(%peer, "http/2 preface without ALPN h2; closing");
                    }
                }
            }
            drop((token, permit));
        });
    }
    drop(listener);
    proxied.close();
    let drained = async {
        graceful.shutdown().await;
        proxied.wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(?grace, "grace period over with requests still in flight");
    }
}
