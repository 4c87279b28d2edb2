//! Gateway API mode: HTTPRoutes attached to Gateways of tether's GatewayClass, served by
//! a fake API server speaking the list/watch protocol, route real requests to real test
//! pods with the session persistence their rules ask for; the replica holding the Lease
//! (and only it) writes the status of what tether serves.

mod support;

use std::sync::Arc;

use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::fake_apiserver::{
    namespace, reference_grant, service, slice, Ep, ModeCluster, StatusWrite,
};
use support::transport::{request, send_plain, Transport};
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.example.com";
const OURS: &str = "tether.io/gateway-controller";
/// The replicas' Lease (in the kubeconfig's namespace, `default`).
const LEASE: &str = "tether-gateway-status-test";

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

/// An HTTPRoute like [`route`] whose one rule splits between Services `web` and
/// `canary` with `weights`, with a `SHOP` session cookie.
fn split_route(port: u16, weights: (i64, i64)) -> Value {
    let mut r = route(
        "shop",
        "ours",
        port,
        &["/"],
        json!({"type": "Cookie", "sessionName": "SHOP"}),
    );
    r["spec"]["rules"][0]["backendRefs"] = json!([
        {"name": "web", "port": port, "weight": weights.0},
        {"name": "canary", "port": port, "weight": weights.1},
    ]);
    r
}

impl Cluster {
    /// Service `web` becomes pods a and b; Service `canary` is pod c.
    fn split_services(&self) {
        use support::fake_apiserver::{slice, Ep};
        let ep = |i: usize| Ep::pod(&self.pods[i].name, &self.pods[i].addr.ip().to_string());
        self.api.apply(slice(
            NS,
            "web-1",
            "web",
            "http",
            self.port,
            &[ep(0), ep(1)],
        ));
        self.api.apply(service(NS, "canary"));
        self.api
            .apply(slice(NS, "canary-1", "canary", "http", self.port, &[ep(2)]));
    }

    /// Endpoint weights of backend `name` by pod, as placement sees them now.
    fn weights(&self, name: &str) -> Vec<(String, u32)> {
        let state = self.proxy.proxy.state();
        let Some(b) = state.backends.iter().find(|b| b.name() == name) else {
            return Vec::new();
        };
        b.snapshot()
            .endpoints
            .iter()
            .map(|e| (e.identity.to_string(), e.weight))
            .collect()
    }

    /// Waits until backend `name`'s pods a, b, c have weights `w`.
    async fn wait_weights(&self, name: &str, w: [u32; 3]) {
        let want: Vec<(String, u32)> = ["pod-a", "pod-b", "pod-c"]
            .iter()
            .zip(w)
            .map(|(p, w)| (format!("{NS}/{p}"), w))
            .collect();
        wait_for(&format!("weights {want:?}"), || self.weights(name) == want).await;
    }

    /// `n` new sessions: (cookie, pod).
    async fn new_sessions(&self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let r = self.get(HOST, "/", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            let cookie = r.cookie("SHOP").expect("a new session gets a cookie");
            out.push((format!("SHOP={cookie}"), r.pod()));
        }
        out
    }

    async fn start() -> Cluster {
        Self::start_with("[kubernetes.gateway]\ndebounce = \"20ms\"\n").await
    }

    /// The cluster with its first tether in `mode`.
    async fn start_with(mode: &str) -> Cluster {
        let objects = vec![
            gateway_class("tether", OURS),
            gateway_class("envoy", "gateway.envoyproxy.io/gatewayclass-controller"),
            gateway("ours", "tether"),
            gateway("theirs", "envoy"),
            service(NS, "web"),
        ];
        Cluster(ModeCluster::start(NS, objects, mode).await)
    }

