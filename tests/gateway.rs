//! Gateway API mode: HTTPRoutes attached to Gateways of tether's GatewayClass, served by
//! a fake API server speaking the list/watch protocol, route real requests to real test
//! pods with the session persistence their rules ask for.

mod support;

use std::sync::Arc;

use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::fake_apiserver::ModeCluster;
use support::transport::{request, send_plain, Transport};
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.example.com";

/// A cluster (see [`ModeCluster`]) with tether's GatewayClass and another controller's,
/// a Gateway of each, and a tether in Gateway API mode with no backend of its own.
struct Cluster(ModeCluster);

impl std::ops::Deref for Cluster {
    type Target = ModeCluster;
    fn deref(&self) -> &ModeCluster {
        &self.0
    }
}

fn gateway_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    })
}

fn gateway(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "gatewayClassName": class,
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
                {"name": "other", "port": 8080, "protocol": "HTTP", "hostname": "other.example.com"},
            ],
        },
    })
}

/// An HTTPRoute for the shop host attached to listener `http` of Gateway `parent`, one
/// rule to Service `web` with `matches` and `persistence`.
fn route(name: &str, parent: &str, port: u16, matches: &[&str], persistence: Value) -> Value {
    let matches: Vec<Value> = matches
        .iter()
        .map(|p| json!({"path": {"type": "PathPrefix", "value": p}}))
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "parentRefs": [{"name": parent, "sectionName": "http"}],
            "hostnames": [HOST],
            "rules": [{
                "matches": matches,
                "backendRefs": [{"name": "web", "port": port}],
                "sessionPersistence": persistence,
            }],
        },
    })
}

impl Cluster {
    async fn start() -> Cluster {
        let objects = vec![
            gateway_class("tether", "tether.io/gateway-controller"),
            gateway_class("envoy", "gateway.envoyproxy.io/gatewayclass-controller"),
            gateway("ours", "tether"),
            gateway("theirs", "envoy"),
        ];
        let mode = "[kubernetes.gateway]\ndebounce = \"20ms\"\n";
        Cluster(ModeCluster::start(NS, objects, mode).await)
    }

    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b =
            Request::get(format!("http://{}{path}", self.proxy.proxy_addr)).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        TestClient::new()
            .send(b.body(Full::default()).unwrap())
            .await
    }

    /// Waits until `path` on the shop host answers `status`.
    async fn wait_status(&self, path: &str, status: StatusCode) {
        wait_for_async(&format!("{path} answering {status}"), || async {
            self.get(HOST, path, &[]).await.status == status
        })
        .await;
    }
}

#[tokio::test]
async fn a_route_on_our_gateway_routes_its_host_with_a_sticky_session_cookie() {
    let k = Cluster::start().await;
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/"],
        json!({"type": "Cookie", "sessionName": "SHOP"}),
    ));
    k.wait_status("/", StatusCode::OK).await;

    let first = k.get(HOST, "/cart", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie("SHOP").expect("a SHOP cookie is set");
    let set = first.set_cookies().join("\n");
    assert!(set.contains("Path=/"), "{set}");
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "lifetimeType Session (the default) is a session cookie: {set}"
    );
    let pod = first.pod();
    assert!(k.pods.iter().any(|p| p.name == pod));
    for _ in 0..10 {
        let r = k
            .get(HOST, "/cart", &[("cookie", &format!("SHOP={cookie}"))])
            .await;
        assert_eq!(r.pod(), pod, "the session sticks to its pod");
    }
    // Another host has no route: the listener's wildcard admits only the route's host.
    assert_eq!(
        k.get("other.example.com", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(k.backend_names(), vec![format!("{NS}.shop.web.{}", k.port)]);
}

#[tokio::test]
async fn a_route_on_a_gateway_of_another_class_is_ignored() {
    let k = Cluster::start().await;
    let mut theirs = route("theirs", "theirs", k.port, &["/theirs"], json!(null));
    theirs["spec"]["hostnames"] = json!(["theirs.example.com"]);
    k.api.apply(theirs);
    // Ours, applied after theirs: once it routes, theirs has been seen too.
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/"],
        json!({"sessionName": "SHOP"}),
    ));
    k.wait_status("/", StatusCode::OK).await;
    assert_eq!(
        k.get("theirs.example.com", "/theirs", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(k.backend_names(), vec![format!("{NS}.shop.web.{}", k.port)]);
}

#[tokio::test]
async fn editing_the_route_keeps_the_session_and_deleting_it_removes_the_route() {
    let k = Cluster::start().await;
    let persistence = json!({"type": "Cookie", "sessionName": "SHOP"});
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/shop"],
        persistence.clone(),
    ));
    k.wait_status("/shop", StatusCode::OK).await;
    let first = k.get(HOST, "/shop", &[]).await;
    let cookie = format!("SHOP={}", first.cookie("SHOP").unwrap());
    assert!(
        first.set_cookies().join("\n").contains("Path=/shop"),
        "GEP-1619: the cookie path is the rule's path: {:?}",
        first.set_cookies()
    );
    let pod = first.pod();
    assert_eq!(k.get(HOST, "/api", &[]).await.status, StatusCode::NOT_FOUND);

    // A new path: applied as a reload; the backend keeps its name, so the cookie stays
    // valid and the session keeps its pod.
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/shop", "/api"],
        persistence,
    ));
    k.wait_status("/api", StatusCode::OK).await;
    for path in ["/shop", "/api"] {
        let r = k.get(HOST, path, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.pod(), pod, "{path}: the session survived the change");
    }

    k.api.delete_object("httproutes", NS, "shop");
    k.wait_status("/shop", StatusCode::NOT_FOUND).await;
    assert!(k.backend_names().is_empty());
}

