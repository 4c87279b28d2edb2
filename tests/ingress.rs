//! Ingress mode: Ingresses of tether's IngressClass, served by a fake API server
//! speaking the list/watch protocol, route real requests to real test pods.

mod support;

use std::sync::Arc;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::fake_apiserver::{ingress, ingress_class, slice, Ep, FakeApiServer};
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.example.com";

/// A cluster: a fake API server with tether's IngressClass and another controller's,
/// pods of Service `web` on one port, and a tether in Ingress mode with no backend of
/// its own.
struct Cluster {
    api: FakeApiServer,
    pods: Vec<Arc<TestBackend>>,
    port: u16,
    proxy: Running,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let (pods, port) = pods_on_one_port(&["pod-a", "pod-b", "pod-c"]).await;
        let api = FakeApiServer::start().await;
        api.apply(ingress_class("tether", "tether.io/ingress-controller"));
        api.apply(ingress_class("nginx", "k8s.io/ingress-nginx"));
        let eps: Vec<Ep> = pods
            .iter()
            .map(|p| Ep::pod(&p.name, &p.addr.ip().to_string()))
            .collect();
        api.apply(slice(NS, "web-1", "web", "http", port, &eps));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n\
             [kubernetes.ingress]\ndebounce = \"20ms\"\n\
             [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n",
            kubeconfig.display()
        );
        let proxy = proxy_with(&cfg, tether::server::Options::default()).await;
        Cluster {
            api,
            pods,
            port,
            proxy,
            _dir: dir,
        }
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

    fn backend_names(&self) -> Vec<String> {
        self.proxy
            .proxy
            .state()
            .backends
            .iter()
            .map(|b| b.name().to_string())
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
    cfg.kubernetes.kubeconfig = Some(k._dir.path().join("kubeconfig"));
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
