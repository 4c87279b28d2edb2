//! The sticky data path, end to end: real proxy, real backends, real sockets.

mod support;

use std::collections::HashMap;

use base64::Engine;
use support::*;
use tether::affinity::{cookie, KeyRing};
use tether::config::KeyMaterial;

fn ring(keys: &[(&str, &str)]) -> KeyRing {
    KeyRing::from_config(
        &keys
            .iter()
            .map(|(id, s)| KeyMaterial {
                id: id.to_string(),
                secret: tether::config::decode_secret(s).unwrap(),
                file: None,
            })
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn first_request_sets_one_cookie_and_fifty_follow_ups_stick() {
    let pods = three_pods().await;
    let p = proxy(&config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "[backend.affinity]\ncookie = \"tether\"\npath = \"/\"\n",
    ))
    .await;
    let c = TestClient::new();

    let first = c.get(p.proxy_addr, "/cart", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.set_cookies().len(), 1, "{:?}", first.set_cookies());
    let set = ::cookie::Cookie::parse(first.set_cookies()[0].clone()).unwrap();
    assert_eq!(set.name(), "tether");
    assert_eq!(set.path(), Some("/"));
    assert_eq!(set.http_only(), Some(true));
    assert_eq!(set.same_site(), Some(::cookie::SameSite::Lax));
    assert!(
        set.max_age().is_none() && set.expires().is_none(),
        "session cookie"
    );
    assert_eq!(first.seen("x-tether-affinity").as_deref(), Some("new"));
    let session = first.seen("x-tether-session").unwrap();
    assert_eq!(session.len(), 32);
    let pinned = first.pod();
    let value = set.value().to_string();

    for _ in 0..50 {
        let r = c.get(p.proxy_addr, "/cart", Some(&value)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.pod(), pinned);
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
        assert_eq!(
            r.seen("x-tether-session").as_deref(),
            Some(session.as_str())
        );
        assert!(r.set_cookies().is_empty(), "sticky responses set no cookie");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn cookie_attributes_follow_the_config() {
    let pods = three_pods().await;
    let p = proxy(&config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "[backend.affinity]\ncookie = \"sid\"\npath = \"/app\"\ndomain = \"example.com\"\nsecure = true\nsame_site = \"strict\"\nmax_age = \"2h\"\n",
    ))
    .await;
    let r = TestClient::new().get(p.proxy_addr, "/", None).await;
    let set = ::cookie::Cookie::parse(r.set_cookies()[0].clone()).unwrap();
    assert_eq!(set.name(), "sid");
    assert_eq!(set.path(), Some("/app"));
    assert_eq!(set.domain(), Some("example.com"));
    assert_eq!(set.secure(), Some(true));
    assert_eq!(set.same_site(), Some(::cookie::SameSite::Strict));
    assert_eq!(set.max_age().map(|d| d.whole_seconds()), Some(7200));
    p.shutdown().await;
}

#[tokio::test]
async fn cookie_value_reveals_no_endpoint_address_or_port() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    for _ in 0..20 {
        let r = c.get(p.proxy_addr, "/", None).await;
        let value = r.cookie("tether").unwrap();
        assert!(value.len() <= 120);
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&value)
            .unwrap();
        let pod = pods.iter().find(|b| b.name == r.pod()).unwrap();
        let needles: Vec<Vec<u8>> = vec![
            pod.addr.to_string().into_bytes(),
            pod.addr.ip().to_string().into_bytes(),
            pod.addr.port().to_string().into_bytes(),
            // Binary forms: the address as 4 + 2 bytes. (A bare 2-byte port would match
            // random session bytes now and then: too short to mean anything.)
            [&[127u8, 0, 0, 1][..], &pod.addr.port().to_be_bytes()[..]].concat(),
            [&[127u8, 0, 0, 1][..], &pod.addr.port().to_le_bytes()[..]].concat(),
            vec![127, 0, 0, 1],
            pod.name.clone().into_bytes(),
        ];
        for n in &needles {
            for hay in [value.as_bytes(), &decoded[..]] {
                assert!(
                    !hay.windows(n.len()).any(|w| w == &n[..]),
                    "cookie {value} contains {n:?}"
                );
            }
        }
    }
    p.shutdown().await;
}