#[tokio::test]
async fn a_header_session_sticks_on_that_header() {
    let k = Cluster::start().await;
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/"],
        json!({"type": "Header", "sessionName": "X-Session"}),
    ));
    k.wait_status("/", StatusCode::OK).await;
    let mut pods = std::collections::BTreeSet::new();
    for session in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let first = k.get(HOST, "/", &[("x-session", session)]).await.pod();
        for _ in 0..5 {
            let r = k.get(HOST, "/", &[("x-session", session)]).await;
            assert_eq!(r.pod(), first, "session {session} sticks on its header");
        }
        pods.insert(first);
    }
    assert!(pods.len() > 1, "sessions spread over the pods: {pods:?}");
}

#[test]
fn the_example_httproute_of_config_kubernetes_routes_with_a_permanent_shop_cookie() {
    use tether::gateway::api::{Gateway, GatewayClass, HTTPRoute};
    use tether::gateway::controller::Compiled;
    let read = |f: &str| std::fs::read_to_string(format!("config/kubernetes/gateway/{f}")).unwrap();
    let class: GatewayClass = serde_yaml_ng::from_str(&read("gatewayclass.yaml")).unwrap();
    let mut gateway: Gateway = serde_yaml_ng::from_str(&read("gateway.yaml")).unwrap();
    // The kustomization's namespace.
    gateway.metadata.namespace = Some("tether".into());
    let route: HTTPRoute = serde_yaml_ng::from_str(&read("httproute.example.yaml")).unwrap();
    let (c, errors, notes) = Compiled::build(
        &[Arc::new(class)],
        &[Arc::new(gateway)],
        &[Arc::new(route)],
        tether::config::DEFAULT_GATEWAY_CONTROLLER,
    );
    assert!(
        errors.is_empty() && notes.is_empty(),
        "{errors:?} {notes:?}"
    );
    assert_eq!(c.attached, ["shop/shop"]);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].host.as_deref(), Some("shop.example.com"));
    let b = &c.backends[0];
    assert_eq!(b.name, "shop.shop.web.8080");
    assert_eq!(b.affinity.cookie.name, "SHOP");
    let two_days = std::time::Duration::from_secs(48 * 3600);
    assert_eq!(b.affinity.cookie.max_age, Some(two_days));
    assert_eq!(b.affinity.absolute_timeout, Some(two_days));
}

/// Starts Service `canary` (one pod of its own) next to the cluster's `web`, and applies
/// HTTPRoute `matches` sending requests with `X-Env: canary`, `DELETE /orders…`,
/// `/search?beta=1` and exactly `/exact` to canary, everything else to web.
async fn canary_route(k: &Cluster) -> Vec<Arc<TestBackend>> {
    let (pods, port) = pods_on_one_port(&["canary"]).await;
    let eps = [support::fake_apiserver::Ep::pod(
        "canary",
        &pods[0].addr.ip().to_string(),
    )];
    k.api.apply(support::fake_apiserver::slice(
        NS, "canary-1", "canary", "http", port, &eps,
    ));
    let canary = json!([{"name": "canary", "port": port}]);
    k.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "matches", "namespace": NS, "generation": 1},
        "spec": {
            "parentRefs": [{"name": "ours", "sectionName": "http"}],
            "hostnames": [HOST],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                              "headers": [{"name": "X-Env", "value": "canary"}]}],
                 "backendRefs": canary},
                {"matches": [{"path": {"type": "Exact", "value": "/exact"}},
                             {"path": {"type": "PathPrefix", "value": "/orders"}, "method": "DELETE"},
                             {"path": {"type": "PathPrefix", "value": "/search"},
                              "queryParams": [{"name": "beta", "value": "1"}]}],
                 "backendRefs": canary},
                {"backendRefs": [{"name": "web", "port": k.port}]},
            ],
        },
    }));
    wait_for_async("the canary routes", || async {
        k.get(HOST, "/exact", &[]).await.pod() == "canary"
    })
    .await;
    pods
}

/// Who answered `method path` for the shop host with these fields, over `t`.
async fn pod_over(
    k: &Cluster,
    t: Transport,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut all = vec![];
    if !t.is_h2() {
        all.push(("host", HOST));
    }
    all.extend_from_slice(fields);
    let target = if t.is_h2() {
        format!("http://{HOST}{path}")
    } else {
        path.into()
    };
    let mut req = request(&target, &all, false);
    *req.method_mut() = method.parse().unwrap();
    let r = send_plain(t, k.proxy.proxy_addr, req).await;
    assert_eq!(r.status, StatusCode::OK, "{t:?} {method} {path} {fields:?}");
    r.pod()
}

