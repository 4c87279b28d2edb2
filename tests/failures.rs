//! Failure handling under load: retries within a budget, outlier ejection, shutdown; on
//! every client transport, against HTTP/1.1 and h2c pods.

mod support;

use std::sync::atomic::Ordering;

use support::transport::{with_cookie, Front, Transport};
use support::*;

/// Requests per load task, four tasks per transport and upstream protocol.
const LOAD: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pinned_pod_under_load_fails_no_idempotent_request() {
    for upstream in Upstream::ALL {
        for t in Transport::ALL {
            let what = format!("{t:?}, {upstream:?} upstream");
            let pods = pods_over(&["pod-a", "pod-b", "pod-c"], upstream).await;
            let cfg = config(&refs(&pods), &[("k1", KEY_1)], upstream.protocol());
            let front = Front::start(t, &cfg).await;
            let first = front.send(with_cookie(t, "/", None, false)).await;
            let cookie = first.cookie("tether").expect(&what);
            let pinned = pods.iter().find(|b| b.name == first.pod()).unwrap().clone();

            let mut load = Vec::new();
            for _ in 0..4 {
                // Each task on its own kept-alive connection.
                let (mut conn, cookie) = (front.conn(), cookie.clone());
                load.push(tokio::spawn(async move {
                    let mut failures = Vec::new();
                    for _ in 0..LOAD {
                        let r = conn.send(with_cookie(t, "/", Some(&cookie), false)).await;
                        if r.status != 200 {
                            failures.push((r.status, r.text()));
                        }
                    }
                    failures
                }));
            }
            // Kill it while the load runs.
            while pinned.hits.load(Ordering::SeqCst) < LOAD as u64 / 3 {
                tokio::task::yield_now().await;
            }
            pinned.stop();
            let mut failed = Vec::new();
            for task in load {
                failed.extend(task.await.unwrap());
            }
            assert!(
                pinned.hits.load(Ordering::SeqCst) < 4 * LOAD as u64,
                "{what}: the pod died before the load ended"
            );
            assert_eq!(
                failed,
                vec![],
                "{what}: idempotent requests failed while the pinned pod died"
            );
            front.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn an_h2c_pod_dying_between_its_head_and_its_body_fails_no_idempotent_request() {
    let (dying, heads) = h2c_pod_that_dies_after_its_head().await;
    let good = TestBackend::echo_over("pod-a", Upstream::H2c).await;
    let both = format!(
        "{}, {{ name = \"pod-x\", address = \"{dying}\" }}",
        good.entry()
    );
    let cfg = config(&[&good], &[], Upstream::H2c.protocol()).replace(&good.entry(), &both);
    for t in Transport::ALL {
        let front = Front::start(t, &cfg).await;
        // New sessions until one was placed on the dying pod: its head came, its body
        // never did, and nothing of it reached the client, so the GET goes to pod-a.
        let before = heads.load(Ordering::SeqCst);
        for _ in 0..100 {
            let r = front.send(with_cookie(t, "/", None, false)).await;
            assert_eq!((r.status.as_u16(), r.pod()), (200, "pod-a".into()), "{t:?}");
            if heads.load(Ordering::SeqCst) > before {
                break;
            }
        }
        assert!(
            heads.load(Ordering::SeqCst) > before,
            "{t:?}: never placed on pod-x"
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_pod_answering_500s_is_ejected_and_its_sessions_fail_over() {
    for upstream in Upstream::ALL {
        for t in Transport::ALL {
            let what = format!("{t:?}, {upstream:?} upstream");
            let broken = TestBackend::with_handler_over("pod-x", upstream, |_req| async move {
                http::Response::builder()
                    .status(500)
                    .header("x-pod", "pod-x")
                    .body(full("boom"))
                    .unwrap()
            })
            .await;
            let good = pods_over(&["pod-a", "pod-b"], upstream).await;
            let all = vec![&*good[0], &*good[1], &*broken];
            let extra = format!(
                "{}outlier_failures = 3\noutlier_base = \"30s\"\n",
                upstream.protocol()
            );
            let front = Front::start(t, &config(&all, &[("k1", KEY_1)], &extra)).await;
            // New sessions (a connection each: cookieless requests on one HTTP/2
            // connection share a session) until three have hit the broken pod.
            let mut pinned_to_x = None;
            let mut fives = 0;
            for _ in 0..300 {
                let r = front.send(with_cookie(t, "/", None, false)).await;
                if r.status == 500 {
                    fives += 1;
                    pinned_to_x = r.cookie("tether");
                    if fives == 3 {
                        break;
                    }
                }
            }
            assert_eq!(fives, 3, "{what}");
            // Ejected now: no new session lands there, and its sessions fail over.
            for _ in 0..100 {
                let r = front.send(with_cookie(t, "/", None, false)).await;
                assert_eq!(r.status, 200, "{what}");
            }
            let r = front
                .send(with_cookie(t, "/", pinned_to_x.as_deref(), false))
                .await;
            assert_eq!(r.status, 200, "{what}");
            assert_eq!(
                r.seen("x-tether-affinity").as_deref(),
                Some("failover"),
                "{what}"
            );
            assert_eq!(
                r.seen("x-tether-previous-endpoint").as_deref(),
                Some("pod-x"),
                "{what}"
            );
            let debug = TestClient::new()
                .get(front.proxy.admin_addr, "/debug/backends", None)
                .await
                .json();
            let x = debug["backends"][0]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["identity"] == "pod-x")
                .unwrap()
                .clone();
            assert_eq!(x["down"], true, "{what}");
            assert_eq!(x["last_error"], "5xx response", "{what}");
            front.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn at_most_half_of_a_backend_is_ejected() {
    for upstream in Upstream::ALL {
        let mk = |name: &'static str| async move {
            TestBackend::with_handler_over(name, upstream, move |_req| async move {
                http::Response::builder()
                    .status(503)
                    .header("x-pod", name)
                    .body(full("down"))
                    .unwrap()
            })
            .await
        };
        let (x, y, ok) = (
            mk("pod-x").await,
            mk("pod-y").await,
            TestBackend::echo_over("pod-a", upstream).await,
        );
        let extra = format!("{}outlier_failures = 1\n", upstream.protocol());
        let cfg = config(&[&x, &y, &ok], &[], &extra);
        for t in Transport::ALL {
            let what = format!("{t:?}, {upstream:?} upstream");
            let front = Front::start(t, &cfg).await;
            // New sessions, a connection each (see above).
            for _ in 0..200 {
                front.send(with_cookie(t, "/", None, false)).await;
            }
            let debug = TestClient::new()
                .get(front.proxy.admin_addr, "/debug/backends", None)
                .await
                .json();
            let down = debug["backends"][0]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["down"] == true)
                .count();
            assert_eq!(down, 1, "{what}: {debug}");
            front.proxy.shutdown().await;
        }
    }
}
