//! HTTPS from Kubernetes: Gateway API `HTTPS` listeners and Ingress `spec.tls` serve the
//! certificates of their `kubernetes.io/tls` Secrets on tether's TLS listener, chosen by
//! SNI, rotated when a Secret changes, and never replaced by a Secret that does not
//! parse. A client verifies every certificate against a test CA, as a browser would.

mod support;

use http::StatusCode;
use serde_json::{json, Value};
use support::fake_apiserver::{ingress, ingress_class, service, tls_secret, ModeCluster};
use support::transport::{https_get, presented, Cert, TestCa};
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.example.com";

/// A test CA, the config file's certificate it issued (for `localhost` and
/// `*.example.com`, so a client can verify it for a host no Secret covers), and the
/// `[server.tls]` section serving it.
struct Pki {
    ca: TestCa,
    default: Cert,
    section: String,
    _dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new();
        let default = ca.issue(&["localhost", "*.example.com"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &default.pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &default.key).unwrap();
        let section = format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display()
        );
        Pki {
            ca,
            default,
            section,
            _dir: dir,
        }
    }
}

fn gateway_objects(shop: &Cert) -> Vec<Value> {
    let https = |name: &str, host: &str, secret: &str| {
        json!({"name": name, "port": 443, "protocol": "HTTPS", "hostname": host,
               "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]}})
    };
    vec![
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "tether"},
            "spec": {"controllerName": "tether.io/gateway-controller"},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "ours", "namespace": NS},
            "spec": {"gatewayClassName": "tether", "listeners": [
                https("https", HOST, "shop-tls"),
                https("api", "api.example.com", "api-tls"),
            ]},
        }),
        tls_secret(NS, "shop-tls", &shop.pem, &shop.key),
        // The routes' Service (a backendRef to a Service that does not exist is invalid).
        service(NS, "web"),
    ]
}

fn https_route(port: u16) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "ours", "sectionName": "https"}],
            "hostnames": [HOST],
            "rules": [{"backendRefs": [{"name": "web", "port": port}]}],
        },
    })
}

async fn gateway_cluster(pki: &Pki, shop: &Cert) -> ModeCluster {
    let mode = format!("[kubernetes.gateway]\ndebounce = \"20ms\"\n{}", pki.section);
    let k = ModeCluster::start(NS, gateway_objects(shop), &mode).await;
    k.api.apply(https_route(k.port));
    k
}

/// Waits until a handshake for `host` is given `cert`.
async fn wait_presented(k: &ModeCluster, pki: &Pki, host: &str, cert: &Cert) {
    let root = pki.ca.root();
    wait_for_async(&format!("{host} presenting its certificate"), || async {
        presented(k.proxy.proxy_addr, &root, host).await.as_ref() == Some(&cert.der)
    })
    .await;
}

#[tokio::test]
async fn an_https_listener_serves_its_secrets_certificate_for_its_hostname_and_routes_sticky() {
    let pki = Pki::new();
    let shop = pki.ca.issue(&[HOST]);
    let k = gateway_cluster(&pki, &shop).await;
    let (addr, root) = (k.proxy.proxy_addr, pki.ca.root());
    wait_presented(&k, &pki, HOST, &shop).await;
    wait_for_async("the route over https", || async {
        https_get(addr, &root, HOST, "/", &[]).await.status == StatusCode::OK
    })
    .await;

    let first = https_get(addr, &root, HOST, "/cart", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.seen("x-forwarded-proto").as_deref(), Some("https"));
    let cookie = first.cookie("tether").expect("a session cookie");
    let pod = first.pod();
    for _ in 0..5 {
        let r = https_get(
            addr,
            &root,
            HOST,
            "/cart",
            &[("cookie", &format!("tether={cookie}"))],
        )
        .await;
        assert_eq!(r.pod(), pod, "the session sticks to its pod");
    }
    // A host no Secret covers gets the config file's certificate.
    assert_eq!(
        presented(addr, &root, "other.example.com").await,
        Some(pki.default.der.clone())
    );
}

