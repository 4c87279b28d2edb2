//! The behaviours a user sees, the same however a request arrives: each test runs on
//! HTTP/1.1 (on the fast path and, with a chunked body, through hyper), HTTP/1.1 over
//! TLS (both ways), h2c and HTTP/2 over TLS. Stickiness, failover, retries, limits and
//! the statuses tether writes itself.

mod support;

use std::sync::atomic::Ordering;

use support::transport::{arrivals, to_localhost, Front, Transport};
use support::*;

/// A request for `path` carrying the affinity cookie `cookie`, as `transport` sends it.
fn get(
    transport: Transport,
    chunked: bool,
    path: &str,
    cookie: Option<&str>,
) -> http::Request<bytes::Bytes> {
    match cookie.map(|c| format!("tether={c}")) {
        Some(c) => to_localhost(transport, path, &[("cookie", &c)], chunked),
        None => to_localhost(transport, path, &[], chunked),
    }
}

#[tokio::test]
async fn a_first_request_sets_one_cookie_and_twenty_follow_ups_stick() {
    let pods = three_pods().await;
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}");
            let first = front.send(get(transport, chunked, "/", None)).await;
            assert_eq!(first.status, 200, "{what}");
            assert_eq!(first.set_cookies().len(), 1, "{what}");
            let cookie = first.cookie("tether").expect(&what);
            let session = first.seen("x-tether-session").expect(&what);
            assert_eq!(first.seen("x-tether-affinity").as_deref(), Some("new"));
            for _ in 0..20 {
                let r = front
                    .send(get(transport, chunked, "/", Some(&cookie)))
                    .await;
                assert_eq!(r.pod(), first.pod(), "{what}");
                assert_eq!(
                    r.seen("x-tether-affinity").as_deref(),
                    Some("sticky"),
                    "{what}"
                );
                assert_eq!(
                    r.seen("x-tether-session").as_deref(),
                    Some(session.as_str())
                );
                assert!(r.set_cookies().is_empty(), "{what}");
            }
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn failover_keeps_the_session_id_and_names_the_pod_it_came_from() {
    for (transport, chunked) in arrivals() {
        let what = format!("{transport:?}, chunked {chunked}");
        let pods = three_pods().await;
        let front = Front::start(transport, &config(&refs(&pods), &[("k1", KEY_1)], "")).await;
        let first = front.send(get(transport, chunked, "/", None)).await;
        let cookie = first.cookie("tether").expect(&what);
        let session = first.seen("x-tether-session").unwrap();
        let pinned = first.pod();
        pods.iter()
            .find(|b| b.name == pinned)
            .unwrap()
            .stop_and_wait()
            .await;

        let r = front
            .send(get(transport, chunked, "/", Some(&cookie)))
            .await;
        assert_eq!(r.status, 200, "{what}");
        assert_ne!(r.pod(), pinned, "{what}");
        assert_eq!(
            r.seen("x-tether-affinity").as_deref(),
            Some("failover"),
            "{what}"
        );
        assert_eq!(
            r.seen("x-tether-session").as_deref(),
            Some(session.as_str()),
            "{what}"
        );
        assert_eq!(
            r.seen("x-tether-previous-endpoint").as_deref(),
            Some(pinned.as_str())
        );
        let again = r.cookie("tether").expect("failover re-issues the cookie");
        assert_ne!(again, cookie, "{what}");
        for _ in 0..10 {
            let r2 = front.send(get(transport, chunked, "/", Some(&again))).await;
            assert_eq!(r2.pod(), r.pod(), "{what}");
            assert_eq!(r2.seen("x-tether-affinity").as_deref(), Some("sticky"));
            assert_eq!(
                r2.seen("x-tether-session").as_deref(),
                Some(session.as_str())
            );
            assert!(r2.set_cookies().is_empty(), "{what}");
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_503_is_retried_elsewhere_for_a_get_and_answered_as_is_for_a_body() {
    let flaky = TestBackend::with_handler("pod-x", |_req| async move {
        http::Response::builder()
            .status(503)
            .header("x-pod", "pod-x")
            .body(full("busy"))
            .unwrap()
    })
    .await;
    let ok = TestBackend::echo("pod-a").await;
    let cfg = config(
        &[&flaky, &ok],
        &[("k1", KEY_1)],
        "retry_on = [\"503\"]\noutlier_failures = 1000\n",
    );
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}");
            let before = flaky.hits.load(Ordering::SeqCst);
            let mut fives = 0;
            for _ in 0..30 {
                let r = front.send(get(transport, chunked, "/", None)).await;
                // A bodyless GET on pod-x is retried on pod-a; a body is never sent
                // twice, so the chunked POST gets pod-x's 503.
                match (chunked, r.status.as_u16()) {
                    (false, 200) => assert_eq!(r.pod(), "pod-a", "{what}"),
                    (true, 200) => {}
                    (true, 503) => fives += 1,
                    (_, s) => panic!("{what}: {s}"),
                }
            }
            assert!(
                flaky.hits.load(Ordering::SeqCst) > before,
                "{what}: pod-x took some"
            );
            assert_eq!(chunked, fives > 0, "{what}: {fives} answered 503");
        }
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_statuses_tether_writes_itself_are_the_same_on_every_arrival() {
    let slow = TestBackend::with_handler("slow", |_req| async move {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        http::Response::new(full("late"))
    })
    .await;
    let cases = [
        // No endpoint at all (the list is emptied once the proxy runs).
        (config(&[&slow], &[], ""), 503, "no endpoint available\n"),
        // Every endpoint refuses.
        (
            config_for("127.0.0.1:1".parse().unwrap(), ""),
            502,
            "upstream connect failed\n",
        ),
        // The response head does not come in time.
        (
            config(&[&slow], &[], "response_timeout = \"300ms\""),
            504,
            "upstream timeout\n",
        ),
        // A body over max_body_bytes.
        (
            config(&[&slow], &[], "").replacen("[server]\n", "[server]\nmax_body_bytes = 1\n", 1),
            413,
            "request body too large\n",
        ),
    ];
    for (cfg, status, text) in cases {
        for t in Transport::ALL {
            let front = Front::start(t, &cfg).await;
            if status == 503 {
                front.proxy.proxy.backend("app").unwrap().publish(vec![]);
            }
            for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
                let what = format!("{transport:?}, chunked {chunked}, {status}");
                let mut req = get(transport, chunked, "/", None);
                if status == 413 && !chunked {
                    // Bodyless requests are within any limit: send a small body.
                    *req.body_mut() = bytes::Bytes::from_static(b"too much");
                    *req.method_mut() = http::Method::POST;
                }
                let r = front.send(req).await;
                assert_eq!(r.status, status, "{what}: {}", r.text());
                assert_eq!(r.text(), text, "{what}");
            }
            front.proxy.shutdown().await;
        }
    }
}
