//! Ingress mode: Ingresses of tether's IngressClass, served by a fake API server
//! speaking the list/watch protocol, route real requests to real test pods; the
//! replica holding the Lease (and only it) writes their status and Events.

mod support;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::fake_apiserver::{ingress, ingress_class, ModeCluster};
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.example.com";
/// The address the replicas publish in Ingress status.
const ADDRESS: &str = "203.0.113.7";
/// The replicas' Lease (in the kubeconfig's namespace, `default`).
const LEASE: &str = "tether-status-test";

/// Answers `path` on `host` through the tether at `addr`.
async fn status_via(addr: std::net::SocketAddr, host: &str, path: &str) -> StatusCode {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap();
    TestClient::new().send(req).await.status
}

/// A cluster (see [`ModeCluster`]) with tether's IngressClass and another controller's,
/// and a tether in Ingress mode with no backend of its own.
struct Cluster(ModeCluster);

impl std::ops::Deref for Cluster {
    type Target = ModeCluster;
    fn deref(&self) -> &ModeCluster {
        &self.0
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let classes = vec![
            ingress_class("tether", "tether.io/ingress-controller"),
            ingress_class("nginx", "k8s.io/ingress-nginx"),
        ];
        let mode = "[kubernetes.ingress]\ndebounce = \"20ms\"\n";
        Cluster(ModeCluster::start(NS, classes, mode).await)
    }

    /// The shop Ingress: cookie affinity with cookie `SHOP`, on `paths`.
    fn shop(&self, class: &str, paths: &[(&str, &str)]) -> serde_json::Value {
        ingress(
            NS,
            "shop",
            class,
            HOST,
            paths,
            "web",
            self.port,
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                ("nginx.ingress.kubernetes.io/session-cookie-name", "SHOP"),
                ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
            ],
        )
    }

    async fn get(&self, host: &str, path: &str, cookie: Option<&str>) -> Reply {
        let mut b =
            Request::get(format!("http://{}{path}", self.proxy.proxy_addr)).header("host", host);
        if let Some(c) = cookie {
            b = b.header("cookie", format!("SHOP={c}"));
        }
        TestClient::new()
            .send(b.body(Full::default()).unwrap())
            .await
    }

    /// Waits until `path` on the shop host answers `status`.
    async fn wait_status(&self, path: &str, status: StatusCode) {
        wait_for_async(&format!("{path} answering {status}"), || async {
            self.get(HOST, path, None).await.status == status
        })
        .await;
    }

    /// Another tether in Ingress mode, as pod `pod`: it publishes [`ADDRESS`] and
    /// elects its status writer with a 2 s Lease of its own (the cluster's first tether
    /// has no address and the default Lease).
    async fn replica(&self, pod: &str) -> Running {
        let cfg = self.config(&format!(
            "[kubernetes.ingress]\ndebounce = \"20ms\"\naddress = \"{ADDRESS}\"\n\
             lease = \"{LEASE}\"\nlease_duration = \"2s\"\n"
        ));
        let options = tether::server::Options {
            pod_name: Some(pod.to_string()),
            ..Default::default()
        };
        proxy_with(&cfg, options).await
    }

    /// The status the API server holds for Ingress `name`.
    fn load_balancer(&self, name: &str) -> serde_json::Value {
        self.api
            .object("ingresses", NS, name)
            .map(|i| i["status"]["loadBalancer"]["ingress"].clone())
            .unwrap_or_default()
    }

    /// The identity holding the replicas' Lease.
    fn holder(&self) -> Option<String> {
        self.api
            .lease("default", LEASE)?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .map(str::to_string)
    }

    /// The Events the replicas created on Ingress `name` (the cluster's first tether,
    /// holding a Lease of its own, reports too).
    fn events_on(&self, name: &str) -> Vec<serde_json::Value> {
        self.api
            .events()
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .filter(|e| {
                e["reportingInstance"] == "tether-a" || e["reportingInstance"] == "tether-b"
            })
            .collect()
    }
}