#[tokio::test]
async fn tampered_truncated_oversized_and_garbage_cookies_are_new_sessions() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let value = first.cookie("tether").unwrap();
    let session = first.seen("x-tether-session").unwrap();

    let mut bad: Vec<String> = Vec::new();
    for i in 0..value.len() {
        let mut bytes = value.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(bytes).unwrap());
    }
    bad.push(String::new());
    bad.push("A".repeat(5000));
    bad.push("%%%not-base64%%%".into());
    bad.push(value[..value.len() - 3].to_string());
    for v in bad {
        let r = c.get(p.proxy_addr, "/", Some(&v)).await;
        assert_eq!(r.status, 200, "cookie {v:?}");
        assert_eq!(
            r.seen("x-tether-affinity").as_deref(),
            Some("new"),
            "cookie {v:?}"
        );
        let new_session = r.seen("x-tether-session").unwrap();
        assert_ne!(new_session, session, "cookie {v:?} kept the session");
        assert!(r.cookie("tether").is_some(), "a new session gets a cookie");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn unknown_key_is_a_new_session_and_second_key_is_reissued_under_the_first() {
    let pods = three_pods().await;
    let c = TestClient::new();
    let old = proxy(&config(&refs(&pods), &[("k2", KEY_2)], "")).await;
    let minted = c.get(old.proxy_addr, "/", None).await;
    let value = minted.cookie("tether").unwrap();
    let session = minted.seen("x-tether-session").unwrap();

    // k1 first, k2 still verifying: accepted, same pod and session, re-issued under k1.
    let keys = [("k1", KEY_1), ("k2", KEY_2)];
    let rotated = proxy(&config(&refs(&pods), &keys, "")).await;
    let r = c.get(rotated.proxy_addr, "/", Some(&value)).await;
    assert_eq!(r.pod(), minted.pod());
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    assert_eq!(
        r.seen("x-tether-session").as_deref(),
        Some(session.as_str())
    );
    let reissued = r.cookie("tether").expect("re-issued under the first key");
    let v = cookie::decode(&ring(&keys), &reissued).unwrap();
    assert_eq!(v.key_index, 0);
    assert_eq!(v.claims.session.to_hex().as_str(), session);
    // The re-issued cookie is sticky without another Set-Cookie.
    let again = c.get(rotated.proxy_addr, "/", Some(&reissued)).await;
    assert_eq!(again.pod(), minted.pod());
    assert!(again.set_cookies().is_empty());

    // A proxy that only knows k1 does not trust the k2 cookie.
    let other = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let r = c.get(other.proxy_addr, "/", Some(&value)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("new"));
    assert_ne!(r.seen("x-tether-session").unwrap(), session);
    for p in [old, rotated, other] {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn connect_failure_retries_a_post_with_its_body_on_the_next_pod() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let value = first.cookie("tether").unwrap();
    let pinned = first.pod();
    pods.iter()
        .find(|b| b.name == pinned)
        .unwrap()
        .stop_and_wait()
        .await;

    let req = http::Request::post(format!("http://{}/orders", p.proxy_addr))
        .header("cookie", format!("tether={value}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"qty\":3}",
        )))
        .unwrap();
    let r = c.send(req).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.pod(), pinned);
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body"], "{\"qty\":3}");
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    p.shutdown().await;
}

#[tokio::test]
async fn new_session_on_a_dead_owner_lands_elsewhere_and_its_cookie_names_the_survivor() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    pods[0].stop_and_wait().await;
    let c = TestClient::new();
    for _ in 0..30 {
        let r = c.get(p.proxy_addr, "/", None).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.pod(), "pod-a");
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("new"));
        let value = r.cookie("tether").unwrap();
        let again = c.get(p.proxy_addr, "/", Some(&value)).await;
        assert_eq!(again.pod(), r.pod());
        assert_eq!(again.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }
    p.shutdown().await;
}

