//! Hot reload and key rotation: routes, backends, affinity settings and keys change
//! without a restart, without failed requests and without moving sessions.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use support::*;
use tether::affinity::{cookie, KeyRing};
use tether::config::{Config, KeyMaterial};

/// Starts a proxy from a config file it can re-read.
async fn proxy_from_file(path: &Path) -> Running {
    let c = Config::from_file(path).unwrap();
    tether::server::start(
        &c,
        tether::server::Options {
            config_path: Some(path.to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    let variant = |n: usize| {
        config(
            &[&pods[0], &pods[1]],
            &[("k1", KEY_1)],
            &format!("[backend.affinity]\nmax_age = \"{}s\"\n", 3600 + n),
        )
    };
    std::fs::write(&path, variant(0)).unwrap();
    let p = proxy_from_file(&path).await;
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let (cookie, pod) = (first.cookie("tether").unwrap(), first.pod());

    let done = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (done, failures, served) = (done.clone(), failures.clone(), served.clone());
        let (c, cookie, pod, addr) = (TestClient::new(), cookie.clone(), pod.clone(), p.proxy_addr);
        load.push(tokio::spawn(async move {
            for _ in 0..2000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let r = c.get(addr, "/", Some(&cookie)).await;
                if r.status != 200 || r.pod() != pod {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for n in 1..=10 {
        std::fs::write(&path, variant(n)).unwrap();
        p.reload().await.unwrap();
        let target = served.load(Ordering::SeqCst) + 20;
        while served.load(Ordering::SeqCst) < target {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed or moved during reloads"
    );
    let metrics = c.get(p.admin_addr, "/metrics", None).await.text();
    assert!(
        metrics.contains("tether_config_reloads_total{result=\"success\"} 10"),
        "{metrics}"
    );
    // The new affinity settings are live: a new session's cookie carries the last Max-Age.
    let r = c.get(p.proxy_addr, "/", None).await;
    assert!(
        r.set_cookies()[0].contains("Max-Age=3610"),
        "{:?}",
        r.set_cookies()
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_adds_an_endpoint_makes_it_eligible() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, config(&[&pods[0], &pods[1]], &[("k1", KEY_1)], "")).unwrap();
    let p = proxy_from_file(&path).await;
    let c = TestClient::new();
    let mut sessions = Vec::new();
    for _ in 0..30 {
        let r = c.get(p.proxy_addr, "/", None).await;
        sessions.push((r.cookie("tether").unwrap(), r.pod()));
    }
    std::fs::write(
        &path,
        config(&[&pods[0], &pods[1], &pods[2]], &[("k1", KEY_1)], ""),
    )
    .unwrap();
    p.reload().await.unwrap();
    for (cookie, pod) in &sessions {
        let r = c.get(p.proxy_addr, "/", Some(cookie)).await;
        assert_eq!(&r.pod(), pod, "a live session moved on reload");
        assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    }
    let mut on_c = 0;
    for _ in 0..60 {
        if c.get(p.proxy_addr, "/", None).await.pod() == "pod-c" {
            on_c += 1;
        }
    }
    assert!(on_c > 0, "the added endpoint takes new sessions");
    p.shutdown().await;
}

#[tokio::test]
async fn a_broken_config_on_reload_is_rejected_counted_and_the_old_one_keeps_serving() {
    let pod = TestBackend::echo("pod-a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, config(&[&pod], &[("k1", KEY_1)], "")).unwrap();
    let p = proxy_from_file(&path).await;
    std::fs::write(
        &path,
        "[[backend]]\nname = \"app\"\nendpoints = [\"not-an-address\"]\n",
    )
    .unwrap();
    let err = p.reload().await.unwrap_err();
    assert!(err.contains("backend[0].endpoints[0]"), "{err}");
    let c = TestClient::new();
    assert_eq!(c.get(p.proxy_addr, "/", None).await.pod(), "pod-a");
    assert_eq!(c.get(p.admin_addr, "/readyz", None).await.status, 200);
    let metrics = c.get(p.admin_addr, "/metrics", None).await.text();
    assert!(
        metrics.contains("tether_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn keys_rotate_without_losing_a_session() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let refs = [&*pods[0], &*pods[1], &*pods[2]];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, config(&refs, &[("k1", KEY_1)], "")).unwrap();
    let p = proxy_from_file(&path).await;
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let (under_k1, pod, session) = (
        first.cookie("tether").unwrap(),
        first.pod(),
        first.seen("x-tether-session").unwrap(),
    );

    // k2 goes first; k1 still verifies.
    std::fs::write(&path, config(&refs, &[("k2", KEY_2), ("k1", KEY_1)], "")).unwrap();
    p.reload().await.unwrap();
    let r = c.get(p.proxy_addr, "/", Some(&under_k1)).await;
    assert_eq!(r.pod(), pod);
    assert_eq!(
        r.seen("x-tether-session").as_deref(),
        Some(session.as_str())
    );
    let under_k2 = r.cookie("tether").expect("re-issued under k2");
    let v = cookie::decode(&ring(&[("k2", KEY_2)]), &under_k2).expect("signed with k2");
    assert_eq!(v.claims.session.to_hex().as_str(), session);

    // k1 retired: the re-issued cookie is still sticky.
    std::fs::write(&path, config(&refs, &[("k2", KEY_2)], "")).unwrap();
    p.reload().await.unwrap();
    let r = c.get(p.proxy_addr, "/", Some(&under_k2)).await;
    assert_eq!(r.pod(), pod);
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("sticky"));
    assert_eq!(
        r.seen("x-tether-session").as_deref(),
        Some(session.as_str())
    );
    let metrics = c.get(p.admin_addr, "/metrics", None).await.text();
    assert!(metrics.contains("outcome=\"key_rotated\""), "{metrics}");
    p.shutdown().await;
}
