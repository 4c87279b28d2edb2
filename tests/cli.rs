//! The `tether` binary: check, keygen, demo, run.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_tether");

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        assert!(
            stderr.contains(&path.display().to_string()),
            "error names the file: {stderr}"
        );
    }
    (out.status.success(), stderr)
}

#[test]
fn check_accepts_the_example_config() {
    let out = Command::new(BIN)
        .args(["check", "--config", "config/tether.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_says_which_routes_come_from_the_file_and_which_from_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(
        &path,
        "[kubernetes.ingress]\ncontroller = \"example.com/ingress\"\n\
         [kubernetes.gateway]\ncontroller_name = \"example.com/gateway\"\n\
         [[backend]]\nname = \"web\"\nendpoints = [{ name = \"a\", address = \"127.0.0.1:1\" }]\n\
         [[route]]\nhost = \"shop.test\"\npath_prefix = \"/api\"\nbackend = \"web\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("routes from this file"), "{stdout}");
    assert!(stdout.contains("  shop.test/api -> web"), "{stdout}");
    assert!(
        stdout.contains("routes from Ingresses (at run time): those of IngressClasses with controller example.com/ingress"),
        "{stdout}"
    );
    assert!(
        stdout.contains("routes from HTTPRoutes (at run time): those attached to Gateways of GatewayClasses with controllerName example.com/gateway"),
        "{stdout}"
    );
}

#[test]
fn check_rejects_an_unknown_backend_naming_the_field() {
    let (ok, err) = check(
        "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:18081\"]\n\
         [[route]]\npath_prefix = \"/\"\nbackend = \"nope\"\n",
    );
    assert!(!ok);
    assert!(
        err.contains("route[0].backend") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn check_shows_routes_that_answer_themselves_and_rejects_a_bad_redirect_naming_the_field() {
    let text = "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:18081\"]\n\
                [[route]]\npath_prefix = \"/old\"\n\
                redirect = { scheme = \"https\", prefix = \"/new\", status = 301 }\n\
                [[route]]\npath = \"/gone\"\nanswer = 500\n\
                [[route]]\npath_prefix = \"/\"\nbackend = \"app\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("  */old -> redirect 301 (scheme https, prefix \"/new\")"),
        "{stdout}"
    );
    assert!(stdout.contains("  */gone -> answer 500"), "{stdout}");
    let (ok, err) = check(&text.replace("status = 301", "status = 200"));
    assert!(!ok);
    assert!(
        err.contains("route[0].redirect.status") && err.contains("200"),
        "{err}"
    );
}

#[test]
fn check_rejects_a_bad_address_naming_the_field() {
    let (ok, err) = check(
        "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:18081\", { name = \"b\", address = \"pod-b:80:80\" }]\n",
    );
    assert!(!ok);
    assert!(err.contains("backend[0].endpoints[1].address"), "{err}");
}

#[test]
fn check_rejects_a_short_key_naming_the_field() {
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let (ok, err) = check(&format!(
        "[[keys]]\nid = \"k1\"\nsecret = \"{short}\"\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:18081\"]\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("keys[0].secret") && err.contains("16 bytes"),
        "{err}"
    );
}

#[test]
fn check_reads_secret_files_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.key"), format!("{KEY_1}\n")).unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(
        &path,
        "[[keys]]\nid = \"k1\"\nsecret_file = \"k1.key\"\n\
         [[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:18081\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keygen_prints_a_fresh_32_byte_key() {
    let run = || {
        let out = Command::new(BIN).arg("keygen").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (a, b) = (run(), run());
    assert_ne!(a, b);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .unwrap();
    assert_eq!(bytes.len(), 32);
}

/// `tether run --config PATH`, its logs discarded, killed when dropped.
fn spawn_run(path: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits (bounded) until a spawned binary's admin listener answers /readyz with 200.
async fn wait_until_ready(c: &TestClient, admin: std::net::SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && c.get(admin, "/readyz", None).await.status == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tether at {admin} did not become ready");
}

/// Spawns the binary and reads its printed proxy and admin addresses.
async fn spawn_and_read_addrs(args: &[&str]) -> (tokio::process::Child, String, String) {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the binary prints its addresses")
        .unwrap()
        .unwrap();
    let word_after = |tag: &str| {
        let i = line.find(tag).unwrap_or_else(|| panic!("{tag} in {line}")) + tag.len();
        line[i..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    };
    let (proxy, admin) = (word_after("proxy "), word_after("admin "));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, proxy, admin)
}

#[tokio::test]
async fn demo_serves_sticky_sessions_and_fails_over_when_a_pod_is_stopped() {
    let (mut child, proxy, admin) =
        spawn_and_read_addrs(&["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]).await;
    let proxy: std::net::SocketAddr = proxy.parse().unwrap();
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let c = TestClient::new();

    let first = c.get(proxy, "/hello", None).await;
    assert_eq!(first.status, 200);
    let body = first.json();
    assert_eq!(body["affinity"], "new");
    assert_eq!(body["path"], "/hello");
    let pod = body["pod"].as_str().unwrap().to_string();
    let session = body["session"].as_str().unwrap().to_string();
    let value = first.cookie("tether").unwrap();
    for _ in 0..10 {
        let r = c.get(proxy, "/hello", Some(&value)).await.json();
        assert_eq!(r["pod"], pod.as_str());
        assert_eq!(r["affinity"], "sticky");
    }

    let stop = http::Request::post(format!("http://{admin}/demo/pods/{pod}/stop"))
        .body(Default::default())
        .unwrap();
    assert_eq!(c.send(stop).await.status, 200);
    let r = c.get(proxy, "/hello", Some(&value)).await.json();
    assert_ne!(r["pod"], pod.as_str());
    assert_eq!(r["affinity"], "failover");
    assert_eq!(r["session"], session.as_str());
    assert_eq!(r["previous"], pod.as_str());
    assert_eq!(c.get(admin, "/readyz", None).await.status, 200);

    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn run_serves_from_a_config_file_and_exits_zero_on_sigterm() {
    let pod = TestBackend::echo("pod-a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    // Free ports for the binary: bind, read, release.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free(), free());
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\nworkers = 1\n\
             [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [{}]\n",
            pod.entry()
        ),
    )
    .unwrap();
    let mut child = spawn_run(&path);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let r = c.get(listen, "/", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.pod(), "pod-a");

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn run_discovers_a_service_through_the_kubeconfig_environment_variable() {
    use support::fake_apiserver::{slice, Ep, FakeApiServer};
    let (pods, port) = pods_on_one_port(&["web-0"]).await;
    let api = FakeApiServer::start().await;
    api.apply(slice(
        "default",
        "web-1",
        "web",
        "http",
        port,
        &[Ep::pod("web-0", "127.0.0.10")],
    ));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free(), free());
    let path = dir.path().join("tether.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n\
             [[backend]]\nname = \"web\"\nkubernetes = {{ service = \"web\", port = \"http\" }}\n"
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let r = c.get(listen, "/", None).await;
    assert_eq!(r.pod(), pods[0].name);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// Peak resident memory of a process, from /proc (Linux), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Writes a config for the binary in front of `entries`, on free ports.
fn binary_config(
    dir: &std::path::Path,
    entries: &str,
    server_extra: &str,
) -> (
    std::path::PathBuf,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free(), free());
    let path = dir.join("tether.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\nworkers = 2\n{server_extra}\n\
             [[keys]]\nid = \"k1\"\nsecret = \"{KEY_1}\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [{entries}]\n"
        ),
    )
    .unwrap();
    (path, listen, admin)
}

#[tokio::test]
async fn with_two_workers_upstream_connections_are_reused_per_worker_thread() {
    let pod = TestBackend::echo("pod-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(dir.path(), &pod.entry(), "");
    let mut child = spawn_run(&path);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    // 100 requests one after another, each on a fresh client connection, so the kernel
    // spreads them over both worker threads' listeners.
    for _ in 0..100 {
        let r = TestClient::new().get(listen, "/", None).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(pod.hits.load(std::sync::atomic::Ordering::SeqCst), 100);
    // Each worker thread opened one upstream connection and reused it: not one per
    // request or per client connection, and not one connection shared across threads
    // (that would be 1, with a cross-thread wake-up on every exchange). All 100 client
    // connections landing on one thread has probability 2^-99.
    let opened = pod.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        opened, 2,
        "upstream connections opened for 100 sequential requests over 2 workers"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_started_before_it_and_exits_zero() {
    let slow = TestBackend::with_handler("slow", |req| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        echo("slow", req).await
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(
        dir.path(),
        &slow.entry(),
        "shutdown_grace = \"10s\"\nshutdown_delay = \"500ms\"",
    );
    let mut child = spawn_run(&path);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let mut inflight = Vec::new();
    for _ in 0..50 {
        let c = TestClient::new();
        inflight.push(tokio::spawn(async move {
            c.get(listen, "/", None).await.status
        }));
    }
    while slow.hits.load(std::sync::atomic::Ordering::SeqCst) < 50 {
        tokio::task::yield_now().await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Readiness turns 503 at once, while the listener still accepts (shutdown_delay).
    let mut saw_not_ready = false;
    for _ in 0..50 {
        if c.get(admin, "/readyz", None).await.status == 503 {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_not_ready, "readiness did not turn 503 after SIGTERM");
    for t in inflight {
        assert_eq!(
            t.await.unwrap(),
            200,
            "a request in flight at SIGTERM failed"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_streams_through_with_bounded_memory() {
    use http_body_util::BodyExt;
    const GIB: u64 = 1 << 30;
    const CHUNK: usize = 1 << 20;
    // Upstream: counts what it receives, and streams 1 GiB back for GET /download.
    let sink = TestBackend::with_handler("sink", |req| async move {
        if req.uri().path() == "/download" {
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
            tokio::spawn(async move {
                let chunk = bytes::Bytes::from(vec![7u8; CHUNK]);
                for _ in 0..(GIB as usize / CHUNK) {
                    if tx.send(chunk.clone()).await.is_err() {
                        break;
                    }
                }
            });
            return http::Response::new(ChannelBody::new(rx).boxed());
        }
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        http::Response::new(full(n.to_string()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(dir.path(), &sink.entry(), "");
    let mut child = spawn_run(&path);
    let pid = child.id().unwrap();
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let idle_rss = peak_rss_kib(pid).unwrap_or(0);

    // Upload: 1 GiB, chunked, from a channel-fed body.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![1u8; CHUNK]);
        for _ in 0..(GIB as usize / CHUNK) {
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ChannelBody>();
    let up = client
        .request(
            http::Request::post(format!("http://{listen}/upload"))
                .body(ChannelBody::new(rx))
                .unwrap(),
        )
        .await
        .unwrap();
    let got = up.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        got,
        GIB.to_string(),
        "the upstream received the whole upload"
    );

    // Download: 1 GiB, counted as it arrives.
    let down = TestClient::new();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>()
        .get(format!("http://{listen}/download").parse().unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, GIB);
    drop(down);

    let peak = peak_rss_kib(pid).unwrap_or(0);
    eprintln!("tether peak RSS: idle {idle_rss} KiB, after 1 GiB up + 1 GiB down {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB: bodies were buffered"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn cookie_inspect_decodes_a_valid_cookie_and_rejects_a_tampered_one() {
    let pods = [
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
    ];
    let text = config(&[&pods[0], &pods[1]], &[("k1", KEY_1)], "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let p = proxy(&text).await;
    let r = TestClient::new().get(p.proxy_addr, "/", None).await;
    let value = r.cookie("tether").unwrap();
    let inspect = |v: &str| {
        Command::new(BIN)
            .args(["cookie", "inspect", "--config"])
            .arg(&path)
            .arg(v)
            .output()
            .unwrap()
    };
    let out = inspect(&value);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("valid"), "{stdout}");
    assert!(
        stdout.contains(&r.seen("x-tether-session").unwrap()),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("endpoint: {} (", r.pod())),
        "{stdout}"
    );
    assert!(
        stdout.contains("key:      k1 (current signing key)"),
        "{stdout}"
    );

    let mut tampered = value.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let out = inspect(&String::from_utf8(tampered).unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid: bad signature"));
    p.shutdown().await;
}

#[tokio::test]
async fn run_reloads_when_the_config_file_changes() {
    let (a, b) = (
        TestBackend::echo("pod-a").await,
        TestBackend::echo("pod-b").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(dir.path(), &a.entry(), "");
    let mut child = spawn_run(&path);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let text = std::fs::read_to_string(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime
    std::fs::write(
        &path,
        text.replace(&a.entry(), &format!("{}, {}", a.entry(), b.entry())),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..200 {
        let debug = c.get(admin, "/debug/backends", None).await.json();
        if debug["backends"][0]["endpoints"].as_array().map(Vec::len) == Some(2) {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the changed config file was not picked up");
    assert_eq!(c.get(listen, "/", None).await.status, 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// `tether run` on `path` (with `env`, and no in-cluster API), its log lines to read.
fn run_with_logs(
    path: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .envs(env.iter().copied())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, stderr)
}

#[tokio::test]
async fn the_access_log_writes_one_json_line_per_request_with_the_affinity_outcome() {
    let pod = TestBackend::echo("pod-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(
        dir.path(),
        &pod.entry(),
        "access_log_sample = 1.0\nlog_format = \"json\"",
    );
    let (mut child, mut stderr) = run_with_logs(&path, &[]);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    let first = c.get(listen, "/a", None).await;
    let cookie = first.cookie("tether").unwrap();
    c.get(listen, "/b", Some(&cookie)).await;
    let mut access = Vec::new();
    while access.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
            .await
            .expect("access log lines")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        if v["target"] == "tether::access" {
            access.push(v);
        }
    }
    assert_eq!(access[0]["path"], "/a");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["backend"], "app");
    assert_eq!(access[0]["endpoint"], "pod-a");
    assert_eq!(access[0]["affinity"], "new");
    assert_eq!(access[1]["affinity"], "sticky");
    assert_eq!(access[0]["session"].as_str().map(str::len), Some(32));
    assert_eq!(access[1]["session"], access[0]["session"]);
    assert!(access[1]["duration_ms"].as_f64().is_some());
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    // What `kubectl logs` and log shippers read: stderr is a pipe, not a terminal.
    let pod = TestBackend::echo("pod-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = binary_config(dir.path(), &pod.entry(), "access_log_sample = 1.0");
    let (mut child, mut stderr) = run_with_logs(&path, &[]);
    let c = TestClient::new();
    wait_until_ready(&c, admin).await;
    c.get(listen, "/a", None).await;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("tether::access")) {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
            .await
            .expect("log lines")
            .unwrap()
            .unwrap();
        lines.push(line);
    }
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "an escape code in {l:?}");
    }
    assert!(lines.iter().any(|l| l.contains("INFO")), "{lines:?}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn an_api_server_down_from_the_start_is_logged_as_no_endpoints_loaded_yet() {
    // Not "keeping the last known endpoints": there never were any.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://{closed}\n\
             contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: gone\n    namespace: default\n\
             current-context: gone\nusers:\n- name: gone\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n\
             [[backend]]\nname = \"web\"\nkubernetes = {{ service = \"web\", port = \"http\" }}\n"
        ),
    )
    .unwrap();
    let (mut child, mut stderr) = run_with_logs(&path, &[("KUBECONFIG", kubeconfig.as_os_str())]);
    let warning = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), stderr.next_line())
            .await
            .expect("a discovery warning")
            .unwrap()
            .expect("tether keeps running");
        if line.contains("endpointslice watch failed") {
            break line;
        }
    };
    assert!(warning.contains("none are loaded yet"), "{warning}");
    assert!(!warning.contains("keeping the last known"), "{warning}");
    // And counted, for the alert on discovery errors. Discovery starts before the
    // listeners are bound, so the warning can come before the admin port listens.
    wait_for_async("the admin listener", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok()
    })
    .await;
    let errors = metric(
        &TestClient::new(),
        admin,
        "tether_discovery_errors_total",
        &[("backend", "web")],
    )
    .await;
    assert!(errors >= 1.0, "{errors}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[test]
fn check_warns_when_a_tls_listeners_cookie_is_set_not_secure() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let config = |secure: &str| {
        format!(
            "[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n[backend.affinity]\n{secure}"
        )
    };
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, config("secure = false\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains("backend[0].affinity.secure"),
        "{err}"
    );
    // Left to the default, a TLS listener's cookie is Secure and nothing is said.
    std::fs::write(&path, config("")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn migrate_reads_a_file_and_prints_gateway_api_objects_toml_and_the_report() {
    let out = Command::new(BIN)
        .args(["migrate", "examples/ingress-nginx/shop.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kind: Gateway\n"), "{stdout}");
    assert!(stdout.contains("kind: HTTPRoute\n"), "{stdout}");
    assert!(stdout.contains("sessionName: SHOPSESSION"), "{stdout}");
    assert!(stdout.contains("# [[backend]]"), "{stdout}");
    assert!(
        stdout.contains(
            "| web/shop | nginx.ingress.kubernetes.io/proxy-body-size | 8m | not supported |"
        ),
        "{stdout}"
    );
    let toml = Command::new(BIN)
        .args([
            "migrate",
            "--format",
            "toml",
            "examples/ingress-nginx/shop.yaml",
        ])
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&toml.stdout);
    assert!(toml.starts_with("# tether.toml"), "{toml}");
    assert!(!toml.contains("kind:"), "{toml}");
    let (ok, stderr) = check(&toml);
    assert!(ok, "tether check rejects the printed TOML: {stderr}");
}

#[test]
fn migrate_reads_standard_input_and_skips_other_kinds_with_a_note() {
    use std::io::Write;
    let input = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n---\n{}",
        std::fs::read_to_string("examples/ingress-nginx/shop.yaml").unwrap()
    );
    let mut child = Command::new(BIN)
        .args([
            "migrate",
            "--format",
            "gateway",
            "--gateway-class",
            "edge",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("gatewayClassName: edge"), "{stdout}");
    assert!(
        !stdout.contains("# "),
        "gateway format prints only objects: {stdout}"
    );
    assert!(
        stderr.contains("note: document 1: skipped Service \"web\""),
        "{stderr}"
    );
}

#[test]
fn migrate_rejects_bad_yaml_naming_the_document_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\nspec: [unclosed\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("migrate")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("document 2: not valid YAML"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}