    /// Service `name` in `ns` whose EndpointSlice lists the cluster's pods.
    fn pods_as(&self, ns: &str, name: &str) {
        let eps: Vec<Ep> = self
            .pods
            .iter()
            .map(|p| Ep::pod(&p.name, &p.addr.ip().to_string()))
            .collect();
        self.api.apply(service(ns, name));
        self.api.apply(slice(
            ns,
            &format!("{name}-1"),
            name,
            "http",
            self.port,
            &eps,
        ));
    }

    /// tether's conditions on HTTPRoute `ns/name`: (type, status, reason), parent entry
    /// by parent entry.
    fn route_conditions(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let Some(r) = self.api.object("httproutes", ns, name) else {
            return Vec::new();
        };
        let parents = r["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        parents
            .iter()
            .filter(|p| p["controllerName"] == OURS)
            .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("status"), s("reason"))
            })
            .collect()
    }

    /// Waits until tether's entry on HTTPRoute `ns/name` says `conditions`.
    async fn wait_route(&self, ns: &str, name: &str, conditions: &[(&str, &str, &str)]) {
        let want: Vec<(String, String, String)> = conditions
            .iter()
            .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
            .collect();
        wait_for(&format!("httproute {ns}/{name} saying {want:?}"), || {
            self.route_conditions(ns, name) == want
        })
        .await;
    }

    /// Another tether in Gateway API mode, as pod `pod`: it elects its status writer
    /// with a 2 s Lease of its own.
    async fn replica(&self, pod: &str) -> Running {
        let cfg = self.config(&format!(
            "[kubernetes.gateway]\ndebounce = \"20ms\"\naddress = \"lb.example.com\"\n\
             lease = \"{LEASE}\"\nlease_duration = \"2s\"\n"
        ));
        let options = tether::server::Options {
            pod_name: Some(pod.to_string()),
            ..Default::default()
        };
        proxy_with(&cfg, options).await
    }

    /// The status writes of `resource`.
    fn writes(&self, resource: &str) -> Vec<StatusWrite> {
        self.api
            .status_writes()
            .into_iter()
            .filter(|w| w.resource == resource)
            .collect()
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
    assert_eq!(
        k.backend_names(),
        vec![format!("httproute:{NS}:shop:web:{}", k.port)]
    );
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
    assert_eq!(
        k.backend_names(),
        vec![format!("httproute:{NS}:shop:web:{}", k.port)]
    );
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
    assert_eq!(b.name, "httproute:shop:shop:web:8080");
    assert_eq!(b.affinity.cookie.name, "SHOP");
    let two_days = std::time::Duration::from_secs(48 * 3600);
    assert_eq!(b.affinity.cookie.max_age, Some(two_days));
    assert_eq!(b.affinity.absolute_timeout, Some(two_days));
}

const ACCEPTED: (&str, &str, &str) = ("Accepted", "True", "Accepted");
const RESOLVED: (&str, &str, &str) = ("ResolvedRefs", "True", "ResolvedRefs");

/// An HTTPRoute in `ns` attached to `ours` (from `ns`: the Gateway lives in [`NS`]) with
/// one rule to `backend` (JSON of a backendRef).
fn route_to(ns: &str, name: &str, host: &str, section: &str, backend: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "parentRefs": [{"name": "ours", "namespace": NS, "sectionName": section}],
            "hostnames": [host],
            "rules": [{"backendRefs": [backend]}],
        },
    })
}

