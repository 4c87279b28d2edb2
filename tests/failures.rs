//! Failure handling under load: retries within a budget, outlier ejection, shutdown.

mod support;

use std::sync::atomic::Ordering;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pinned_pod_under_load_fails_no_idempotent_request() {
    let pods = pods(&["pod-a", "pod-b", "pod-c"]).await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let cookie = first.cookie("tether").unwrap();
    let pinned = pods.iter().find(|b| b.name == first.pod()).unwrap().clone();

    let addr = p.proxy_addr;
    let mut load = Vec::new();
    for _ in 0..4 {
        let (c, cookie) = (TestClient::new(), cookie.clone());
        load.push(tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..300 {
                if c.get(addr, "/", Some(&cookie)).await.status != 200 {
                    failures += 1;
                }
            }
            failures
        }));
    }
    // Kill it while the load runs.
    while pinned.hits.load(Ordering::SeqCst) < 100 {
        tokio::task::yield_now().await;
    }
    pinned.stop();
    let mut failed = 0;
    for t in load {
        failed += t.await.unwrap();
    }
    assert_eq!(
        failed, 0,
        "idempotent requests failed while the pinned pod died"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_pod_answering_500s_is_ejected_and_its_sessions_fail_over() {
    let broken = TestBackend::with_handler("pod-x", |_req| async move {
        http::Response::builder()
            .status(500)
            .header("x-pod", "pod-x")
            .body(full("boom"))
            .unwrap()
    })
    .await;
    let good = pods(&["pod-a", "pod-b"]).await;
    let all = vec![&*good[0], &*good[1], &*broken];
    let p = proxy(&config(
        &all,
        &[("k1", KEY_1)],
        "outlier_failures = 3\noutlier_base = \"30s\"\n",
    ))
    .await;
    let c = TestClient::new();
    // New sessions until three have hit the broken pod.
    let mut pinned_to_x = None;
    let mut fives = 0;
    for _ in 0..300 {
        let r = c.get(p.proxy_addr, "/", None).await;
        if r.status == 500 {
            fives += 1;
            pinned_to_x = r.cookie("tether");
            if fives == 3 {
                break;
            }
        }
    }
    assert_eq!(fives, 3);
    // Ejected now: no new session lands there, and its sessions fail over.
    for _ in 0..100 {
        assert_eq!(c.get(p.proxy_addr, "/", None).await.status, 200);
    }
    let r = c.get(p.proxy_addr, "/", pinned_to_x.as_deref()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    assert_eq!(
        r.seen("x-tether-previous-endpoint").as_deref(),
        Some("pod-x")
    );
    let debug = c.get(p.admin_addr, "/debug/backends", None).await.json();
    let x = debug["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == "pod-x")
        .unwrap()
        .clone();
    assert_eq!(x["down"], true);
    assert_eq!(x["last_error"], "5xx response");
    p.shutdown().await;
}

#[tokio::test]
async fn at_most_half_of_a_backend_is_ejected() {
    let mk = |name: &'static str| async move {
        TestBackend::with_handler(name, move |_req| async move {
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
        TestBackend::echo("pod-a").await,
    );
    let p = proxy(&config(&[&x, &y, &ok], &[], "outlier_failures = 1\n")).await;
    let c = TestClient::new();
    for _ in 0..200 {
        c.get(p.proxy_addr, "/", None).await;
    }
    let debug = c.get(p.admin_addr, "/debug/backends", None).await.json();
    let down = debug["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["down"] == true)
        .count();
    assert_eq!(down, 1, "{debug}");
    p.shutdown().await;
}