#[tokio::test]
async fn a_secret_update_rotates_the_certificate_and_a_malformed_one_keeps_the_previous() {
    let pki = Pki::new();
    let first = pki.ca.issue(&[HOST]);
    let k = gateway_cluster(&pki, &first).await;
    wait_presented(&k, &pki, HOST, &first).await;

    // Rotation (cert-manager renewing): new handshakes get the new pair, no restart.
    let second = pki.ca.issue(&[HOST]);
    k.api
        .apply(tls_secret(NS, "shop-tls", &second.pem, &second.key));
    wait_presented(&k, &pki, HOST, &second).await;

    // A botched edit: refused, the previous certificate stays. The api listener's
    // Secret, created after it, shows the edit has been read.
    k.api.apply(tls_secret(
        NS,
        "shop-tls",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        &second.key,
    ));
    let api = pki.ca.issue(&["api.example.com"]);
    k.api.apply(tls_secret(NS, "api-tls", &api.pem, &api.key));
    wait_presented(&k, &pki, "api.example.com", &api).await;
    assert_eq!(
        presented(k.proxy.proxy_addr, &pki.ca.root(), HOST).await,
        Some(second.der.clone())
    );
    // A key of another pair: refused the same way.
    let stranger = pki.ca.issue(&[HOST]);
    k.api
        .apply(tls_secret(NS, "shop-tls", &second.pem, &stranger.key));
    let api2 = pki.ca.issue(&["api.example.com"]);
    k.api.apply(tls_secret(NS, "api-tls", &api2.pem, &api2.key));
    wait_presented(&k, &pki, "api.example.com", &api2).await;
    assert_eq!(
        presented(k.proxy.proxy_addr, &pki.ca.root(), HOST).await,
        Some(second.der.clone())
    );
}

#[tokio::test]
async fn an_ingress_with_tls_serves_its_secrets_certificate_for_the_hosts_it_routes() {
    let pki = Pki::new();
    let shop = pki.ca.issue(&[HOST, "www.example.com"]);
    let objects = vec![
        ingress_class("tether", "tether.io/ingress-controller"),
        tls_secret(NS, "shop-tls", &shop.pem, &shop.key),
    ];
    let mode = format!("[kubernetes.ingress]\ndebounce = \"20ms\"\n{}", pki.section);
    let k = ModeCluster::start(NS, objects, &mode).await;
    let mut i = ingress(
        NS,
        "shop",
        "tether",
        HOST,
        &[("/", "Prefix")],
        "web",
        k.port,
        &[],
    );
    i["spec"]["tls"] = json!([{"hosts": [HOST, "www.example.com"], "secretName": "shop-tls"}]);
    k.api.apply(i);
    wait_presented(&k, &pki, HOST, &shop).await;
    // www is in spec.tls but in no rule: the Ingress does not serve it, so it does not
    // get the Ingress's certificate (bound in the same update as HOST's).
    let (addr, root) = (k.proxy.proxy_addr, pki.ca.root());
    assert_eq!(
        presented(addr, &root, "www.example.com").await,
        Some(pki.default.der.clone())
    );
    wait_for_async("the ingress over https", || async {
        https_get(addr, &root, HOST, "/", &[]).await.status == StatusCode::OK
    })
    .await;
    let r = https_get(addr, &root, HOST, "/", &[]).await;
    assert!(k.pods.iter().any(|p| p.name == r.pod()));
    assert_eq!(
        presented(addr, &root, "other.example.com").await,
        Some(pki.default.der.clone())
    );
}

