//! The sticky data path, end to end: real proxy, real backends, real sockets.

mod support;

use std::collections::HashMap;

use base64::Engine;
use support::transport::{
    arrivals, post_to_localhost, to_localhost, with_cookie, Front, Transport,
};
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
    let cfg = config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "[backend.affinity]\ncookie = \"tether\"\npath = \"/\"\n",
    );
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        // One keep-alive connection (one HTTP/2 connection), as a browser keeps.
        let mut conn = front.conn();
        let what = format!("{t:?}");

        let first = conn.send(with_cookie(t, "/cart", None, false)).await;
        assert_eq!(first.status, 200, "{what}");
        assert_eq!(
            first.set_cookies().len(),
            1,
            "{what}: {:?}",
            first.set_cookies()
        );
        let set = ::cookie::Cookie::parse(first.set_cookies()[0].clone()).unwrap();
        assert_eq!(set.name(), "tether", "{what}");
        assert_eq!(set.path(), Some("/"), "{what}");
        assert_eq!(set.http_only(), Some(true), "{what}");
        assert_eq!(set.same_site(), Some(::cookie::SameSite::Lax), "{what}");
        assert!(
            set.max_age().is_none() && set.expires().is_none(),
            "{what}: session cookie"
        );
        assert_eq!(
            first.seen("x-tether-affinity").as_deref(),
            Some("new"),
            "{what}"
        );
        let session = first.seen("x-tether-session").unwrap();
        assert_eq!(session.len(), 32, "{what}");
        let pinned = first.pod();
        let value = set.value().to_string();

        for _ in 0..50 {
            let r = conn
                .send(with_cookie(t, "/cart", Some(&value), false))
                .await;
            assert_eq!(r.status, 200, "{what}");
            assert_eq!(r.pod(), pinned, "{what}");
            r.assert_told("sticky", session.as_str(), &what);
            assert!(
                r.set_cookies().is_empty(),
                "{what}: sticky responses set no cookie"
            );
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn cookie_attributes_follow_the_config() {
    let pods = three_pods().await;
    let cfg = config(
        &refs(&pods),
        &[("k1", KEY_1)],
        "[backend.affinity]\ncookie = \"sid\"\npath = \"/app\"\ndomain = \"example.com\"\nsecure = true\nsame_site = \"strict\"\nmax_age = \"2h\"\n",
    );
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        let what = format!("{t:?}");
        let r = front.send(to_localhost(t, "/", &[], false)).await;
        assert_eq!(r.set_cookies().len(), 1, "{what}: {:?}", r.set_cookies());
        let set = ::cookie::Cookie::parse(r.set_cookies()[0].clone()).unwrap();
        assert_eq!(set.name(), "sid", "{what}");
        assert_eq!(set.path(), Some("/app"), "{what}");
        assert_eq!(set.domain(), Some("example.com"), "{what}");
        assert_eq!(set.secure(), Some(true), "{what}");
        assert_eq!(set.same_site(), Some(::cookie::SameSite::Strict), "{what}");
        assert_eq!(
            set.max_age().map(|d| d.whole_seconds()),
            Some(7200),
            "{what}"
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_cookie_is_secure_by_default_exactly_when_the_listener_is_tls() {
    // A session served over TLS must not have its cookie sent in clear text later.
    let pods = three_pods().await;
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        let r = front.send(to_localhost(t, "/", &[], false)).await;
        let set = ::cookie::Cookie::parse(r.set_cookies()[0].clone()).unwrap();
        let tls = matches!(t, Transport::H1Tls | Transport::H2Tls);
        assert_eq!(set.secure().unwrap_or(false), tls, "{t:?}: {set}");
        front.proxy.shutdown().await;
    }
}

/// What a cookie holds does not depend on how the request arrived: plain HTTP/1.1 only.
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
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        // The session is minted on a connection of its own: cookieless requests on one
        // HTTP/2 connection share a session (README, Protocols), and this is about what
        // a bad cookie gets, not about that.
        let first = front.send(with_cookie(t, "/", None, false)).await;
        let value = first.cookie("tether").unwrap();
        // Then every cookie on one connection, each bad one right after the genuine one
        // verified there: a connection remembers the last cookie that verified.
        let mut conn = front.conn();
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
            let what = format!("{t:?}, cookie {v:?}");
            let good = conn.send(with_cookie(t, "/", Some(&value), false)).await;
            assert_eq!(
                good.seen("x-tether-affinity").as_deref(),
                Some("sticky"),
                "{what}"
            );
            let r = conn.send(with_cookie(t, "/", Some(&v), false)).await;
            assert_eq!(r.status, 200, "{what}");
            assert_eq!(
                r.seen("x-tether-affinity").as_deref(),
                Some("new"),
                "{what}"
            );
            let new_session = r.seen("x-tether-session").unwrap();
            assert_ne!(new_session, session, "{what} kept the session");
            assert!(
                r.cookie("tether").is_some(),
                "{what}: a new session gets a cookie"
            );
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn unknown_key_is_a_new_session_and_second_key_is_reissued_under_the_first() {
    let pods = three_pods().await;
    let keys = [("k1", KEY_1), ("k2", KEY_2)];
    for t in Transport::ALL {
        let what = format!("{t:?}");
        let old = Front::start(t, &config(&refs(&pods), &[("k2", KEY_2)], "")).await;
        let minted = old.send(with_cookie(t, "/", None, false)).await;
        let value = minted.cookie("tether").unwrap();
        let session = minted.seen("x-tether-session").unwrap();

        // k1 first, k2 still verifying: accepted, same pod and session, re-issued under
        // k1.
        let rotated = Front::start(t, &config(&refs(&pods), &keys, "")).await;
        let mut conn = rotated.conn();
        let r = conn.send(with_cookie(t, "/", Some(&value), false)).await;
        assert_eq!(r.pod(), minted.pod(), "{what}");
        r.assert_told("sticky", session.as_str(), &what);
        let reissued = r.cookie("tether").expect("re-issued under the first key");
        let v = cookie::decode(&ring(&keys), &reissued).unwrap();
        assert_eq!(v.key_index, 0, "{what}");
        assert_eq!(v.claims.session.to_hex().as_str(), session, "{what}");
        // The re-issued cookie is sticky without another Set-Cookie.
        let again = conn.send(with_cookie(t, "/", Some(&reissued), false)).await;
        assert_eq!(again.pod(), minted.pod(), "{what}");
        assert!(again.set_cookies().is_empty(), "{what}");

        // A proxy that only knows k1 does not trust the k2 cookie.
        let other = Front::start(t, &config(&refs(&pods), &[("k1", KEY_1)], "")).await;
        let r = other.send(with_cookie(t, "/", Some(&value), false)).await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(
            r.seen("x-tether-affinity").as_deref(),
            Some("new"),
            "{what}"
        );
        assert_ne!(r.seen("x-tether-session").unwrap(), session, "{what}");
        for f in [old, rotated, other] {
            f.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn connect_failure_retries_a_post_with_its_body_on_the_next_pod() {
    for upstream in Upstream::ALL {
        for (t, chunked) in arrivals() {
            let what = format!("{t:?}, chunked {chunked}, {upstream:?} upstream");
            let pods = pods_over(&["pod-a", "pod-b", "pod-c"], upstream).await;
            let cfg = config(&refs(&pods), &[("k1", KEY_1)], upstream.protocol());
            let front = Front::start(t, &cfg).await;
            let first = front.send(with_cookie(t, "/", None, false)).await;
            let value = first.cookie("tether").expect(&what);
            let pinned = first.pod();
            pods.iter()
                .find(|b| b.name == pinned)
                .unwrap()
                .stop_and_wait()
                .await;

            let cookie = format!("tether={value}");
            let body = b"{\"qty\":3}";
            let req = post_to_localhost(t, "/orders", &[("cookie", &cookie)], body, chunked);
            let r = front.send(req).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_ne!(r.pod(), pinned, "{what}");
            assert_eq!(r.json()["method"], "POST", "{what}");
            assert_eq!(r.json()["body"], "{\"qty\":3}", "{what}");
            assert_eq!(
                r.seen("x-tether-affinity").as_deref(),
                Some("failover"),
                "{what}"
            );
            front.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn new_session_on_a_dead_owner_lands_elsewhere_and_its_cookie_names_the_survivor() {
    for upstream in Upstream::ALL {
        let pods = pods_over(&["pod-a", "pod-b", "pod-c"], upstream).await;
        let cfg = config(&refs(&pods), &[("k1", KEY_1)], upstream.protocol());
        pods[0].stop_and_wait().await;
        for t in Transport::ALL {
            let what = format!("{t:?}, {upstream:?} upstream");
            let front = Front::start(t, &cfg).await;
            // A connection per new session: cookieless requests on one HTTP/2
            // connection share a session.
            for _ in 0..30 {
                let r = front.send(with_cookie(t, "/", None, false)).await;
                assert_eq!(r.status, 200, "{what}");
                assert_ne!(r.pod(), "pod-a", "{what}");
                assert_eq!(
                    r.seen("x-tether-affinity").as_deref(),
                    Some("new"),
                    "{what}"
                );
                let value = r.cookie("tether").unwrap();
                let again = front.send(with_cookie(t, "/", Some(&value), false)).await;
                assert_eq!(again.pod(), r.pod(), "{what}");
                assert_eq!(
                    again.seen("x-tether-affinity").as_deref(),
                    Some("sticky"),
                    "{what}"
                );
            }
            front.proxy.shutdown().await;
        }
    }
}

/// A client without a cookie jar on one kept-alive connection. Over HTTP/1 each request
/// is a session of its own; over HTTP/2 they share one (README, Protocols: so that
/// concurrent first requests land on one endpoint). Either way a session lives on one
/// pod, and every cookie it is given pins it there.
#[tokio::test]
async fn cookieless_requests_on_one_connection_keep_each_session_on_one_pod() {
    for t in Transport::ALL {
        let pods = three_pods().await;
        let front = Front::start(t, &config(&refs(&pods), &[("k1", KEY_1)], "")).await;
        let mut conn = front.conn();
        let mut served: HashMap<String, String> = HashMap::new();
        let mut cookies = Vec::new();
        for i in 0..5 {
            let r = conn.send(with_cookie(t, "/", None, false)).await;
            let what = format!("{t:?}, request {i}");
            assert_eq!(r.status, 200, "{what}");
            let session = r.seen("x-tether-session").unwrap();
            let pod = served.entry(session.clone()).or_insert_with(|| r.pod());
            assert_eq!(*pod, r.pod(), "{what}: session {session} on two pods");
            cookies.push((r.cookie("tether").expect(&what), r.pod()));
        }
        for (cookie, pod) in cookies {
            let r = front.send(with_cookie(t, "/", Some(&cookie), false)).await;
            assert_eq!(r.pod(), pod, "{t:?}: a cookie pins its session elsewhere");
        }
        front.proxy.shutdown().await;
    }
}

/// Placement is a property of the proxy, not of the client's protocol: plain HTTP/1.1.
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

/// Spread is a property of placement, not of the client's protocol: plain HTTP/1.1.
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
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        let what = format!("{t:?}");
        let fields = [
            ("x-tether-session", "spoofed-session"),
            ("X-Tether-Affinity", "sticky"),
            ("x-tether-previous-endpoint", "10.0.0.9:8080"),
            ("x-tether-anything", "1"),
        ];
        let r = front.send(to_localhost(t, "/", &fields, false)).await;
        assert_eq!(r.status, 200, "{what}");
        let headers = r.json()["headers"].clone();
        assert_ne!(headers["x-tether-session"], "spoofed-session", "{what}");
        assert_eq!(
            headers["x-tether-session"].as_str().unwrap().len(),
            32,
            "{what}"
        );
        assert_eq!(headers["x-tether-affinity"], "new", "{what}");
        assert!(
            headers.get("x-tether-previous-endpoint").is_none(),
            "{what}"
        );
        assert!(headers.get("x-tether-anything").is_none(), "{what}");
        front.proxy.shutdown().await;
    }
}