#[tokio::test]
async fn httproute_header_method_and_query_matches_route_to_their_service_only() {
    let k = Cluster::start().await;
    let _canary = canary_route(&k).await;
    for t in [Transport::H1, Transport::H2c] {
        assert_eq!(
            pod_over(&k, t, "GET", "/a", &[("x-env", "canary")]).await,
            "canary"
        );
        assert!(pod_over(&k, t, "GET", "/a", &[("x-env", "stable")])
            .await
            .starts_with("pod-"));
        assert!(
            pod_over(&k, t, "GET", "/a", &[]).await.starts_with("pod-"),
            "{t:?}"
        );
        assert_eq!(pod_over(&k, t, "DELETE", "/orders/7", &[]).await, "canary");
        assert!(pod_over(&k, t, "GET", "/orders/7", &[])
            .await
            .starts_with("pod-"));
        assert_eq!(
            pod_over(&k, t, "GET", "/search?beta=1", &[]).await,
            "canary"
        );
        assert!(pod_over(&k, t, "GET", "/search?beta=0", &[])
            .await
            .starts_with("pod-"));
    }
}

#[tokio::test]
async fn an_exact_httproute_path_wins_over_a_prefix_and_matches_nothing_longer() {
    let k = Cluster::start().await;
    let _canary = canary_route(&k).await;
    for t in [Transport::H1, Transport::H2c] {
        assert_eq!(
            pod_over(&k, t, "GET", "/exact", &[]).await,
            "canary",
            "{t:?}"
        );
        assert!(
            pod_over(&k, t, "GET", "/exact/x", &[])
                .await
                .starts_with("pod-"),
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn header_modifiers_edit_the_request_and_response_but_cannot_spoof_tether() {
    let k = Cluster::start().await;
    let mut r = route("shop", "ours", k.port, &["/"], json!(null));
    r["spec"]["rules"][0]["filters"] = json!([{
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {
            "set": [{"name": "X-Env", "value": "gateway"},
                    {"name": "X-Tether-Session", "value": "spoofed"},
                    {"name": "X-Forwarded-For", "value": "198.51.100.66"}],
            "add": [{"name": "X-Added", "value": "1"}],
            "remove": ["X-Secret"],
        },
    }, {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {
            "add": [{"name": "X-Route", "value": "shop"}],
            "remove": ["X-Pod"],
        },
    }]);
    k.api.apply(r);
    k.wait_status("/", StatusCode::OK).await;
    for t in [Transport::H1, Transport::H2c] {
        let mut fields = vec![];
        if !t.is_h2() {
            fields.push(("host", HOST));
        }
        fields.extend([("x-env", "client"), ("x-secret", "s")]);
        let target = if t.is_h2() {
            format!("http://{HOST}/")
        } else {
            "/".into()
        };
        let r = send_plain(t, k.proxy.proxy_addr, request(&target, &fields, false)).await;
        assert_eq!(r.status, StatusCode::OK, "{t:?}");
        assert_eq!(r.seen("x-env").as_deref(), Some("gateway"), "{t:?}");
        assert_eq!(r.seen("x-added").as_deref(), Some("1"), "{t:?}");
        assert_eq!(r.seen("x-secret"), None, "{t:?}");
        let session = r.seen("x-tether-session").unwrap_or_default();
        assert!(
            session.len() == 32 && session != "spoofed",
            "{t:?}: tether's session id: {session}"
        );
        assert_eq!(
            r.seen("x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "{t:?}"
        );
        assert_eq!(r.headers["x-route"], "shop", "{t:?}: the response modifier");
        assert!(r.headers.get("x-pod").is_none(), "{t:?}");
    }
}

#[tokio::test]
async fn a_url_rewrite_changes_the_host_and_path_the_pod_gets() {
    let k = Cluster::start().await;
    let mut r = route("shop", "ours", k.port, &["/store"], json!(null));
    r["spec"]["rules"][0]["filters"] = json!([{
        "type": "URLRewrite",
        "urlRewrite": {
            "hostname": "internal.shop",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"},
        },
    }]);
    k.api.apply(r);
    k.wait_status("/store", StatusCode::OK).await;
    for t in [Transport::H1, Transport::H2c] {
        let fields: &[(&str, &str)] = if t.is_h2() { &[] } else { &[("host", HOST)] };
        let target = if t.is_h2() {
            format!("http://{HOST}/store/cart")
        } else {
            "/store/cart".into()
        };
        let r = send_plain(t, k.proxy.proxy_addr, request(&target, fields, false)).await;
        assert_eq!(r.status, StatusCode::OK, "{t:?}");
        assert_eq!(r.json()["path"], "/cart", "{t:?}");
        assert_eq!(r.seen("host").as_deref(), Some("internal.shop"), "{t:?}");
        assert_eq!(r.seen("x-forwarded-host").as_deref(), Some(HOST), "{t:?}");
    }
}