#[tokio::test]
async fn secrets_are_not_read_until_an_object_names_one() {
    let pki = Pki::new();
    let shop = pki.ca.issue(&[HOST]);
    let mut objects = gateway_objects(&shop);
    // An HTTP listener only: no certificate asked for.
    objects[1]["spec"]["listeners"] =
        json!([{"name": "http", "port": 80, "protocol": "HTTP", "hostname": HOST}]);
    let mode = format!("[kubernetes.gateway]\ndebounce = \"20ms\"\n{}", pki.section);
    let k = ModeCluster::start(NS, objects, &mode).await;
    let mut route = https_route(k.port);
    route["spec"]["parentRefs"][0]["sectionName"] = json!("http");
    k.api.apply(route);
    let (addr, root) = (k.proxy.proxy_addr, pki.ca.root());
    wait_for_async("the route over the file's certificate", || async {
        https_get(addr, &root, HOST, "/", &[]).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        presented(addr, &root, HOST).await,
        Some(pki.default.der.clone())
    );
    assert_eq!(
        k.api.requests_of("secrets"),
        0,
        "no right to Secrets needed"
    );

    // An HTTPS listener naming a Secret starts the watch.
    k.api.apply(gateway_objects(&shop)[1].clone());
    wait_presented(&k, &pki, HOST, &shop).await;
    assert!(k.api.requests_of("secrets") > 0);
}

/// (status, reason) of condition `type_` of listener `listener` of Gateway `shop/ours`
/// in the last status patch tether wrote for it.
fn listener_condition(k: &ModeCluster, listener: &str, type_: &str) -> Option<(String, String)> {
    let write = k
        .api
        .status_writes()
        .into_iter()
        .rfind(|w| w.resource == "gateways" && w.ingress == format!("{NS}/ours"))?;
    let listeners = write.status["listeners"].as_array()?.clone();
    let l = listeners.iter().find(|l| l["name"] == listener)?;
    let c = l["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason")))
}

/// Waits until listener `listener` of `shop/ours` says `resolved` and `programmed`
/// ((status, reason) each) in its last status patch.
async fn wait_listener(
    k: &ModeCluster,
    listener: &str,
    resolved: (&str, &str),
    programmed: (&str, &str),
) {
    let want = |(s, r): (&str, &str)| Some((s.to_string(), r.to_string()));
    wait_for(
        &format!("listener {listener}: ResolvedRefs {resolved:?}, Programmed {programmed:?}"),
        || {
            listener_condition(k, listener, "ResolvedRefs") == want(resolved)
                && listener_condition(k, listener, "Programmed") == want(programmed)
        },
    )
    .await;
}

#[tokio::test]
async fn a_listener_whose_secret_is_missing_or_malformed_has_an_invalid_certificate_ref() {
    let pki = Pki::new();
    let shop = pki.ca.issue(&[HOST]);
    // Listener `api` names Secret api-tls, which does not exist yet.
    let k = gateway_cluster(&pki, &shop).await;
    let invalid = ("False", "InvalidCertificateRef");
    let not_programmed = ("False", "Invalid");
    let (resolved, programmed) = (("True", "ResolvedRefs"), ("True", "Programmed"));
    wait_listener(&k, "api", invalid, not_programmed).await;
    wait_listener(&k, "https", resolved, programmed).await;
    // Created: resolved.
    let api = pki.ca.issue(&["api.example.com"]);
    k.api.apply(tls_secret(NS, "api-tls", &api.pem, &api.key));
    wait_listener(&k, "api", resolved, programmed).await;
    // A key that is not the certificate's: invalid again, though the listener keeps
    // serving the pair the Secret held before.
    let stranger = pki.ca.issue(&["stranger.example.com"]);
    k.api
        .apply(tls_secret(NS, "api-tls", &api.pem, &stranger.key));
    wait_listener(&k, "api", invalid, not_programmed).await;
    wait_presented(&k, &pki, "api.example.com", &api).await;
    // Not PEM at all, in a Secret of the TLS type.
    k.api.apply(tls_secret(NS, "api-tls", &api.pem, &api.key));
    wait_listener(&k, "api", resolved, programmed).await;
    k.api.apply(tls_secret(NS, "api-tls", "not pem", "not pem"));
    wait_listener(&k, "api", invalid, not_programmed).await;
    // A good pair again, then deleted. (A Secret of another type than
    // kubernetes.io/tls is never seen: the watch's field selector leaves it out, so it
    // counts as missing.)
    k.api.apply(tls_secret(NS, "api-tls", &api.pem, &api.key));
    wait_listener(&k, "api", resolved, programmed).await;
    k.api.delete_object("secrets", NS, "api-tls");
    wait_listener(&k, "api", invalid, not_programmed).await;
}
