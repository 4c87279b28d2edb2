//! EndpointSlice discovery against a fake API server speaking the list/watch protocol.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use support::fake_apiserver::{slice, Ep, FakeApiServer};
use support::*;

const NS: &str = "shop";

/// A cluster: a fake API server, pods on one port, and a proxy watching Service `cart`.
struct Cluster {
    api: FakeApiServer,
    pods: Vec<Arc<TestBackend>>,
    port: u16,
    proxy: Running,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(names: &[&str], extra: &str, options: tether::server::Options) -> Cluster {
        let (pods, port) = pods_on_one_port(names).await;
        let api = FakeApiServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n\
             [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
             [[backend]]\nname = \"app\"\nkubernetes = {{ namespace = \"{NS}\", service = \"cart\", port = \"http\" }}\n\
             connect_timeout = \"500ms\"\n{extra}\n",
            kubeconfig.display()
        );
        let proxy = proxy_with(&cfg, options).await;
        Cluster {
            api,
            pods,
            port,
            proxy,
            _dir: dir,
        }
    }

    fn ep(&self, i: usize) -> Ep {
        Ep::pod(&self.pods[i].name, &self.pods[i].addr.ip().to_string())
    }

    fn publish(&self, name: &str, eps: &[Ep]) {
        self.api
            .apply(slice(NS, name, "cart", "http", self.port, eps));
    }

    fn generation(&self) -> u64 {
        self.proxy
            .proxy
            .backend("app")
            .unwrap()
            .snapshot()
            .generation
    }

    fn endpoint_names(&self) -> Vec<String> {
        let s = self.proxy.proxy.backend("app").unwrap().snapshot();
        let mut v: Vec<String> = s.endpoints.iter().map(|e| e.identity.to_string()).collect();
        v.sort();
        v
    }

    /// A cookie for a new session that the table placed on `pod`.
    async fn session_on(&self, pod: &str) -> String {
        let c = TestClient::new();
        for _ in 0..200 {
            let r = c.get(self.proxy.proxy_addr, "/", None).await;
            if r.pod() == pod {
                return r.cookie("tether").unwrap();
            }
        }
        panic!("no new session landed on {pod}");
    }

    /// Waits until the proxy's table lists exactly these pods.
    async fn wait_for_pods(&self, pods: &[&str]) {
        let want: Vec<String> = pods.iter().map(|p| format!("{NS}/{p}")).collect();
        wait_for(&format!("endpoints {want:?}"), || {
            self.endpoint_names() == want
        })
        .await;
    }
}

#[tokio::test]
async fn readyz_is_503_before_the_first_list_and_200_after() {
    let (pods, port) = pods_on_one_port(&["cart-a"]).await;
    let api = FakeApiServer::start().await;
    api.apply(slice(
        NS,
        "cart-1",
        "cart",
        "http",
        port,
        &[Ep::pod("cart-a", "127.0.0.10")],
    ));
    api.hold_lists();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [kubernetes]\nkubeconfig = \"{}\"\n\
         [[backend]]\nname = \"app\"\nkubernetes = {{ namespace = \"{NS}\", service = \"cart\", port = \"http\" }}\n",
        api.kubeconfig(dir.path()).display()
    );
    let p = proxy(&cfg).await;
    let c = TestClient::new();
    assert_eq!(c.get(p.admin_addr, "/readyz", None).await.status, 503);
    assert_eq!(c.get(p.proxy_addr, "/", None).await.status, 503);
    api.release_lists();
    wait_for("the first list", || p.proxy.is_ready()).await;
    assert_eq!(c.get(p.admin_addr, "/readyz", None).await.status, 200);
    assert_eq!(c.get(p.proxy_addr, "/", None).await.pod(), pods[0].name);
    p.shutdown().await;
}