#[tokio::test]
async fn status_accepts_our_class_our_gateway_and_a_good_route_with_its_count() {
    let k = Cluster::start().await;
    k.api
        .apply(route("shop", "ours", k.port, &["/"], json!(null)));
    k.wait_status("/", StatusCode::OK).await;
    k.wait_route(NS, "shop", &[ACCEPTED, RESOLVED]).await;

    let class = k.api.object("gatewayclasses", "", "tether").unwrap();
    let c = &class["status"]["conditions"][0];
    assert_eq!(
        (&c["type"], &c["status"], &c["reason"]),
        (&json!("Accepted"), &json!("True"), &json!("Accepted"))
    );
    assert!(
        k.api.object("gatewayclasses", "", "envoy").unwrap()["status"].is_null(),
        "another controller's class is not ours to write"
    );
    wait_for("the gateway counting the route", || {
        let g = k.api.object("gateways", NS, "ours").unwrap();
        g["status"]["listeners"][0]["attachedRoutes"] == 1
    })
    .await;
    let g = k.api.object("gateways", NS, "ours").unwrap();
    let types: Vec<(&str, &str)> = g["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(types, vec![("Accepted", "True"), ("Programmed", "True")]);
    let r = k.api.object("httproutes", NS, "shop").unwrap();
    assert_eq!(
        r["status"]["parents"][0]["conditions"][0]["observedGeneration"],
        1
    );
    assert_eq!(r["status"]["parents"][0]["parentRef"]["name"], "ours");
    let http = &g["status"]["listeners"][0];
    assert_eq!(http["name"], "http");
    assert_eq!(http["supportedKinds"][0]["kind"], "HTTPRoute");
    assert_eq!(
        g["status"]["listeners"][1]["attachedRoutes"], 0,
        "sectionName http only"
    );
    assert!(k.api.object("gateways", NS, "theirs").unwrap()["status"].is_null());
}

#[tokio::test]
async fn a_route_to_a_service_that_does_not_exist_is_backend_not_found() {
    let k = Cluster::start().await;
    k.api.apply(route_to(
        NS,
        "gone",
        HOST,
        "http",
        json!({"name": "gone", "port": k.port}),
    ));
    k.wait_route(
        NS,
        "gone",
        &[ACCEPTED, ("ResolvedRefs", "False", "BackendNotFound")],
    )
    .await;
    // Its only backendRef is invalid: Gateway API's 500 (the next test).
    assert_eq!(
        k.get(HOST, "/", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn a_rule_whose_only_backend_ref_is_a_missing_service_answers_500_over_http1_and_http2() {
    let k = Cluster::start().await;
    // An older route takes every other path of the host to `web`: the rule's requests
    // must not fall through to it.
    k.api
        .apply(route("shop", "ours", k.port, &["/"], json!(null)));
    k.wait_status("/", StatusCode::OK).await;
    let mut gone = route("gone", "ours", k.port, &["/gone"], json!(null));
    gone["spec"]["rules"][0]["backendRefs"] = json!([{"name": "missing", "port": k.port}]);
    k.api.apply(gone);
    k.wait_route(
        NS,
        "gone",
        &[ACCEPTED, ("ResolvedRefs", "False", "BackendNotFound")],
    )
    .await;
    k.wait_status("/gone/x", StatusCode::INTERNAL_SERVER_ERROR)
        .await;
    for t in [Transport::H1, Transport::H2c] {
        let fields: &[(&str, &str)] = if t.is_h2() { &[] } else { &[("host", HOST)] };
        let target = if t.is_h2() {
            format!("http://{HOST}/gone/x")
        } else {
            "/gone/x".into()
        };
        let r = send_plain(t, k.proxy.proxy_addr, request(&target, fields, false)).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{t:?}");
        assert_eq!(r.body, "no valid backend\n", "{t:?}");
        assert!(r.headers.get("location").is_none(), "{t:?}");
    }
    assert_eq!(k.get(HOST, "/other", &[]).await.status, StatusCode::OK);
    let c = TestClient::new();
    let a = k.proxy.admin_addr;
    let n = metric(&c, a, "tether_route_answers_total", &[("status", "500")]).await;
    assert!(n >= 3.0, "counted where no backend is: {n}");
}

#[tokio::test]
async fn a_request_redirect_answers_with_its_location_over_http1_and_http2_and_is_accepted() {
    let k = Cluster::start().await;
    let redirect = |r: Value| json!([{"type": "RequestRedirect", "requestRedirect": r}]);
    k.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "moves", "namespace": NS, "generation": 1},
        "spec": {
            "parentRefs": [{"name": "ours", "sectionName": "http"}],
            "hostnames": [HOST],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                 "filters": redirect(json!({"scheme": "https", "statusCode": 301}))},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}],
                 "filters": redirect(json!({
                     "hostname": "store.example.com",
                     "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/store"},
                     "statusCode": 302}))},
                {"backendRefs": [{"name": "web", "port": k.port}]},
            ],
        },
    }));
    k.wait_route(NS, "moves", &[ACCEPTED, RESOLVED]).await;
    k.wait_status("/old", StatusCode::MOVED_PERMANENTLY).await;
    for t in [Transport::H1, Transport::H2c] {
        let get = |host: &str, path: &str| {
            let target = if t.is_h2() {
                format!("http://{host}{path}")
            } else {
                path.to_string()
            };
            let fields = if t.is_h2() {
                vec![]
            } else {
                vec![("host", host)]
            };
            send_plain(t, k.proxy.proxy_addr, request(&target, &fields, false))
        };
        // The scheme changes, so the port is https's own, which is not written.
        let r = get("shop.example.com:8080", "/old/page?q=1&r=2").await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "{t:?}");
        assert_eq!(
            r.headers["location"], "https://shop.example.com/old/page?q=1&r=2",
            "{t:?}"
        );
        // The host and prefix change; scheme and port stay the request's.
        let r = get("shop.example.com:8080", "/shop/cart?id=7").await;
        assert_eq!(r.status, StatusCode::FOUND, "{t:?}");
        assert_eq!(
            r.headers["location"], "http://store.example.com:8080/store/cart?id=7",
            "{t:?}"
        );
        let r = get(HOST, "/shop").await;
        assert_eq!(
            r.headers["location"], "http://store.example.com/store",
            "{t:?}"
        );
        // The rule without a redirect still goes to its Service.
        assert_eq!(get(HOST, "/other").await.status, StatusCode::OK, "{t:?}");
    }
}