#[tokio::test]
async fn ingress_of_our_class_routes_its_host_with_a_sticky_shop_cookie() {
    let k = Cluster::start().await;
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));
    k.wait_status("/", StatusCode::OK).await;

    let first = k.get(HOST, "/cart", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie("SHOP").expect("a SHOP cookie is set");
    let pod = first.pod();
    for _ in 0..10 {
        let r = k.get(HOST, "/cart", Some(&cookie)).await;
        assert_eq!(r.pod(), pod, "the session sticks to its pod");
    }
    // Another host has no route: no catch-all was invented.
    assert_eq!(
        k.get("other.example.com", "/", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(k.pods.iter().any(|p| p.name == pod));
}

#[tokio::test]
async fn ingress_of_another_class_is_ignored() {
    let k = Cluster::start().await;
    k.api.apply(ingress(
        NS,
        "theirs",
        "nginx",
        "theirs.example.com",
        &[("/", "Prefix")],
        "web",
        k.port,
        &[],
    ));
    // Ours, applied after theirs: once it routes, theirs has been seen too.
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));
    k.wait_status("/", StatusCode::OK).await;
    assert_eq!(
        k.get("theirs.example.com", "/", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(k.backend_names(), vec![format!("{NS}.shop.web.{}", k.port)]);
}

#[tokio::test]
async fn editing_the_ingress_keeps_the_session_and_deleting_it_removes_the_route() {
    let k = Cluster::start().await;
    k.api.apply(k.shop("tether", &[("/shop", "Prefix")]));
    k.wait_status("/shop", StatusCode::OK).await;
    let first = k.get(HOST, "/shop", None).await;
    let cookie = first.cookie("SHOP").unwrap();
    let pod = first.pod();
    assert_eq!(
        k.get(HOST, "/api", None).await.status,
        StatusCode::NOT_FOUND
    );

    // A new path: applied as a reload; the backend keeps its name, so the cookie stays
    // valid and the session keeps its pod.
    k.api
        .apply(k.shop("tether", &[("/shop", "Prefix"), ("/api", "Exact")]));
    k.wait_status("/api", StatusCode::OK).await;
    assert_eq!(
        k.get(HOST, "/api/more", None).await.status,
        StatusCode::NOT_FOUND,
        "pathType Exact matches only its path"
    );
    for path in ["/shop", "/api"] {
        let r = k.get(HOST, path, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.pod(), pod, "{path}: the session survived the change");
    }

    k.api.delete_object("ingresses", NS, "shop");
    k.wait_status("/shop", StatusCode::NOT_FOUND).await;
    assert!(k.backend_names().is_empty());
}

#[tokio::test]
async fn file_routes_win_over_ingress_routes_on_the_same_host_and_path() {
    let (file_pods, _) = pods_on_one_port(&["file-pod"]).await;
    let k = Cluster::start().await;
    // A file backend is added by a reload of a file config with the same Ingress mode.
    let mut cfg = tether::config::Config::parse(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [kubernetes.ingress]\ndebounce = \"20ms\"\n\
             [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
             [[backend]]\nname = \"file\"\nendpoints = [\"{}\"]\n\
             [[route]]\nhost = \"{HOST}\"\npath_prefix = \"/\"\nbackend = \"file\"\n",
            file_pods[0].addr
        ),
        "<test>",
        std::path::Path::new("."),
    )
    .unwrap();
    cfg.kubernetes.kubeconfig = Some(k.dir.path().join("kubeconfig"));
    k.proxy.apply(&cfg).await.unwrap();
    k.api
        .apply(k.shop("tether", &[("/", "Prefix"), ("/ingress", "Prefix")]));
    // The Ingress's longer prefix routes to its pods...
    wait_for_async("/ingress routed by the Ingress", || async {
        k.get(HOST, "/ingress", None)
            .await
            .pod()
            .starts_with("pod-")
    })
    .await;
    // ...while its `/` on the same host is the file's.
    for _ in 0..5 {
        assert_eq!(k.get(HOST, "/", None).await.pod(), "file-pod");
    }
    let names = k.backend_names();
    assert_eq!(
        names,
        vec!["file".to_string(), format!("{NS}.shop.web.{}", k.port)]
    );
}

#[tokio::test]
async fn only_the_elected_replica_writes_ingress_status() {
    let k = Cluster::start().await;
    let a = k.replica("tether-a").await;
    let b = k.replica("tether-b").await;
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));

    // Both replicas route the host...
    for r in [&a, &b] {
        wait_for_async("both replicas routing the shop host", || async {
            status_via(r.proxy_addr, HOST, "/").await == StatusCode::OK
        })
        .await;
    }
    // ...and the status gets the configured address.
    wait_for("the status carrying the address", || {
        k.load_balancer("shop") == serde_json::json!([{"ip": ADDRESS}])
    })
    .await;
    let holder = k.holder().expect("a replica holds the Lease");
    assert!(
        ["tether-a", "tether-b"].contains(&holder.as_str()),
        "{holder}"
    );
    let writes = k.api.status_writes();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(w.ingress, format!("{NS}/shop"));
        assert_eq!(
            w.field_manager,
            format!("tether-{holder}"),
            "only the Lease holder writes status: {writes:?}"
        );
    }
    // The written status comes back as a watch event, is found equal, and is not
    // written again.
    assert_eq!(writes.len(), 1, "{writes:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn when_the_leader_stops_the_other_replica_takes_over_status() {
    let k = Cluster::start().await;
    let a = k.replica("tether-a").await;
    let b = k.replica("tether-b").await;
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));
    wait_for("the status carrying the address", || {
        k.load_balancer("shop") == serde_json::json!([{"ip": ADDRESS}])
    })
    .await;
    let leader = k.holder().expect("a replica holds the Lease");
    let (stopped, other, survivor) = if leader == "tether-a" {
        (a, "tether-b", b)
    } else {
        (b, "tether-a", a)
    };
    stopped.shutdown().await;

    // A new Ingress of ours: the survivor takes the Lease (at the latest when the
    // stopped leader's 2 s run out) and writes its status.
    let mut second = ingress(
        NS,
        "second",
        "tether",
        "second.example.com",
        &[("/", "Prefix")],
        "web",
        k.port,
        &[],
    );
    second["metadata"]["generation"] = serde_json::json!(1);
    k.api.apply(second);
    wait_for("the survivor writing the new Ingress's status", || {
        k.load_balancer("second") == serde_json::json!([{"ip": ADDRESS}])
    })
    .await;
    assert_eq!(k.holder().as_deref(), Some(other));
    let writes: Vec<_> = k
        .api
        .status_writes()
        .into_iter()
        .filter(|w| w.ingress == format!("{NS}/second"))
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(w.field_manager, format!("tether-{other}"), "{writes:?}");
    }
    wait_for_async("the survivor routing the new host", || async {
        status_via(survivor.proxy_addr, "second.example.com", "/").await == StatusCode::OK
    })
    .await;
    survivor.shutdown().await;
}