#[tokio::test]
async fn sessions_stay_sticky_while_a_fourth_pod_is_added_and_new_sessions_reach_it() {
    let c4 = Cluster::start(
        &["cart-a", "cart-b", "cart-c", "cart-d"],
        "",
        Default::default(),
    )
    .await;
    c4.publish("cart-1", &[c4.ep(0), c4.ep(1), c4.ep(2)]);
    c4.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    let c = TestClient::new();
    let mut sessions = Vec::new();
    for _ in 0..60 {
        let r = c.get(c4.proxy.proxy_addr, "/", None).await;
        sessions.push((r.cookie("tether").unwrap(), r.pod()));
    }

    c4.publish("cart-1", &[c4.ep(0), c4.ep(1), c4.ep(2), c4.ep(3)]);
    c4.wait_for_pods(&["cart-a", "cart-b", "cart-c", "cart-d"])
        .await;
    for (value, pod) in &sessions {
        let r = c.get(c4.proxy.proxy_addr, "/", Some(value)).await;
        assert_eq!(&r.pod(), pod);
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }
    let mut on_new = 0;
    for _ in 0..200 {
        if c.get(c4.proxy.proxy_addr, "/", None).await.pod() == "cart-d" {
            on_new += 1;
        }
    }
    assert!(
        on_new > 20,
        "only {on_new} of 200 new sessions reached the new pod"
    );
    c4.proxy.shutdown().await;
}

