//! The admin dashboard, rendered by a real browser (headless Chromium): it shows every
//! endpoint with its state and live sessions, and keeps refreshing itself.
//! Skips (with a message) when no `chromium` is installed; .ci/run installs it and sets
//! `TETHER_REQUIRE_TOOLS`, under which a missing browser fails the test.

mod support;

use std::process::Command;

use support::*;

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Loads `url` in headless Chromium, lets the page run for `ms` of virtual time, and
/// returns the DOM it ended with.
fn dump_dom(browser: &str, url: &str, ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--virtual-time-budget={ms}"),
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_every_endpoint_and_refreshes_itself() {
    let Some(browser) = chromium() else {
        // `.ci/run` installs chromium and requires it.
        assert!(
            std::env::var_os("TETHER_REQUIRE_TOOLS").is_none(),
            "no chromium: apt-get install chromium"
        );
        eprintln!("SKIPPED: no chromium installed (apt-get install chromium)");
        return;
    };
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
        TestBackend::echo("pod-c").await,
    ];
    let p = proxy(&config(
        &[&pods[0], &pods[1], &pods[2]],
        &[("k1", KEY_1)],
        "",
    ))
    .await;
    let c = TestClient::new();
    for _ in 0..30 {
        c.get(p.proxy_addr, "/", None).await;
    }
    assert!(p.proxy.backend("app").unwrap().set_drained("pod-c", true));
    let url = format!("http://{}/?refresh=0.5", p.admin_addr);
    let dom = tokio::task::spawn_blocking(move || dump_dom(browser, &url, 3000))
        .await
        .unwrap();
    for pod in ["pod-a", "pod-b", "pod-c"] {
        assert!(
            dom.contains(&format!("data-endpoint=\"{pod}\"")),
            "{pod} missing:\n{dom}"
        );
    }
    assert!(dom.contains("draining (operator)"), "{dom}");
    assert!(
        dom.contains("new: 30"),
        "the outcome counters are shown:\n{dom}"
    );
    let refreshes: u32 = dom
        .split("data-refreshes=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        refreshes >= 2,
        "the page did not refresh itself ({refreshes}):\n{dom}"
    );
    p.shutdown().await;
}
