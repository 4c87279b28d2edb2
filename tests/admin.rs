//! The admin API over real sockets: operator drains, the backend view and the history
//! the dashboard charts; and the rebalancing headers a backend receives.

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use support::*;
use tether::history::{INTERVAL, WINDOW};

async fn post(c: &TestClient, addr: std::net::SocketAddr, path: &str) -> Reply {
    c.send(
        http::Request::post(format!("http://{addr}{path}"))
            .body(Default::default())
            .unwrap(),
    )
    .await
}

fn endpoint<'a>(debug: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    debug["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == id)
        .unwrap()
}

#[tokio::test]
async fn operators_drain_and_undrain_endpoints_and_see_them_in_debug_backends() {
    let pods: Vec<Arc<TestBackend>> = vec![
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let refs: Vec<&TestBackend> = pods.iter().map(|p| &**p).collect();
    let p = proxy(&config(&refs, &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    let mut on_b = None;
    for _ in 0..200 {
        let r = c.get(p.proxy_addr, "/", None).await;
        if r.pod() == "pod-b" {
            on_b = r.cookie("tether");
            break;
        }
    }
    let on_b = on_b.expect("a session on pod-b");

    let r = post(
        &c,
        p.admin_addr,
        "/admin/backends/app/endpoints/pod-b/drain",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let debug = c.get(p.admin_addr, "/debug/backends", None).await.json();
    let b = endpoint(&debug, "pod-b");
    assert_eq!(b["state"], "draining");
    assert_eq!(b["admin_drained"], true);
    assert_eq!(b["ring_share"], 0.0);
    assert_eq!(endpoint(&debug, "pod-a")["state"], "ready");
    assert!(debug["backends"][0]["live_sessions"].as_u64().unwrap() >= 1);
    assert!(endpoint(&debug, "pod-b")["live_sessions"].as_u64().unwrap() >= 1);
    assert_eq!(endpoint(&debug, "pod-a")["weight"], 1);

    for _ in 0..100 {
        assert_ne!(c.get(p.proxy_addr, "/", None).await.pod(), "pod-b");
    }
    let r = c.get(p.proxy_addr, "/", Some(&on_b)).await;
    assert_eq!(r.pod(), "pod-b", "a drained endpoint keeps its sessions");

    let r = post(
        &c,
        p.admin_addr,
        "/admin/backends/app/endpoints/pod-b/undrain",
    )
    .await;
    assert_eq!(r.status, 200);
    let debug = c.get(p.admin_addr, "/debug/backends", None).await.json();
    assert_eq!(endpoint(&debug, "pod-b")["state"], "ready");

    assert_eq!(
        post(
            &c,
            p.admin_addr,
            "/admin/backends/app/endpoints/pod-z/drain"
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post(
            &c,
            p.admin_addr,
            "/admin/backends/nope/endpoints/pod-b/drain"
        )
        .await
        .status,
        404
    );
    assert_eq!(
        c.get(
            p.admin_addr,
            "/admin/backends/app/endpoints/pod-b/drain",
            None
        )
        .await
        .status,
        405
    );
    p.shutdown().await;
}

#[tokio::test]
async fn balanced_rebalancing_tells_the_backend_where_the_session_came_from() {
    let pods: Vec<Arc<TestBackend>> = vec![
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
        TestBackend::echo("pod-d").await,
    ];
    let three: Vec<&TestBackend> = pods[..3].iter().map(|p| &**p).collect();
    let p = proxy(&config(
        &three,
        &[("k1", KEY_1)],
        "[backend.affinity]\nrebalance = \"balanced\"\n",
    ))
    .await;
    let c = TestClient::new();
    let mut sessions = Vec::new();
    for _ in 0..200 {
        let r = c.get(p.proxy_addr, "/", None).await;
        sessions.push((
            r.cookie("tether").unwrap(),
            r.pod(),
            r.seen("x-tether-session").unwrap(),
        ));
    }
    // A second later pod-d joins (cookie times have one-second resolution).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    p.proxy.backend("app").unwrap().publish(
        pods.iter()
            .map(|x| tether::backend::EndpointSpec {
                identity: x.name.as_str().into(),
                address: x.addr,
                weight: 1,
                state: tether::backend::EndpointState::Ready,
                h2c: false,
            })
            .collect(),
    );
    let mut moved = 0;
    for (value, pod, session) in &sessions {
        let r = c.get(p.proxy_addr, "/", Some(value)).await;
        assert_eq!(
            r.seen("x-tether-session").as_deref(),
            Some(session.as_str())
        );
        if &r.pod() != pod {
            moved += 1;
            assert_eq!(r.pod(), "pod-d");
            assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("rebalanced"));
            assert_eq!(
                r.seen("x-tether-previous-endpoint").as_deref(),
                Some(pod.as_str())
            );
            assert!(r.cookie("tether").is_some());
        } else {
            assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
        }
    }
    assert!((25..=75).contains(&moved), "{moved} of 200 moved");
    p.shutdown().await;
}

#[tokio::test]
async fn metrics_parse_and_count_new_sticky_failover_and_invalid_outcomes() {
    let pods: Vec<Arc<TestBackend>> = vec![
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let refs: Vec<&TestBackend> = pods.iter().map(|p| &**p).collect();
    let p = proxy(&config(&refs, &[("k1", KEY_1)], "")).await;
    let c = TestClient::new();
    let a = p.admin_addr;
    let outcome =
        |o: &'static str, r: &'static str| [("backend", "app"), ("outcome", o), ("reason", r)];
    assert_eq!(
        metric(&c, a, "tether_affinity_total", &outcome("new", "none")).await,
        0.0
    );

    let first = c.get(p.proxy_addr, "/", None).await;
    let cookie = first.cookie("tether").unwrap();
    for _ in 0..3 {
        c.get(p.proxy_addr, "/", Some(&cookie)).await;
    }
    c.get(p.proxy_addr, "/", Some("garbage")).await;
    assert_eq!(
        metric(&c, a, "tether_affinity_total", &outcome("new", "none")).await,
        2.0
    );
    assert_eq!(
        metric(&c, a, "tether_affinity_total", &outcome("sticky", "none")).await,
        3.0
    );
    assert_eq!(
        metric(
            &c,
            a,
            "tether_affinity_total",
            &outcome("invalid_cookie", "malformed")
        )
        .await,
        1.0
    );

    // The pinned pod leaves the table: a failover with reason endpoint_gone.
    let pinned = first.pod();
    let backend = p.proxy.backend("app").unwrap();
    backend.publish(
        pods.iter()
            .filter(|x| x.name != pinned)
            .map(|x| tether::backend::EndpointSpec {
                identity: x.name.as_str().into(),
                address: x.addr,
                weight: 1,
                state: tether::backend::EndpointState::Ready,
                h2c: false,
            })
            .collect(),
    );
    let r = c.get(p.proxy_addr, "/", Some(&cookie)).await;
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    assert_eq!(
        metric(
            &c,
            a,
            "tether_affinity_total",
            &outcome("failover", "endpoint_gone")
        )
        .await,
        1.0
    );

    let served: f64 = {
        let mut total = 0.0;
        for pod in ["pod-a", "pod-b", "pod-c"] {
            total += metric(
                &c,
                a,
                "tether_requests_total",
                &[("endpoint", pod), ("class", "2xx")],
            )
            .await;
        }
        total
    };
    // The departed pod's series are gone; the survivors served the last request at least.
    assert!(served >= 1.0);
    assert_eq!(
        metric(
            &c,
            a,
            "tether_requests_total",
            &[("endpoint", pinned.as_str())]
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(
            &c,
            a,
            "tether_endpoints",
            &[("backend", "app"), ("state", "ready")]
        )
        .await,
        2.0
    );
    assert!(
        metric(
            &c,
            a,
            "tether_live_sessions",
            &[("endpoint", r.pod().as_str())]
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &c,
            a,
            "tether_discovery_events_total",
            &[("backend", "app")]
        )
        .await
            >= 2.0
    );
    let scrape = c.get(a, "/metrics", None).await.text();
    assert!(
        scrape.contains("tether_request_duration_seconds_bucket"),
        "{scrape}"
    );
    p.shutdown().await;
}

fn history_of<'a>(h: &'a Value, pod: &str) -> Option<&'a Value> {
    h["backends"][0]["pods"]
        .as_array()?
        .iter()
        .find(|p| p["identity"] == pod)
}

fn latest(series: &Value) -> &Value {
    series
        .as_array()
        .and_then(|s| s.last())
        .unwrap_or(&Value::Null)
}

#[tokio::test(start_paused = true)]
async fn the_history_holds_fifteen_minutes_of_request_rate_failovers_and_sessions_per_pod() {
    let pods = three_pods().await;
    // Idle keep-alive connections outlive the test: closed at the very instant the
    // paused clock wakes the test, one would race the client's next request on it.
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "").replacen(
        "[server]\n",
        "[server]\nheader_timeout = \"1h\"\n",
        1,
    );
    let p = proxy(&cfg).await;
    let c = TestClient::new();
    let admin = p.admin_addr;
    // The sampler reads the counters as tether starts, before any request.
    let h = history_after(&c, admin, None).await;
    assert_eq!(h["times"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["interval_seconds"], INTERVAL.as_secs_f64());
    assert_eq!(h["window_seconds"], WINDOW.as_secs_f64());

    // 50 new clients in the first interval.
    let mut sessions: Vec<(String, String)> = Vec::new();
    for _ in 0..50 {
        let r = c.get(p.proxy_addr, "/", None).await;
        sessions.push((r.pod(), r.cookie("tether").unwrap()));
    }
    tokio::time::sleep(INTERVAL).await;
    let h = history_after(&c, admin, newest(&h)).await;
    let app = &h["backends"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["requests_per_second"], json!([null, 5.0]), "{h}");
    assert_eq!(app["failovers"]["endpoint_gone"], json!([null, 0]));
    let debug = c.get(admin, "/debug/backends", None).await.json();
    let mut live = 0;
    for pod in ["pod-a", "pod-b", "pod-c"] {
        let series = history_of(&h, pod).unwrap_or_else(|| panic!("{pod}: {h}"));
        let served = sessions.iter().filter(|(p, _)| p == pod).count() as f64;
        let rate = latest(&series["requests_per_second"]).as_f64().unwrap();
        assert!((rate - served / 10.0).abs() < 1e-6, "{pod}: {rate}/s");
        let now = latest(&series["live_sessions"]);
        assert_eq!(*now, endpoint(&debug, pod)["live_sessions"], "{pod}");
        live += now.as_u64().unwrap();
    }
    assert_eq!(live, 50, "every session is counted on its pod");

    // pod-c leaves the table; its sessions fail over in the next interval.
    let gone: Vec<&String> = sessions
        .iter()
        .filter(|(p, _)| p == "pod-c")
        .map(|(_, cookie)| cookie)
        .collect();
    assert!(!gone.is_empty());
    p.proxy.backend("app").unwrap().publish(
        pods[..2]
            .iter()
            .map(|x| tether::backend::EndpointSpec {
                identity: x.name.as_str().into(),
                address: x.addr,
                weight: 1,
                state: tether::backend::EndpointState::Ready,
                h2c: false,
            })
            .collect(),
    );
    for cookie in &gone {
        let r = c.get(p.proxy_addr, "/", Some(cookie)).await;
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    }
    tokio::time::sleep(INTERVAL).await;
    let mut h = history_after(&c, admin, newest(&h)).await;
    let app = &h["backends"][0];
    assert_eq!(*latest(&app["failovers"]["endpoint_gone"]), gone.len());
    assert_eq!(*latest(&app["failovers"]["drained"]), 0);
    let rate = latest(&app["requests_per_second"]).as_f64().unwrap();
    assert!((rate - gone.len() as f64 / 10.0).abs() < 1e-6, "{rate}/s");
    let c_series = history_of(&h, "pod-c").expect("a departed pod stays in the window");
    assert_eq!(*latest(&c_series["live_sessions"]), Value::Null);
    let last_seen = h["times"][1].as_u64().unwrap();

    // Fifteen minutes on: the window slides, and pod-c goes once it has nothing in it.
    let mut aged_out = None;
    for _ in 0..100 {
        tokio::time::sleep(INTERVAL).await;
        h = history_after(&c, admin, newest(&h)).await;
        let times: Vec<u64> = serde_json::from_value(h["times"].clone()).unwrap();
        assert!(times.len() <= 90, "{} samples", times.len());
        assert!(times[times.len() - 1] - times[0] < 900, "{times:?}");
        if aged_out.is_none() && history_of(&h, "pod-c").is_none() {
            aged_out = newest(&h);
        }
        for pod in ["pod-a", "pod-b"] {
            let series = &history_of(&h, pod).unwrap()["live_sessions"];
            assert_eq!(series.as_array().unwrap().len(), times.len());
        }
    }
    assert_eq!(
        aged_out.map(|t| t - last_seen),
        Some(WINDOW.as_secs()),
        "pod-c's series goes a window after pod-c was last seen"
    );
    assert_eq!(h["times"].as_array().unwrap().len(), 90);
    p.shutdown().await;
}
