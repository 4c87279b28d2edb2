//! The shipped monitoring against a real Prometheus server (Debian's `prometheus`
//! package; `.ci/run` installs it): Prometheus scrapes a running tether while sticky
//! traffic flows and a pod stops mid-run, evaluates the alert rules of
//! `config/prometheus/tether-alerts.yaml`, and answers every query of the Grafana
//! dashboard `config/grafana/tether.json` and the prometheus-adapter rule of
//! `config/prometheus/adapter-rules.yaml`. Each query must parse and return data, and
//! every rule must evaluate without error.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use support::*;

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A dashboard query as Grafana would send it: every backend, a one-minute window.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$backend", ".*")
        .replace("$__rate_interval", "1m")
}

/// Every `expr` of every panel of the dashboard, with its panel's title.
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            out.push((
                panel["title"].as_str().unwrap_or("?").to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

/// Polls `cond` every 200 ms until it holds: Prometheus runs on real time (its scrapes
/// and rule evaluations are every second here), so this waits on it, up to a minute.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_tether_and_runs_every_dashboard_query_and_alert_rule() {
    let Some(prometheus) = system_tool("prometheus", "prometheus") else {
        eprintln!("SKIPPED: no prometheus installed (apt-get install prometheus)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pods = three_pods().await;
    let p = proxy(&config(&refs(&pods), &[("k1", KEY_1)], "")).await;
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let prom = listen.local_addr().unwrap();
    drop(listen);
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: tether\n    static_configs:\n      - targets: [\"{}\"]\n        labels: {{namespace: default}}\n",
            root.join("config/prometheus/tether-alerts.yaml").display(),
            p.admin_addr
        ),
    )
    .unwrap();
    let _prometheus = tokio::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");

    // Sticky traffic the whole time; its pod stops after a while, so sessions fail over.
    let c = TestClient::new();
    let first = c.get(p.proxy_addr, "/", None).await;
    let cookie = first.cookie("tether").unwrap();
    let pinned = first.pod();
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (running, cookie, addr) = (running.clone(), cookie.clone(), p.proxy_addr);
        tokio::spawn(async move {
            let c = TestClient::new();
            while running.load(Ordering::Relaxed) {
                c.get(addr, "/", Some(&cookie)).await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let query = |q: String| {
        let c = TestClient::new();
        async move {
            let r = c
                .get(prom, &format!("/api/v1/query?query={}", encode(&q)), None)
                .await;
            r.json()
        }
    };
    // Prometheus up, scraping, with enough samples for a rate.
    eventually("prometheus to see tether's traffic", || async {
        let up = tokio::net::TcpStream::connect(prom).await.is_ok();
        up && TestClient::new().get(prom, "/-/ready", None).await.status == 200
            && query("sum(rate(tether_requests_total[1m])) > 0".into()).await["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    })
    .await;
    pods.iter()
        .find(|b| b.name == pinned)
        .unwrap()
        .stop_and_wait()
        .await;
    eventually("failovers in prometheus", || async {
        let q = "sum(tether_affinity_total{outcome=\"failover\"}) > 0";
        query(q.into()).await["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;

    for (title, expr) in dashboard_queries(&root.join("config/grafana/tether.json")) {
        let q = as_grafana_sends(&expr);
        let v = query(q.clone()).await;
        assert_eq!(v["status"], "success", "{title}: {q}: {v}");
        let result = v["data"]["result"].as_array().expect("a vector");
        assert!(!result.is_empty(), "{title}: no data for {q}");
    }

    // The prometheus-adapter rule's query, as the adapter fills it in for an HPA over
    // the app's pods: live sessions per pod (the endpoint label names the pod).
    let adapter =
        std::fs::read_to_string(root.join("config/prometheus/adapter-rules.yaml")).unwrap();
    let template = adapter
        .lines()
        .find_map(|l| l.trim().strip_prefix("metricsQuery:"))
        .expect("a metricsQuery")
        .trim()
        .trim_matches('\'');
    let q = template
        .replace("<<.GroupBy>>", "namespace, endpoint")
        .replace("<<.Series>>", "tether_live_sessions")
        .replace(
            "<<.LabelMatchers>>",
            "namespace=\"default\",endpoint=~\"pod-.*\"",
        );
    let v = query(q.clone()).await;
    assert_eq!(v["status"], "success", "{q}: {v}");
    let per_pod = v["data"]["result"].as_array().expect("a vector");
    assert_eq!(per_pod.len(), 3, "one series per pod: {q}: {v}");

    // Every alert rule loaded and evaluated by Prometheus without error.
    eventually("every rule evaluated", || async {
        let v = TestClient::new()
            .get(prom, "/api/v1/rules", None)
            .await
            .json();
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == 8 && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;

    running.store(false, Ordering::Relaxed);
    let _ = traffic.await;
    p.shutdown().await;
}
