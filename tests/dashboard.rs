//! The admin dashboard, rendered by a real browser (headless Chromium): it shows every
//! endpoint with its state and live sessions, charts the history (request rate,
//! failovers, live sessions per pod) as inline SVG, and keeps refreshing itself. The
//! browser test skips (with a message) when no `chromium` is installed; .ci/run installs
//! it and sets `TETHER_REQUIRE_TOOLS`, under which a missing browser fails the test.
//! That the page is self-contained is checked without a browser.

mod support;

use std::process::Command;

use support::*;
use tether::backend::{EndpointSpec, EndpointState};
use tether::history::INTERVAL;

/// Loads `url` in headless Chromium, lets the page run for `ms` of virtual time, and
/// returns the DOM it ended with.
fn dump_dom(browser: &std::path::Path, url: &str, ms: u32) -> String {
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

/// The `<figure>` of the chart `kind` in a dumped DOM.
fn figure<'a>(dom: &'a str, kind: &str) -> &'a str {
    let open = format!("<figure data-chart=\"{kind}\">");
    let from = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {kind} chart:\n{dom}"));
    let rest = &dom[from..];
    &rest[..rest.find("</figure>").unwrap_or(rest.len())]
}

/// The value of attribute `name` in one tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[at..].split('"').next()
}

/// `(series, d)` of every path drawn in a chart.
fn paths(figure: &str) -> Vec<(String, String)> {
    figure
        .split("<path ")
        .skip(1)
        .filter_map(|tag| {
            let tag = format!(" {}", tag.split('>').next()?);
            Some((attr(&tag, "data-series")?.into(), attr(&tag, "d")?.into()))
        })
        .collect()
}

/// Asserts that the chart `kind` draws a line (two points at least) for `series`.
#[track_caller]
fn assert_line(dom: &str, kind: &str, series: &str) {
    let f = figure(dom, kind);
    let drawn = paths(f);
    let (_, d) = drawn
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("{kind}: no line for {series}: {drawn:?}\n{f}"));
    assert!(
        d.starts_with('M') && d.contains(" L"),
        "{kind}: {series} is not a line: {d}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_renders_every_endpoint_charts_its_history_and_refreshes_itself() {
    let Some(browser) = system_tool("chromium", "chromium") else {
        return;
    };
    let pods = pods(&["pod-a", "pod-b", "pod-c", "pod-d"]).await;
    // Idle keep-alive connections outlive the test (the paused clock jumps by whole
    // intervals; one closed at the instant the test wakes would race its next request).
    let cfg = config(&refs(&pods), &[("k1", KEY_1)], "").replacen(
        "[server]\n",
        "[server]\nheader_timeout = \"1h\"\n",
        1,
    );
    let p = proxy(&cfg).await;
    let c = TestClient::new();
    let h = history_after(&c, p.admin_addr, None).await;
    let mut on_d = None;
    for _ in 0..30 {
        let r = c.get(p.proxy_addr, "/", None).await;
        if r.pod() == "pod-d" {
            on_d = r.cookie("tether");
        }
    }
    let on_d = on_d.expect("a session on pod-d");
    tokio::time::sleep(INTERVAL).await;
    let h = history_after(&c, p.admin_addr, newest(&h)).await;
    // pod-d leaves the table and its session fails over; pod-c is drained.
    p.proxy.backend("app").unwrap().publish(
        pods[..3]
            .iter()
            .map(|x| EndpointSpec {
                identity: x.name.as_str().into(),
                address: x.addr,
                weight: 1,
                state: EndpointState::Ready,
                h2c: false,
            })
            .collect(),
    );
    let r = c.get(p.proxy_addr, "/", Some(&on_d)).await;
    assert_eq!(r.seen("x-tether-affinity").as_deref(), Some("failover"));
    assert!(p.proxy.backend("app").unwrap().set_drained("pod-c", true));
    tokio::time::sleep(INTERVAL).await;
    history_after(&c, p.admin_addr, newest(&h)).await;

    // The browser runs on a blocking thread, which keeps the paused clock where it is.
    let url = format!("http://{}/?refresh=0.5", p.admin_addr);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&browser, &url, 3000))
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
    assert!(dom.contains("failover/endpoint_gone: 1"), "{dom}");

    // The charts: the request rate, the failover (with its reason), and a line per pod
    // for live sessions, pod-d's included, each pod named in the legend.
    assert_line(&dom, "requests", "all");
    assert_line(&dom, "failovers", "all");
    assert_line(&dom, "failovers", "endpoint_gone");
    for pod in ["pod-a", "pod-b", "pod-c"] {
        assert_line(&dom, "requests", pod);
    }
    for pod in ["pod-a", "pod-b", "pod-c", "pod-d"] {
        assert_line(&dom, "sessions", pod);
        assert!(
            figure(&dom, "sessions").contains(&format!("</i>{pod} ")),
            "{pod} is not named:\n{}",
            figure(&dom, "sessions")
        );
    }

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

/// The page works offline in a cluster: one document, nothing fetched from elsewhere
/// (no scripts, styles, fonts or images by URL); the only URL in it is the SVG
/// namespace its charts are created in.
#[tokio::test]
async fn the_dashboard_is_one_page_with_no_external_assets() {
    let pod = TestBackend::echo("pod-a").await;
    let p = proxy(&config(&[&pod], &[], "")).await;
    let page = TestClient::new().get(p.admin_addr, "/", None).await;
    assert_eq!(page.status, 200);
    let html = page.text().to_ascii_lowercase();
    for reference in [
        "src=", "href=", "<link", "@import", "url(", "<iframe", "<object",
    ] {
        assert!(!html.contains(reference), "{reference} in the dashboard");
    }
    let urls: Vec<&str> = html
        .match_indices("://")
        .map(|(i, _)| {
            let start = html[..i].rfind(['"', '\'', '`', ' ']).map_or(0, |s| s + 1);
            let end = html[i..]
                .find(['"', '\'', '`', ' '])
                .map_or(html.len(), |e| i + e);
            &html[start..end]
        })
        .collect();
    assert_eq!(
        urls,
        ["http://www.w3.org/2000/svg"],
        "URLs in the dashboard"
    );
    // The charts are inline SVG drawn from the history endpoint of this same listener.
    assert!(html.contains("createelementns"));
    assert!(html.contains("fetch(\"/debug/history\""));
    p.shutdown().await;
}
