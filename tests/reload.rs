//! Hot reload and key rotation: routes, backends, affinity settings and keys change
//! without a restart, without failed requests and without moving sessions, on every
//! client transport.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use support::transport::{with_cookie, Front, Transport};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_fail_no_request_and_move_no_session() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
    ];
    let variant = |n: usize| {
        config(
            &[&pods[0], &pods[1]],
            &[("k1", KEY_1)],
            &format!("[backend.affinity]\nmax_age = \"{}s\"\n", 3600 + n),
        )
    };
    for t in Transport::ALL {
        let what = format!("{t:?}");
        let front = Front::start_from_file(t, &variant(0)).await;
        let first = front.send(with_cookie(t, "/", None, false)).await;
        let (cookie, pod) = (first.cookie("tether").expect(&what), first.pod());

        let done = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (done, failures, served) = (done.clone(), failures.clone(), served.clone());
            // Each task on its own kept-alive connection.
            let (mut conn, cookie, pod) = (front.conn(), cookie.clone(), pod.clone());
            load.push(tokio::spawn(async move {
                for _ in 0..2000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = conn.send(with_cookie(t, "/", Some(&cookie), false)).await;
                    if r.status != 200 || r.pod() != pod {
                        failures.lock().unwrap().push((r.status, r.text()));
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for n in 1..=10 {
            front.rewrite(&variant(n));
            front.proxy.reload().await.unwrap();
            let target = served.load(Ordering::SeqCst) + 20;
            while served.load(Ordering::SeqCst) < target {
                tokio::task::yield_now().await;
            }
        }
        done.store(true, Ordering::SeqCst);
        for task in load {
            task.await.unwrap();
        }
        assert_eq!(
            *failures.lock().unwrap(),
            vec![],
            "{what}: requests failed or moved during reloads"
        );
        let c = TestClient::new();
        let metrics = c.get(front.proxy.admin_addr, "/metrics", None).await.text();
        assert!(
            metrics.contains("tether_config_reloads_total{result=\"success\"} 10"),
            "{what}: {metrics}"
        );
        // The new affinity settings are live: a new session's cookie carries the last
        // Max-Age.
        let r = front.send(with_cookie(t, "/", None, false)).await;
        assert!(
            r.set_cookies()[0].contains("Max-Age=3610"),
            "{what}: {:?}",
            r.set_cookies()
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_reload_that_adds_an_endpoint_makes_it_eligible() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    for t in Transport::ALL {
        let what = format!("{t:?}");
        let front =
            Front::start_from_file(t, &config(&[&pods[0], &pods[1]], &[("k1", KEY_1)], "")).await;
        // New sessions take a connection each: cookieless requests on one HTTP/2
        // connection share a session.
        let mut sessions = Vec::new();
        for _ in 0..30 {
            let r = front.send(with_cookie(t, "/", None, false)).await;
            sessions.push((r.cookie("tether").expect(&what), r.pod()));
        }
        front.rewrite(&config(
            &[&pods[0], &pods[1], &pods[2]],
            &[("k1", KEY_1)],
            "",
        ));
        front.proxy.reload().await.unwrap();
        let mut conn = front.conn();
        for (cookie, pod) in &sessions {
            let r = conn.send(with_cookie(t, "/", Some(cookie), false)).await;
            assert_eq!(&r.pod(), pod, "{what}: a live session moved on reload");
            assert_eq!(
                r.seen("x-tether-affinity").as_deref(),
                Some("sticky"),
                "{what}"
            );
        }
        let mut on_c = 0;
        for _ in 0..60 {
            if front.send(with_cookie(t, "/", None, false)).await.pod() == "pod-c" {
                on_c += 1;
            }
        }
        assert!(on_c > 0, "{what}: the added endpoint takes new sessions");
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_broken_config_on_reload_is_rejected_counted_and_the_old_one_keeps_serving() {
    let pod = TestBackend::echo("pod-a").await;
    for t in Transport::ALL {
        let what = format!("{t:?}");
        let front = Front::start_from_file(t, &config(&[&pod], &[("k1", KEY_1)], "")).await;
        let mut conn = front.conn();
        assert_eq!(
            conn.send(with_cookie(t, "/", None, false)).await.pod(),
            "pod-a"
        );
        front.rewrite_raw("[[backend]]\nname = \"app\"\nendpoints = [\"not-an-address\"]\n");
        let err = front.proxy.reload().await.unwrap_err();
        assert!(err.contains("backend[0].endpoints[0]"), "{what}: {err}");
        // On the connection open before the reload, and on a new one.
        let r = conn.send(with_cookie(t, "/", None, false)).await;
        assert_eq!(r.pod(), "pod-a", "{what}");
        let r = front.send(with_cookie(t, "/", None, false)).await;
        assert_eq!(r.pod(), "pod-a", "{what}");
        let c = TestClient::new();
        let admin = front.proxy.admin_addr;
        assert_eq!(c.get(admin, "/readyz", None).await.status, 200, "{what}");
        let metrics = c.get(admin, "/metrics", None).await.text();
        assert!(
            metrics.contains("tether_config_reloads_total{result=\"failure\"} 1"),
            "{what}: {metrics}"
        );
        front.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn keys_rotate_without_losing_a_session() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let refs = [&*pods[0], &*pods[1], &*pods[2]];
    for t in Transport::ALL {
        let what = format!("{t:?}");
        let front = Front::start_from_file(t, &config(&refs, &[("k1", KEY_1)], "")).await;
        let first = front.send(with_cookie(t, "/", None, false)).await;
        let (under_k1, pod, session) = (
            first.cookie("tether").expect(&what),
            first.pod(),
            first.seen("x-tether-session").unwrap(),
        );
        // Every cookie from here on one connection, which remembers the last cookie that
        // verified on it.
        let mut conn = front.conn();

        // k2 goes first; k1 still verifies.
        front.rewrite(&config(&refs, &[("k2", KEY_2), ("k1", KEY_1)], ""));
        front.proxy.reload().await.unwrap();
        let r = conn.send(with_cookie(t, "/", Some(&under_k1), false)).await;
        assert_eq!(r.pod(), pod, "{what}");
        assert_eq!(
            r.seen("x-tether-session").as_deref(),
            Some(session.as_str()),
            "{what}"
        );
        let under_k2 = r.cookie("tether").expect("re-issued under k2");
        let v = cookie::decode(&ring(&[("k2", KEY_2)]), &under_k2).expect("signed with k2");
        assert_eq!(v.claims.session.to_hex().as_str(), session, "{what}");

        // k1 retired: the k1 cookie, which verified on this connection before the
        // reload, is no longer trusted; the re-issued one is still sticky.
        front.rewrite(&config(&refs, &[("k2", KEY_2)], ""));
        front.proxy.reload().await.unwrap();
        let r = conn.send(with_cookie(t, "/", Some(&under_k1), false)).await;
        assert_eq!(
            r.seen("x-tether-affinity").as_deref(),
            Some("new"),
            "{what}"
        );
        assert_ne!(
            r.seen("x-tether-session").as_deref(),
            Some(session.as_str()),
            "{what}"
        );
        let r = conn.send(with_cookie(t, "/", Some(&under_k2), false)).await;
        assert_eq!(r.pod(), pod, "{what}");
        r.assert_told("sticky", session.as_str(), &what);
        let metrics = TestClient::new()
            .get(front.proxy.admin_addr, "/metrics", None)
            .await
            .text();
        assert!(
            metrics.contains("outcome=\"key_rotated\""),
            "{what}: {metrics}"
        );
        front.proxy.shutdown().await;
    }
}