#[tokio::test]
async fn deleting_the_pinned_pods_endpoint_fails_over_as_soon_as_the_event_arrives() {
    let k = Cluster::start(&["cart-a", "cart-b", "cart-c"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1), k.ep(2)]);
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    let c = TestClient::new();
    let first = c.get(k.proxy.proxy_addr, "/", None).await;
    let (value, pinned) = (first.cookie("tether").unwrap(), first.pod());
    let session = first.seen("x-tether-session").unwrap();

    // The pod is still running: only the event can make tether move the session.
    let rest: Vec<Ep> = (0..3)
        .filter(|&i| k.pods[i].name != pinned)
        .map(|i| k.ep(i))
        .collect();
    let before = k.generation();
    k.publish("cart-1", &rest);
    wait_for("the deletion event", || k.generation() > before).await;
    let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
    assert_ne!(r.pod(), pinned);
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    assert_eq!(
        r.seen("x-tether-session").as_deref(),
        Some(session.as_str())
    );
    assert_eq!(
        r.seen("x-tether-previous-endpoint").as_deref(),
        Some(format!("{NS}/{pinned}").as_str())
    );
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn a_terminating_pod_keeps_its_sessions_takes_no_new_ones_then_fails_over_when_gone() {
    let k = Cluster::start(&["cart-a", "cart-b", "cart-c"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1), k.ep(2)]);
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    let c = TestClient::new();
    let first = c.get(k.proxy.proxy_addr, "/", None).await;
    let (value, pinned) = (first.cookie("tether").unwrap(), first.pod());
    let idx = k.pods.iter().position(|p| p.name == pinned).unwrap();

    let eps: Vec<Ep> = (0..3)
        .map(|i| {
            if i == idx {
                k.ep(i).terminating()
            } else {
                k.ep(i)
            }
        })
        .collect();
    let before = k.generation();
    k.publish("cart-1", &eps);
    wait_for("the terminating event", || k.generation() > before).await;
    for _ in 0..10 {
        let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
        assert_eq!(r.pod(), pinned, "a draining pod keeps its sessions");
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }
    for _ in 0..100 {
        assert_ne!(
            c.get(k.proxy.proxy_addr, "/", None).await.pod(),
            pinned,
            "no new session on a draining pod"
        );
    }

    let rest: Vec<Ep> = (0..3).filter(|&i| i != idx).map(|i| k.ep(i)).collect();
    let before = k.generation();
    k.publish("cart-1", &rest);
    wait_for("the removal event", || k.generation() > before).await;
    let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
    assert_ne!(r.pod(), pinned);
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn two_slices_with_a_duplicate_merge_and_deleting_one_removes_only_its_own_endpoints() {
    let k = Cluster::start(&["cart-a", "cart-b", "cart-c"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1)]);
    k.publish("cart-2", &[k.ep(1), k.ep(2)]);
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    let before = k.generation();
    k.api.delete(NS, "cart-1");
    wait_for("the slice deletion", || k.generation() > before).await;
    assert_eq!(
        k.endpoint_names(),
        vec![format!("{NS}/cart-b"), format!("{NS}/cart-c")]
    );
    let c = TestClient::new();
    for _ in 0..30 {
        assert_ne!(c.get(k.proxy.proxy_addr, "/", None).await.pod(), "cart-a");
    }
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn a_410_in_the_watch_triggers_a_relist_and_what_vanished_in_the_gap_is_gone() {
    let k = Cluster::start(&["cart-a", "cart-b", "cart-c"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1)]);
    k.publish("cart-2", &[k.ep(2)]);
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    k.api.bookmark();
    let (lists, _) = k.api.requests();

    // Events lost in a gap: the slice is deleted and the watcher never hears of it.
    k.api.mute(true);
    k.api.delete(NS, "cart-2");
    k.publish("cart-1", &[k.ep(0)]);
    k.api.mute(false);
    k.api.expire_watches();
    k.wait_for_pods(&["cart-a"]).await;
    assert!(k.api.requests().0 > lists, "the 410 caused a re-list");
    let r = TestClient::new().get(k.proxy.proxy_addr, "/", None).await;
    assert_eq!(r.pod(), "cart-a");
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn an_api_outage_keeps_routing_on_the_last_endpoints_and_changes_after_it_are_picked_up() {
    let k = Cluster::start(&["cart-a", "cart-b", "cart-c"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1)]);
    k.wait_for_pods(&["cart-a", "cart-b"]).await;
    let c = TestClient::new();
    let first = c.get(k.proxy.proxy_addr, "/", None).await;
    let (value, pinned) = (first.cookie("tether").unwrap(), first.pod());

    k.api.stop();
    let (_, watches) = k.api.requests();
    // Longer than the whole backoff schedule (50ms..300ms): several failed retries.
    for _ in 0..50 {
        let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.pod(), pinned);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(k.endpoint_names().len(), 2, "the table survived the outage");
    assert!(k.proxy.proxy.is_ready());

    k.publish("cart-1", &[k.ep(0), k.ep(1), k.ep(2)]);
    k.api.restart().await;
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    assert!(k.api.requests().1 > watches, "the watcher reconnected");
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn a_new_pod_reusing_a_departed_pods_ip_does_not_get_its_sessions() {
    let k = Cluster::start(&["cart-a", "cart-b"], "", Default::default()).await;
    k.publish("cart-1", &[k.ep(0), k.ep(1)]);
    k.wait_for_pods(&["cart-a", "cart-b"]).await;
    let c = TestClient::new();
    let value = k.session_on("cart-a").await;

    // cart-a dies; cart-z is scheduled on its IP and port.
    let ip = k.pods[0].addr;
    k.pods[0].stop_and_wait().await;
    let z = TestBackend::echo_at("cart-z", ip).await.unwrap();
    k.publish(
        "cart-1",
        &[Ep::pod("cart-z", &ip.ip().to_string()), k.ep(1)],
    );
    k.wait_for_pods(&["cart-b", "cart-z"]).await;

    let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    assert_eq!(
        r.seen("x-tether-previous-endpoint").as_deref(),
        Some("shop/cart-a")
    );
    // The re-pin is by the table; it may land on cart-z, but never as cart-a's sticky traffic.
    let moved_to = r.pod();
    let again = c
        .get(k.proxy.proxy_addr, "/", r.cookie("tether").as_deref())
        .await;
    assert_eq!(again.pod(), moved_to);
    assert_eq!(again.seen("x-tether-affinity").as_deref(), Some("sticky"));
    drop(z);
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn a_statefulset_pod_that_comes_back_under_its_name_gets_its_sessions_back() {
    let k = Cluster::start(&["web-0", "web-1"], "", Default::default()).await;
    k.publish("web", &[k.ep(0), k.ep(1)]);
    k.wait_for_pods(&["web-0", "web-1"]).await;
    let c = TestClient::new();
    let value = k.session_on("web-0").await;
    // web-0 is rescheduled: gone for a moment, then back under its name on a new IP.
    k.publish("web", &[k.ep(1)]);
    k.wait_for_pods(&["web-1"]).await;
    let new_addr = std::net::SocketAddr::from(([127, 0, 0, 30], k.port));
    let _back = TestBackend::echo_at("web-0", new_addr).await.unwrap();
    k.publish("web", &[Ep::pod("web-0", "127.0.0.30"), k.ep(1)]);
    k.wait_for_pods(&["web-0", "web-1"]).await;
    let r = c.get(k.proxy.proxy_addr, "/", Some(&value)).await;
    assert_eq!(r.pod(), "web-0");
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    k.proxy.shutdown().await;
}

#[tokio::test]
async fn prefer_local_places_new_sessions_on_the_local_pod_within_the_load_bound() {
    let options = tether::server::Options {
        pod_name: Some("cart-b".into()),
        ..Default::default()
    };
    let k = Cluster::start(
        &["cart-a", "cart-b", "cart-c"],
        "[backend.affinity]\nprefer_local = true\nload_factor = 0.25\n",
        options,
    )
    .await;
    k.publish("cart-1", &[k.ep(0), k.ep(1), k.ep(2)]);
    k.wait_for_pods(&["cart-a", "cart-b", "cart-c"]).await;
    let c = TestClient::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 1..=600usize {
        let local_before = counts.get("cart-b").copied().unwrap_or(0) as f64;
        let within_bound = local_before + 1.0 <= 1.25 * i as f64 / 3.0 - 0.01;
        let r = c.get(k.proxy.proxy_addr, "/", None).await;
        if within_bound {
            assert_eq!(
                r.pod(),
                "cart-b",
                "request {i}: the local pod was within the bound: {counts:?}"
            );
        }
        *counts.entry(r.pod()).or_default() += 1;
    }
    let local = counts["cart-b"];
    // Without prefer_local the local pod would get a third (200); with it, up to the bound.
    assert!(local >= 240, "local got {local}: {counts:?}");
    assert!(
        counts["cart-a"] > 100 && counts["cart-c"] > 100,
        "{counts:?}"
    );
    k.proxy.shutdown().await;
}

/// The TOML form of a weighted backend (`kubernetes = [...]`), the one HTTPRoutes with
/// several backendRefs compile to: one backend fed by both Services' slices, new
/// sessions by weight.
#[tokio::test]
async fn a_file_backend_of_weighted_services_places_new_sessions_by_weight() {
    let (pods, port) = pods_on_one_port(&["pod-a", "pod-b", "pod-c"]).await;
    let api = FakeApiServer::start().await;
    let ep = |i: usize| Ep::pod(&pods[i].name, &pods[i].addr.ip().to_string());
    api.apply(slice(NS, "cart-1", "cart", "http", port, &[ep(0)]));
    api.apply(slice(
        NS,
        "canary-1",
        "canary",
        "http",
        port,
        &[ep(1), ep(2)],
    ));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [kubernetes]\nkubeconfig = \"{}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n\
         [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
         [[backend]]\nname = \"app\"\nkubernetes = [\n\
           {{ namespace = \"{NS}\", service = \"cart\", port = \"http\", weight = 2 }},\n\
           {{ namespace = \"{NS}\", service = \"canary\", port = \"http\", weight = 0 }},\n]\n",
        kubeconfig.display()
    );
    let proxy = proxy_with(&cfg, tether::server::Options::default()).await;
    let weights = || -> Vec<(String, u32)> {
        let s = proxy.proxy.backend("app").unwrap().snapshot();
        s.endpoints
            .iter()
            .map(|e| (e.identity.to_string(), e.weight))
            .collect()
    };
    let want: Vec<(String, u32)> = [("pod-a", 1), ("pod-b", 0), ("pod-c", 0)]
        .iter()
        .map(|(p, w)| (format!("{NS}/{p}"), *w))
        .collect();
    wait_for("both Services' endpoints", || weights() == want).await;
    let c = TestClient::new();
    for _ in 0..50 {
        let r = c.get(proxy.proxy_addr, "/", None).await;
        assert_eq!(r.pod(), "pod-a", "weight 0 takes no new session");
    }
}