#[tokio::test]
async fn unsupported_annotations_become_one_event_per_generation() {
    let k = Cluster::start().await;
    let a = k.replica("tether-a").await;
    // The shop Ingress carries one annotation tether does not honour: proxy-body-size.
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));
    wait_for("an Event on the shop Ingress", || {
        !k.events_on("shop").is_empty()
    })
    .await;
    let e = &k.events_on("shop")[0];
    assert_eq!(e["reason"], "UnsupportedAnnotation");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["source"]["component"], "tether");
    assert_eq!(e["reportingInstance"], "tether-a");
    assert_eq!(e["involvedObject"]["kind"], "Ingress");
    assert_eq!(e["involvedObject"]["namespace"], NS);
    assert_eq!(e["involvedObject"]["uid"], format!("uid-{NS}-shop"));
    assert!(e["involvedObject"]["resourceVersion"].is_string());
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("nginx.ingress.kubernetes.io/proxy-body-size"),
        "{message}"
    );

    // The same generation again (a resync, a status write) and a re-list: no new
    // Event. Another Ingress applied after them marks when they have been seen.
    k.api.apply(k.shop("tether", &[("/", "Prefix")]));
    k.api.expire_watches();
    k.api.apply(ingress(
        NS,
        "marker",
        "tether",
        "marker.example.com",
        &[("/", "Prefix")],
        "web",
        k.port,
        &[("nginx.ingress.kubernetes.io/proxy-body-size", "1m")],
    ));
    wait_for("an Event on the marker Ingress", || {
        !k.events_on("marker").is_empty()
    })
    .await;
    assert_eq!(k.events_on("shop").len(), 1, "{:?}", k.events_on("shop"));

    // A new generation is reported again, once.
    let mut edited = k.shop("tether", &[("/", "Prefix"), ("/api", "Prefix")]);
    edited["metadata"]["generation"] = serde_json::json!(2);
    k.api.apply(edited);
    wait_for("an Event on the second generation", || {
        k.events_on("shop").len() == 2
    })
    .await;
    assert_eq!(k.events_on("marker").len(), 1);
    a.shutdown().await;
}
