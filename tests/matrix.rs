//! The behaviours a user sees, the same however a request arrives: each test runs on
//! HTTP/1.1 (tether's own codec, bodyless and with a chunked body, which takes the
//! streamed-body path), HTTP/1.1 over TLS (both ways), h2c and HTTP/2 over TLS.
//! Stickiness, failover, retries, limits and the statuses tether writes itself.

mod support;

use std::sync::atomic::Ordering;

use support::transport::{arrivals, with_cookie, Front, Transport};
use support::*;

#[tokio::test]
async fn a_first_request_sets_one_cookie_and_twenty_follow_ups_stick() {
    let pods = three_pods().await;
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "");
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}");
            let first = front.send(with_cookie(transport, "/", None, chunked)).await;
            assert_eq!(first.status, 200, "{what}");
            assert_eq!(first.set_cookies().len(), 1, "{what}");
            let cookie = first.cookie("tether").expect(&what);
            let session = first.seen("x-tether-session").expect(&what);
            assert_eq!(first.seen("x-tether-affinity").as_deref(), Some("new"));
            for _ in 0..20 {
                let r = front
                    .send(with_cookie(transport, "/", Some(&cookie), chunked))
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
        for upstream in Upstream::ALL {
            failover(transport, chunked, upstream).await;
        }
    }
}

/// One arrival of the failover test, against `upstream` pods.
async fn failover(transport: Transport, chunked: bool, upstream: Upstream) {
    let what = format!("{transport:?}, chunked {chunked}, {upstream:?} upstream");
    let pods = pods_over(&["pod-a", "pod-b", "pod-c"], upstream).await;
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], upstream.protocol());
    let front = Front::start(transport, &cfg).await;
    let first = front.send(with_cookie(transport, "/", None, chunked)).await;
    let cookie = first.cookie("tether").expect(&what);
    let session = first.seen("x-tether-session").unwrap();
    let pinned = first.pod();
    pods.iter()
        .find(|b| b.name == pinned)
        .unwrap()
        .stop_and_wait()
        .await;

    let r = front
        .send(with_cookie(transport, "/", Some(&cookie), chunked))
        .await;
    assert_eq!(r.status, 200, "{what}");
    assert_ne!(r.pod(), pinned, "{what}");
    r.assert_told("failover", session.as_str(), &what);
    assert_eq!(
        r.seen("x-tether-previous-endpoint").as_deref(),
        Some(pinned.as_str()),
        "{what}"
    );
    let again = r.cookie("tether").expect("failover re-issues the cookie");
    assert_ne!(again, cookie, "{what}");
    for _ in 0..10 {
        let r2 = front
            .send(with_cookie(transport, "/", Some(&again), chunked))
            .await;
        assert_eq!(r2.pod(), r.pod(), "{what}");
        r2.assert_told("sticky", session.as_str(), &what);
        assert!(r2.set_cookies().is_empty(), "{what}");
    }
    front.proxy.shutdown().await;
}

#[tokio::test]
async fn a_503_is_retried_elsewhere_for_a_get_and_answered_as_is_for_a_body() {
    for upstream in Upstream::ALL {
        a_503_is_retried(upstream).await;
    }
}

/// The 503 test over every arrival, against `upstream` pods.
async fn a_503_is_retried(upstream: Upstream) {
    let flaky = TestBackend::with_handler_over("pod-x", upstream, |_req| async move {
        http::Response::builder()
            .status(503)
            .header("x-pod", "pod-x")
            .body(full("busy"))
            .unwrap()
    })
    .await;
    let ok = TestBackend::echo_over("pod-a", upstream).await;
    let extra = format!(
        "{}retry_on = [\"503\"]\noutlier_failures = 1000\n",
        upstream.protocol()
    );
    let cfg = config(&[&flaky, &ok], &[("k1", KEY_1)], &extra);
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        for (transport, chunked) in arrivals().into_iter().filter(|a| a.0 == t) {
            let what = format!("{transport:?}, chunked {chunked}, {upstream:?} upstream");
            let before = flaky.hits.load(Ordering::SeqCst);
            let mut fives = 0;
            for _ in 0..30 {
                let r = front.send(with_cookie(transport, "/", None, chunked)).await;
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
    for upstream in Upstream::ALL {
        statuses(upstream).await;
    }
}

/// The statuses test over every arrival, with `upstream` pods.
async fn statuses(upstream: Upstream) {
    let slow = TestBackend::with_handler_over("slow", upstream, |_req| async move {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        http::Response::new(full("late"))
    })
    .await;
    let protocol = upstream.protocol();
    let cases = [
        // No endpoint at all (the list is emptied once the proxy runs).
        (
            config(&[&slow], &[], protocol),
            503,
            "no endpoint available\n",
        ),
        // Every endpoint refuses.
        (
            config_for("127.0.0.1:1".parse().unwrap(), protocol),
            502,
            "upstream connect failed\n",
        ),
        // The response head does not come in time.
        (
            config(
                &[&slow],
                &[],
                &format!("{protocol}response_timeout = \"300ms\""),
            ),
            504,
            "upstream timeout\n",
        ),
        // A body over max_body_bytes.
        (
            config(&[&slow], &[], protocol).replacen(
                "[server]\n",
                "[server]\nmax_body_bytes = 1\n",
                1,
            ),
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
                let what =
                    format!("{transport:?}, chunked {chunked}, {upstream:?} upstream, {status}");
                let mut req = with_cookie(transport, "/", None, chunked);
                if status == 413 && !chunked {
                    // Bodyless requests are within any limit: send a small body.
                    *req.body_mut() = bytes::Bytes::from_static(b"too much");
                    *req.method_mut() = http::Method::POST;
                }
                let r = front.send(req).await;
                assert_eq!(r.status, status, "{what}: {}", r.text());
                assert_eq!(r.text(), text, "{what}");
                assert!(r.set_cookies().is_empty(), "{what}: no session was served");
            }
            front.proxy.shutdown().await;
        }
    }
}