#[tokio::test]
async fn two_replicas_agree_on_placement_and_on_failover_targets() {
    let pods = vec![
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
        TestBackend::echo("pod-d").await,
    ];
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    let a = proxy(&cfg).await;
    let b = proxy(&cfg).await;
    let c = TestClient::new();

    let mut sessions = Vec::new();
    for _ in 0..1000 {
        let r = c.get(a.proxy_addr, "/", None).await;
        sessions.push((r.cookie("tether").unwrap(), r.pod()));
    }
    for (value, pod) in &sessions {
        let r = c.get(b.proxy_addr, "/", Some(value)).await;
        assert_eq!(
            &r.pod(),
            pod,
            "replica b routed a cookie of replica a elsewhere"
        );
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }

    // pod-c leaves the backend on both replicas (as discovery would report it).
    for p in [&a, &b] {
        let backend = p.proxy.backend("app").unwrap();
        let remaining: Vec<_> = pods
            .iter()
            .filter(|x| x.name != "pod-c")
            .map(|x| tether::backend::EndpointSpec {
                identity: x.name.as_str().into(),
                address: x.addr,
                weight: 1,
                state: tether::backend::EndpointState::Ready,
                h2c: false,
            })
            .collect();
        backend.publish(remaining);
    }
    let mut moved = 0;
    for (value, pod) in &sessions {
        let ra = c.get(a.proxy_addr, "/", Some(value)).await;
        let rb = c.get(b.proxy_addr, "/", Some(value)).await;
        assert_eq!(ra.pod(), rb.pod(), "replicas disagree on a failover target");
        if pod == "pod-c" {
            moved += 1;
            assert_ne!(ra.pod(), "pod-c");
            assert_eq!(ra.seen("x-tether-affinity").as_deref(), Some("failover"));
            assert_eq!(
                ra.seen("x-tether-previous-endpoint").as_deref(),
                Some("pod-c")
            );
        } else {
            assert_eq!(&ra.pod(), pod, "a session of another pod moved");
            assert_eq!(ra.seen("x-tether-affinity").as_deref(), Some("sticky"));
        }
    }
    assert!(moved > 150, "pod-c held only {moved} of 1000 sessions");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_new_sessions_spread_within_ten_percent_over_four_pods() {
    let pods = vec![
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
        TestBackend::echo("pod-d").await,
    ];
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let addr = p.proxy_addr;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let c = TestClient::new();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..1250 {
                let r = c.get(addr, "/", None).await;
                assert_eq!(r.status, 200);
                *counts
                    .entry(r.headers["x-pod"].to_str().unwrap().to_string())
                    .or_default() += 1;
            }
            counts
        }));
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    assert_eq!(total.len(), 4, "{total:?}");
    for (pod, n) in &total {
        assert!(
            (2250..=2750).contains(n),
            "{pod} got {n} of 10000: {total:?}"
        );
    }
    p.shutdown().await;
}

#[tokio::test]
async fn client_supplied_tether_headers_never_reach_the_backend() {
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let req = http::Request::get(format!("http://{}/", p.proxy_addr))
        .header("x-tether-session", "spoofed-session")
        .header("X-Tether-Affinity", "sticky")
        .header("x-tether-previous-endpoint", "10.0.0.9:8080")
        .header("x-tether-anything", "1")
        .body(Default::default())
        .unwrap();
    let r = TestClient::new().send(req).await;
    assert_eq!(r.status, 200);
    let headers = r.json()["headers"].clone();
    assert_ne!(headers["x-tether-session"], "spoofed-session");
    assert_eq!(headers["x-tether-session"].as_str().unwrap().len(), 32);
    assert_eq!(headers["x-tether-affinity"], "new");
    assert!(headers.get("x-tether-previous-endpoint").is_none());
    assert!(headers.get("x-tether-anything").is_none());
    p.shutdown().await;
}
