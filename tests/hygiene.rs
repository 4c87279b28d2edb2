//! What the app is told, and what a client cannot make it believe: the headers tether
//! sets in any spelling, the host a request is for, and `X-Forwarded-For`, on every
//! listener and protocol (HTTP/1.1 bodyless and with a chunked body, over TCP and TLS;
//! HTTP/2 with prior knowledge and over TLS).

mod support;

use support::transport::{arrivals, request, to_localhost, Front, Transport};
use support::*;

#[tokio::test]
async fn spoofed_tether_headers_in_any_spelling_never_reach_the_app() {
    let pods = three_pods().await;
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let fields = [
                ("x-tether-session", "ffffffffffffffffffffffffffffffff"),
                ("x_tether_session", "ffffffffffffffffffffffffffffffff"),
                ("X_Tether_Affinity", "sticky"),
                ("x_tether_previous_endpoint", "10.0.0.9:8080"),
                ("x_forwarded_for", "6.6.6.6"),
                ("X_Forwarded_Host", "evil.example"),
                ("x-forwarded_proto", "https"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "198.51.100.2"),
            ];
            let r = front
                .send(to_localhost(transport, "/", &fields, chunked))
                .await;
            let what = format!("{transport:?}, chunked {chunked}");
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            let seen = r.json()["headers"].clone();
            let names: Vec<&String> = seen.as_object().unwrap().keys().collect();
            for n in &names {
                assert!(!n.contains('_'), "{what}: {n} reached the app: {names:?}");
            }
            let session = seen["x-tether-session"].as_str().unwrap();
            assert_eq!(session.len(), 32, "{what}: {session}");
            assert_ne!(session, "f".repeat(32), "{what}: the client's session id");
            assert_eq!(seen["x-tether-affinity"], "new", "{what}");
            assert_eq!(
                seen["x-forwarded-for"], "203.0.113.7, 198.51.100.2, 127.0.0.1",
                "{what}: every X-Forwarded-For line, then the peer"
            );
            assert_eq!(seen["x-forwarded-host"], "localhost", "{what}");
            let proto = if matches!(transport, Transport::H1Tls | Transport::H2Tls) {
                "https"
            } else {
                "http"
            };
            assert_eq!(seen["x-forwarded-proto"], proto, "{what}");
        }
        front.proxy.shutdown().await;
    }
}

/// Two backends, `a` for host a.test and `b` for b.test.
async fn two_hosts() -> (Vec<std::sync::Arc<TestBackend>>, String) {
    let pods = pods(&["pod-a", "pod-b"]).await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\n\
         [[backend]]\nname = \"a\"\nendpoints = [{}]\n\n[[backend]]\nname = \"b\"\nendpoints = [{}]\n\n\
         [[route]]\nhost = \"a.test\"\nbackend = \"a\"\n\n[[route]]\nhost = \"b.test\"\nbackend = \"b\"\n",
        pods[0].entry(),
        pods[1].entry()
    );
    (pods, cfg)
}

#[tokio::test]
async fn the_targets_authority_is_the_host_routed_by_and_told_to_the_app() {
    // RFC 9112 §3.2.2: absolute-form replaces Host. RFC 9113 §8.3.1: so does :authority.
    let (_pods, cfg) = two_hosts().await;
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let r = front
                .send(request("http://b.test/x", &[("host", "a.test")], chunked))
                .await;
            let what = format!("{transport:?}, chunked {chunked}");
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_eq!(r.pod(), "pod-b", "{what}: routed by the target's host");
            assert_eq!(r.seen("host").as_deref(), Some("b.test"), "{what}");
            assert_eq!(
                r.seen("x-forwarded-host").as_deref(),
                Some("b.test"),
                "{what}"
            );
            assert_eq!(r.json()["path"], "/x", "{what}: origin-form upstream");
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_repeated_or_invalid_host_gets_400() {
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, with two, or with an
    // invalid value; a value that is no `uri-host [":" port]` never routes.
    let (pods, cfg) = two_hosts().await;
    let bad: &[&[(&str, &str)]] = &[
        &[("host", "a.test"), ("host", "b.test")],
        &[("host", "b.test x")],
        &[("host", "a@b.test")],
        &[("host", "b.test, a.test")],
        &[("host", "a.test:@b.test")],
        &[("host", "a.test:80:80")],
    ];
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let mut cases: Vec<&[(&str, &str)]> = bad.to_vec();
            if !transport.is_h2() {
                cases.push(&[]);
            }
            for fields in cases {
                let target = if transport.is_h2() {
                    "http://a.test/"
                } else {
                    "/"
                };
                let r = front.send(request(target, fields, chunked)).await;
                let what = format!("{transport:?}, chunked {chunked}, {fields:?}");
                assert_eq!(r.status, 400, "{what}: {}", r.text());
            }
        }
        front.proxy.shutdown().await;
    }
    for p in &pods {
        assert_eq!(p.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