#[tokio::test]
async fn a_route_of_a_namespace_the_listener_does_not_admit_is_not_allowed() {
    let k = Cluster::start().await;
    k.pods_as("elsewhere", "web");
    k.api.apply(route_to(
        "elsewhere",
        "stranger",
        HOST,
        "http",
        json!({"name": "web", "port": k.port}),
    ));
    k.wait_route(
        "elsewhere",
        "stranger",
        &[("Accepted", "False", "NotAllowedByListeners"), RESOLVED],
    )
    .await;
    assert_eq!(k.get(HOST, "/", &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_service_of_another_namespace_routes_only_once_a_reference_grant_allows_it() {
    let k = Cluster::start().await;
    k.pods_as("team", "api");
    k.api.apply(route_to(
        NS,
        "cross",
        HOST,
        "http",
        json!({"name": "api", "namespace": "team", "port": k.port}),
    ));
    k.wait_route(
        NS,
        "cross",
        &[ACCEPTED, ("ResolvedRefs", "False", "RefNotPermitted")],
    )
    .await;
    // Its only backendRef is refused: Gateway API's 500, and no backend for it.
    k.wait_status("/", StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(k.backend_names().is_empty(), "{:?}", k.backend_names());
    // A grant for another namespace's routes does not do.
    k.api
        .apply(reference_grant("team", "for-others", "other", "api"));
    k.api.apply(reference_grant("team", "for-shop", NS, "api"));
    k.wait_status("/", StatusCode::OK).await;
    k.wait_route(NS, "cross", &[ACCEPTED, RESOLVED]).await;
    assert_eq!(
        k.backend_names(),
        vec![format!("httproute:{NS}:cross:api.team:{}", k.port)]
    );
    // Withdrawn: refused again.
    k.api.delete_object("referencegrants", "team", "for-shop");
    k.wait_status("/", StatusCode::INTERNAL_SERVER_ERROR).await;
}

#[tokio::test]
async fn a_selector_admits_routes_of_a_labelled_namespace_and_refuses_another() {
    let mut selective = gateway("selective", "tether");
    selective["spec"]["listeners"] = json!([{
        "name": "http", "port": 80, "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "Selector",
            "selector": {"matchLabels": {"tether.io/routes": "yes"}}}},
    }]);
    let k = Cluster::start().await;
    k.api.apply(selective);
    k.api
        .apply(namespace("blue", json!({"tether.io/routes": "yes"})));
    k.api
        .apply(namespace("green", json!({"tether.io/routes": "no"})));
    for ns in ["blue", "green"] {
        k.pods_as(ns, "web");
        let mut r = route_to(
            ns,
            "r",
            &format!("{ns}.example.com"),
            "http",
            json!({"name": "web", "port": k.port}),
        );
        r["spec"]["parentRefs"][0]["name"] = json!("selective");
        k.api.apply(r);
    }
    k.wait_route("blue", "r", &[ACCEPTED, RESOLVED]).await;
    k.wait_route(
        "green",
        "r",
        &[("Accepted", "False", "NotAllowedByListeners"), RESOLVED],
    )
    .await;
    assert_eq!(
        k.get("blue.example.com", "/", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        k.get("green.example.com", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // Relabelled: green's route attaches too.
    k.api
        .apply(namespace("green", json!({"tether.io/routes": "yes"})));
    k.wait_route("green", "r", &[ACCEPTED, RESOLVED]).await;
}

#[tokio::test]
async fn only_the_elected_replica_writes_gateway_status() {
    // The cluster's first tether answers for another controller: it writes nothing.
    let k = Cluster::start_with(
        "[kubernetes.gateway]\ndebounce = \"20ms\"\ncontroller_name = \"example.com/none\"\n",
    )
    .await;
    k.api
        .apply(route("shop", "ours", k.port, &["/"], json!(null)));
    let a = k.replica("tether-a").await;
    let b = k.replica("tether-b").await;
    k.wait_route(NS, "shop", &[ACCEPTED, RESOLVED]).await;
    wait_for("the gateway status", || {
        let g = k.api.object("gateways", NS, "ours").unwrap();
        g["status"]["addresses"] == json!([{"type": "Hostname", "value": "lb.example.com"}])
    })
    .await;
    // A second route: once its status is written, the echoes of the first writes have
    // been seen too.
    let mut second = route("second", "ours", k.port, &["/second"], json!(null));
    second["spec"]["hostnames"] = json!(["second.example.com"]);
    k.api.apply(second);
    k.wait_route(NS, "second", &[ACCEPTED, RESOLVED]).await;

    let holder = k
        .api
        .lease("default", LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .expect("a replica holds the Lease");
    assert!(
        ["tether-a", "tether-b"].contains(&holder.as_str()),
        "{holder}"
    );
    let writes = k.api.status_writes();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(
            w.field_manager,
            format!("tether-{holder}"),
            "only the Lease holder writes status: {writes:?}"
        );
    }
    // Each written status comes back as a watch event, is found equal, and is not
    // written again.
    let count = |resource: &str, name: &str| {
        k.writes(resource)
            .iter()
            .filter(|w| w.ingress == name)
            .count()
    };
    assert_eq!(count("gatewayclasses", "tether"), 1, "{writes:?}");
    assert_eq!(count("httproutes", &format!("{NS}/shop")), 1, "{writes:?}");
    assert_eq!(
        count("httproutes", &format!("{NS}/second")),
        1,
        "{writes:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Every violation of the `v1` schema of its CRD (tests/data/gateway-api) by `object`
/// as the API server holds it, status included: what tether writes must be what a real
/// API server accepts (types, enums, patterns, required fields, list sizes).
fn violations(object: &Value, crd: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gateway-api")
        .join(crd);
    let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    let validator = jsonschema::validator_for(&version["schema"]["openAPIV3Schema"]).unwrap();
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[tokio::test]
async fn the_status_tether_writes_is_valid_by_the_crds() {
    let k = Cluster::start().await;
    let persistence = json!({"sessionName": "SHOP"});
    k.api
        .apply(route("shop", "ours", k.port, &["/"], persistence.clone()));
    let mut stranger = route("stranger", "ours", k.port, &["/x"], persistence);
    stranger["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("team");
    k.api.apply(stranger);
    k.wait_route(NS, "shop", &[ACCEPTED, RESOLVED]).await;
    k.wait_route(
        NS,
        "stranger",
        &[ACCEPTED, ("ResolvedRefs", "False", "RefNotPermitted")],
    )
    .await;
    wait_for("the gateway status", || {
        k.api.object("gateways", NS, "ours").unwrap()["status"]["listeners"][0]["attachedRoutes"]
            == 2
    })
    .await;
    for (plural, ns, name, crd) in [
        (
            "gatewayclasses",
            "",
            "tether",
            "gateway.networking.k8s.io_gatewayclasses.yaml",
        ),
        (
            "gateways",
            NS,
            "ours",
            "gateway.networking.k8s.io_gateways.yaml",
        ),
        (
            "httproutes",
            NS,
            "shop",
            "gateway.networking.k8s.io_httproutes.yaml",
        ),
        (
            "httproutes",
            NS,
            "stranger",
            "gateway.networking.k8s.io_httproutes.yaml",
        ),
    ] {
        let object = k.api.object(plural, ns, name).unwrap();
        assert!(object["status"].is_object(), "{plural} {name}: {object}");
        let errors = violations(&object, crd);
        assert!(errors.is_empty(), "{errors:#?}\n{object:#}");
    }
    // The schema checks status: it is not vacuous.
    let mut bad = k.api.object("gateways", NS, "ours").unwrap();
    bad["status"]["listeners"][0]["conditions"][0]["status"] = json!("Maybe");
    assert!(!violations(&bad, "gateway.networking.k8s.io_gateways.yaml").is_empty());
}

/// Sessions of `sessions` on the canary pod (pod-c).
fn on_canary(sessions: &[(String, String)]) -> usize {
    sessions.iter().filter(|(_, pod)| pod == "pod-c").count()
}

#[tokio::test]
async fn weighted_backend_refs_split_new_sessions_and_a_live_weight_change_moves_none() {
    let k = Cluster::start().await;
    k.split_services();
    k.api.apply(split_route(k.port, (1, 3)));
    let name = format!("httproute:{NS}:shop:web:{}", k.port);
    // web's 1 over two pods, canary's 3 on one: 1/8, 1/8, 6/8 of new sessions.
    k.wait_weights(&name, [1, 1, 6]).await;
    let before = k.new_sessions(200).await;
    let canary = on_canary(&before);
    // 150 expected (σ ≈ 6); one pod in three would be 67, the heaviest only 200.
    assert!(
        (120..=180).contains(&canary),
        "1:3 sends about three quarters of new sessions to canary: {canary} of 200"
    );

    // The weights flip to 3:1, applied live by editing the HTTPRoute: same backend.
    k.api.apply(split_route(k.port, (3, 1)));
    k.wait_weights(&name, [3, 3, 2]).await;
    assert_eq!(k.backend_names(), vec![name.clone()]);
    for (cookie, pod) in &before {
        let r = k.get(HOST, "/", &[("cookie", cookie)]).await;
        assert_eq!(&r.pod(), pod, "a weight change moves no session");
    }
    // New sessions follow the new weights: canary's share is a quarter now, and it holds
    // three quarters of the live sessions, so the load bound sends new ones to web.
    let after = k.new_sessions(200).await;
    let canary = on_canary(&after);
    assert!(
        canary <= 50,
        "3:1 sends at most a quarter of new sessions to canary: {canary} of 200"
    );

    // Weight 0: canary takes no new session, and its sessions stay on it.
    k.api.apply(split_route(k.port, (1, 0)));
    k.wait_weights(&name, [1, 1, 0]).await;
    assert_eq!(on_canary(&k.new_sessions(100).await), 0);
    let pinned: Vec<_> = before
        .iter()
        .chain(&after)
        .filter(|(_, pod)| pod == "pod-c")
        .collect();
    assert!(!pinned.is_empty());
    for (cookie, pod) in pinned {
        let r = k.get(HOST, "/", &[("cookie", cookie)]).await;
        assert_eq!(&r.pod(), pod, "a weight-0 Service keeps its sessions");
    }
}

/// An XBackendTrafficPolicy in the shop namespace giving Service `service` a session
/// cookie named `cookie`.
fn traffic_policy(service: &str, cookie: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.x-k8s.io/v1alpha1",
        "kind": "XBackendTrafficPolicy",
        "metadata": {"name": "sessions", "namespace": NS},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": service}],
            "sessionPersistence": {"sessionName": cookie},
        },
    })
}

#[tokio::test]
async fn a_backend_traffic_policy_names_the_cookie_unless_the_rule_has_its_own() {
    let k = Cluster::start().await;
    k.api.apply(traffic_policy("web", "POLICY"));
    k.api
        .apply(route("shop", "ours", k.port, &["/"], json!(null)));
    wait_for_async("the policy's cookie", || async {
        k.get(HOST, "/", &[]).await.cookie("POLICY").is_some()
    })
    .await;
    let first = k.get(HOST, "/", &[]).await;
    let cookie = format!("POLICY={}", first.cookie("POLICY").unwrap());
    let pod = first.pod();
    for _ in 0..5 {
        let r = k.get(HOST, "/", &[("cookie", &cookie)]).await;
        assert_eq!(r.pod(), pod, "the policy's cookie keeps the session");
    }

    // The rule's own sessionPersistence wins over the policy.
    k.api.apply(route(
        "shop",
        "ours",
        k.port,
        &["/"],
        json!({"type": "Cookie", "sessionName": "SHOP"}),
    ));
    wait_for_async("the rule's cookie", || async {
        k.get(HOST, "/", &[]).await.cookie("SHOP").is_some()
    })
    .await;
    assert!(k.get(HOST, "/", &[]).await.cookie("POLICY").is_none());
}

#[tokio::test]
async fn routes_route_in_a_cluster_without_the_experimental_policy_crd() {
    use support::fake_apiserver::{slice, Ep, FakeApiServer};
    let (pods, port) = pods_on_one_port(&["pod-a"]).await;
    let api = FakeApiServer::start().await;
    api.unserve("xbackendtrafficpolicies");
    api.apply(gateway_class("tether", "tether.io/gateway-controller"));
    api.apply(gateway("ours", "tether"));
    let ep = Ep::pod(&pods[0].name, &pods[0].addr.ip().to_string());
    api.apply(service(NS, "web"));
    api.apply(slice(NS, "web-1", "web", "http", port, &[ep]));
    api.apply(route(
        "shop",
        "ours",
        port,
        &["/"],
        json!({"sessionName": "SHOP"}),
    ));
    let dir = tempfile::tempdir().unwrap();
    api.kubeconfig(dir.path());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [kubernetes]\nkubeconfig = \"{}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n\
         [kubernetes.gateway]\ndebounce = \"20ms\"\n[[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n",
        dir.path().join("kubeconfig").display(),
    );
    let proxy = proxy_with(&config, tether::server::Options::default()).await;
    wait_for_async("the route", || async {
        let req = Request::get(format!("http://{}/", proxy.proxy_addr))
            .header("host", HOST)
            .body(Full::default())
            .unwrap();
        TestClient::new().send(req).await.status == StatusCode::OK
    })
    .await;
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
    k.api.apply(service(NS, "canary"));
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

/// The pods that answer `n` new sessions on `host`.
async fn pods_of(k: &Cluster, host: &str, n: usize) -> std::collections::BTreeSet<String> {
    let mut pods = std::collections::BTreeSet::new();
    for _ in 0..n {
        let r = k.get(host, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
        pods.insert(r.pod());
    }
    pods
}

#[tokio::test]
async fn an_ingress_and_an_httproute_of_the_same_name_each_route_to_their_own_service() {
    use support::fake_apiserver::{ingress, ingress_class};
    let k = Cluster::start_with(
        "[kubernetes.gateway]\ndebounce = \"20ms\"\n\
         [kubernetes.ingress]\ndebounce = \"20ms\"\n",
    )
    .await;
    k.split_services();
    k.api
        .apply(ingress_class("tether", "tether.io/ingress-controller"));
    // Ingress shop/web: its host to Service web (pods a and b).
    k.api.apply(ingress(
        NS,
        "web",
        "tether",
        "ingress.example.com",
        &[("/", "Prefix")],
        "web",
        k.port,
        &[],
    ));
    // HTTPRoute shop/web: its host to Service canary (pod c); web, listed first, takes
    // no new sessions. Both are named after (namespace, name, first Service, port).
    let mut r = route_to(NS, "web", HOST, "http", json!({}));
    r["spec"]["rules"][0]["backendRefs"] = json!([
        {"name": "web", "port": k.port, "weight": 0},
        {"name": "canary", "port": k.port, "weight": 1},
    ]);
    k.api.apply(r);
    k.wait_status("/", StatusCode::OK).await;
    wait_for_async("the ingress host routing", || async {
        k.get("ingress.example.com", "/", &[]).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        pods_of(&k, HOST, 8).await,
        ["pod-c".to_string()].into(),
        "the HTTPRoute's requests go to its own Service: {:?}",
        k.backend_names()
    );
    assert!(
        !pods_of(&k, "ingress.example.com", 8)
            .await
            .contains("pod-c"),
        "the Ingress's requests go to its own Service"
    );
    assert_eq!(k.backend_names().len(), 2, "{:?}", k.backend_names());
}

#[tokio::test]
async fn a_dotted_httproute_name_routes_to_its_own_service() {
    let k = Cluster::start().await;
    k.split_services();
    // Service canary of namespace team: pods a and b; of shop: pod c.
    let ep = |i: usize| Ep::pod(&k.pods[i].name, &k.pods[i].addr.ip().to_string());
    k.api.apply(service("team", "canary"));
    k.api.apply(slice(
        "team",
        "canary-1",
        "canary",
        "http",
        k.port,
        &[ep(0), ep(1)],
    ));
    k.api
        .apply(reference_grant("team", "for-shop", NS, "canary"));
    // shop/web to team's canary, and shop/web.team to shop's: the same words in the
    // same order, `shop web team canary port`.
    k.api.apply(route_to(
        NS,
        "web",
        "a.example.com",
        "http",
        json!({"name": "canary", "namespace": "team", "port": k.port}),
    ));
    k.api.apply(route_to(
        NS,
        "web.team",
        "b.example.com",
        "http",
        json!({"name": "canary", "port": k.port}),
    ));
    for host in ["a.example.com", "b.example.com"] {
        wait_for_async(&format!("{host} routing"), || async {
            k.get(host, "/", &[]).await.status == StatusCode::OK
        })
        .await;
    }
    assert!(
        !pods_of(&k, "a.example.com", 8).await.contains("pod-c"),
        "shop/web goes to team/canary"
    );
    assert_eq!(
        pods_of(&k, "b.example.com", 8).await,
        ["pod-c".to_string()].into(),
        "shop/web.team goes to shop/canary: {:?}",
        k.backend_names()
    );
}
