//! Route matches from a tether.toml `[[route]]`: exact paths, methods, header values and
//! query parameters, and Gateway API's precedence between routes that all match, the
//! same whether the client speaks HTTP/1 or HTTP/2.

mod support;

use support::transport::{request, target, Front, Transport};
use support::*;

/// Two backends, `stable` and `canary`, and routes that send some requests to canary.
async fn front(t: Transport) -> (Front, Vec<std::sync::Arc<TestBackend>>) {
    let stable = TestBackend::echo("stable").await;
    let canary = TestBackend::echo("canary").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[backend]]\nname = \"stable\"\nendpoints = [\"{}\"]\n\
         [[backend]]\nname = \"canary\"\nendpoints = [\"{}\"]\n\
         [[route]]\npath_prefix = \"/\"\nbackend = \"stable\"\n\
         [[route]]\npath_prefix = \"/\"\nheaders = {{ X-Env = \"canary\" }}\nbackend = \"canary\"\n\
         [[route]]\npath_prefix = \"/orders\"\nmethod = \"DELETE\"\nbackend = \"canary\"\n\
         [[route]]\npath_prefix = \"/search\"\nquery = {{ beta = \"1\" }}\nbackend = \"canary\"\n\
         [[route]]\npath = \"/exact\"\nbackend = \"canary\"\n\
         [[route]]\npath_prefix = \"/exact\"\nbackend = \"stable\"\n",
        stable.addr, canary.addr
    );
    (Front::start(t, &cfg).await, vec![stable, canary])
}

/// Who answered `method target` with these fields.
async fn pod(f: &Front, method: &str, path: &str, fields: &[(&str, &str)]) -> String {
    let mut all = vec![];
    if !f.transport.is_h2() {
        all.push(("host", "localhost"));
    }
    all.extend_from_slice(fields);
    let mut req = request(&target(f.transport, "localhost", path), &all, false);
    *req.method_mut() = method.parse().unwrap();
    let r = f.send(req).await;
    assert_eq!(r.status, 200, "{method} {path} {fields:?}");
    r.pod()
}

#[tokio::test]
async fn a_header_match_routes_to_its_backend_and_not_the_other() {
    for t in Transport::ALL {
        let (f, _pods) = front(t).await;
        assert_eq!(pod(&f, "GET", "/a", &[("x-env", "canary")]).await, "canary");
        assert_eq!(pod(&f, "GET", "/a", &[("X-ENV", "canary")]).await, "canary");
        assert_eq!(pod(&f, "GET", "/a", &[("x-env", "Canary")]).await, "stable");
        assert_eq!(pod(&f, "GET", "/a", &[]).await, "stable", "{t:?}");
    }
}

#[tokio::test]
async fn method_and_query_matches_route_only_what_they_name() {
    for t in Transport::ALL {
        let (f, _pods) = front(t).await;
        assert_eq!(pod(&f, "DELETE", "/orders/7", &[]).await, "canary");
        assert_eq!(pod(&f, "GET", "/orders/7", &[]).await, "stable");
        assert_eq!(pod(&f, "GET", "/search?q=x&beta=1", &[]).await, "canary");
        assert_eq!(pod(&f, "GET", "/search?beta=2", &[]).await, "stable");
        assert_eq!(pod(&f, "GET", "/search", &[]).await, "stable", "{t:?}");
    }
}

#[tokio::test]
async fn an_exact_path_wins_over_the_same_prefix_and_matches_nothing_longer() {
    for t in Transport::ALL {
        let (f, _pods) = front(t).await;
        assert_eq!(pod(&f, "GET", "/exact", &[]).await, "canary");
        assert_eq!(pod(&f, "GET", "/exact/more", &[]).await, "stable");
        assert_eq!(pod(&f, "GET", "/exact?x=1", &[]).await, "canary", "{t:?}");
    }
}

#[tokio::test]
async fn a_request_header_edit_changes_what_the_pod_receives_and_not_what_tether_tells_it() {
    for t in Transport::ALL {
        let pod = TestBackend::echo("pod").await;
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"{}\"]\n\
             [[route]]\npath_prefix = \"/\"\nbackend = \"app\"\n\
             request_headers = {{ set = {{ X-Env = \"route\" }}, add = {{ X-Added = \"1\" }}, remove = [\"X-Secret\"] }}\n",
            pod.addr
        );
        let f = Front::start(t, &cfg).await;
        let mut fields = vec![];
        if !t.is_h2() {
            fields.push(("host", "localhost"));
        }
        fields.extend([
            ("x-env", "client"),
            ("x-secret", "s"),
            // Underscore spellings, which CGI-style servers read as the same field.
            ("x_env", "client"),
            ("x_secret", "s"),
            ("x-tether-session", "spoofed"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let r = f
            .send(request(&target(t, "localhost", "/"), &fields, false))
            .await;
        assert_eq!(r.status, 200, "{t:?}");
        assert_eq!(
            r.seen("x-env").as_deref(),
            Some("route"),
            "{t:?}: set replaces"
        );
        assert_eq!(r.seen("x-added").as_deref(), Some("1"), "{t:?}");
        assert_eq!(r.seen("x-secret"), None, "{t:?}: removed");
        assert_eq!(
            (r.seen("x_env"), r.seen("x_secret")),
            (None, None),
            "{t:?}: underscore spellings of edited fields are dropped too"
        );
        assert_ne!(r.seen("x-tether-session").as_deref(), Some("spoofed"));
        assert_eq!(
            r.seen("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1"),
            "{t:?}: tether's chain, the client's part untrusted but kept as is"
        );
    }
}

#[test]
fn a_request_header_edit_cannot_name_what_tether_tells_the_app() {
    for name in [
        "X-Tether-Session",
        "X_Tether_Affinity",
        "X-Forwarded-For",
        "Host",
        "Connection",
    ] {
        let text = format!(
            "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n\
             [[route]]\nbackend = \"app\"\nrequest_headers = {{ set = {{ {name} = \"x\" }} }}\n"
        );
        let e =
            tether::config::Config::parse(&text, "t.toml", std::path::Path::new(".")).unwrap_err();
        assert_eq!(
            e.field,
            format!("route[0].request_headers.set.{name}"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_response_header_edit_changes_what_the_client_gets_but_not_the_session_cookie() {
    for t in Transport::ALL {
        let pod = TestBackend::echo("pod").await;
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"{}\"]\n\
             [[route]]\npath_prefix = \"/\"\nbackend = \"app\"\n\
             response_headers = {{ set = {{ Content-Type = \"text/plain\" }}, add = {{ X-Route = \"1\" }}, remove = [\"X-Pod\"] }}\n",
            pod.addr
        );
        let f = Front::start(t, &cfg).await;
        let fields: &[(&str, &str)] = if t.is_h2() {
            &[]
        } else {
            &[("host", "localhost")]
        };
        let r = f
            .send(request(&target(t, "localhost", "/"), fields, false))
            .await;
        assert_eq!(r.status, 200, "{t:?}");
        assert_eq!(
            r.headers["content-type"], "text/plain",
            "{t:?}: set replaces"
        );
        assert_eq!(r.headers["x-route"], "1", "{t:?}");
        assert!(r.headers.get("x-pod").is_none(), "{t:?}: removed");
        assert!(r.cookie("tether").is_some(), "{t:?}: tether's cookie stays");
    }
    let text = "[[backend]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n\
                [[route]]\nbackend = \"app\"\nresponse_headers = { remove = [\"Set-Cookie\"] }\n";
    let e = tether::config::Config::parse(text, "t.toml", std::path::Path::new(".")).unwrap_err();
    assert_eq!(
        e.field, "route[0].response_headers.remove.Set-Cookie",
        "{e}"
    );
}

#[tokio::test]
async fn a_rewrite_changes_the_host_and_path_the_pod_gets_and_keeps_the_forwarded_host() {
    for t in Transport::ALL {
        let pod = TestBackend::echo("pod").await;
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"{}\"]\n\
             [[route]]\npath_prefix = \"/old\"\nbackend = \"app\"\n\
             rewrite = {{ hostname = \"internal.example\", prefix = \"/new\" }}\n\
             [[route]]\npath = \"/one\"\nbackend = \"app\"\nrewrite = {{ path = \"/two\" }}\n",
            pod.addr
        );
        let f = Front::start(t, &cfg).await;
        let fields: &[(&str, &str)] = if t.is_h2() {
            &[]
        } else {
            &[("host", "localhost")]
        };
        let get = |path: &str| request(&target(t, "localhost", path), fields, false);
        let r = f.send(get("/old/x?q=1")).await;
        assert_eq!(r.status, 200, "{t:?}");
        assert_eq!(r.json()["path"], "/new/x", "{t:?}");
        assert_eq!(r.seen("host").as_deref(), Some("internal.example"), "{t:?}");
        assert_eq!(
            r.seen("x-forwarded-host").as_deref(),
            Some("localhost"),
            "{t:?}"
        );
        let r = f.send(get("/one")).await;
        assert_eq!(r.json()["path"], "/two", "{t:?}");
        assert_eq!(r.seen("host").as_deref(), Some("localhost"), "{t:?}");
    }
}

#[tokio::test]
async fn a_redirect_route_answers_with_its_location_and_an_answer_route_with_its_status() {
    for t in Transport::ALL {
        let pod = TestBackend::echo("pod").await;
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"{}\"]\n\
             [[route]]\npath_prefix = \"/\"\nbackend = \"app\"\n\
             [[route]]\npath_prefix = \"/old\"\nredirect = {{ scheme = \"https\", status = 301 }}\n\
             [[route]]\npath_prefix = \"/docs\"\n\
             redirect = {{ hostname = \"docs.example.com\", prefix = \"/v2\", status = 308 }}\n\
             [[route]]\npath = \"/broken\"\nanswer = 500\n",
            pod.addr
        );
        let f = Front::start(t, &cfg).await;
        let fields: &[(&str, &str)] = if t.is_h2() {
            &[]
        } else {
            &[("host", "localhost")]
        };
        let get = |path: &str| request(&target(t, "localhost", path), fields, false);
        let r = f.send(get("/old/x?q=1")).await;
        assert_eq!(r.status, 301, "{t:?}");
        assert_eq!(
            r.headers["location"], "https://localhost/old/x?q=1",
            "{t:?}"
        );
        assert_eq!(
            r.headers["content-length"],
            r.body.len().to_string(),
            "{t:?}"
        );
        // No scheme set: the one the request came with, over TLS or not.
        let scheme = match t {
            Transport::H1Tls | Transport::H2Tls => "https",
            Transport::H1 | Transport::H2c => "http",
        };
        let r = f.send(get("/docs/a/b")).await;
        assert_eq!(r.status, 308, "{t:?}");
        assert_eq!(
            r.headers["location"],
            format!("{scheme}://docs.example.com/v2/a/b"),
            "{t:?}"
        );
        // A request with a body gets the redirect too, without the body going anywhere.
        let post = request(&target(t, "localhost", "/docs"), fields, true);
        let r = f.send(post).await;
        assert_eq!(r.status, 308, "{t:?}");
        assert_eq!(
            r.headers["location"],
            format!("{scheme}://docs.example.com/v2"),
            "{t:?}"
        );
        let r = f.send(get("/broken")).await;
        assert_eq!(r.status, 500, "{t:?}");
        assert!(r.headers.get("location").is_none(), "{t:?}");
        assert_eq!(f.send(get("/broken/x")).await.pod(), "pod", "{t:?}: exact");
        assert_eq!(f.send(get("/other")).await.pod(), "pod", "{t:?}");
    }
}

#[tokio::test]
async fn a_head_request_to_a_redirect_route_gets_the_head_and_no_content() {
    use tokio::io::AsyncWriteExt;
    for t in Transport::ALL {
        let pod = TestBackend::echo("pod").await;
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nname = \"app\"\nendpoints = [\"{}\"]\n\
             [[route]]\npath_prefix = \"/\"\nbackend = \"app\"\n\
             [[route]]\npath_prefix = \"/old\"\nredirect = {{ scheme = \"https\", status = 301 }}\n",
            pod.addr
        );
        let f = Front::start(t, &cfg).await;
        if t.is_h2() {
            let mut req = request(&target(t, "localhost", "/old"), &[], false);
            *req.method_mut() = http::Method::HEAD;
            let r = f.send(req).await;
            assert_eq!(r.status, 301, "{t:?}");
            assert_eq!(r.headers["location"], "https://localhost/old", "{t:?}");
            assert!(r.body.is_empty(), "{t:?}: {:?}", r.body);
            continue;
        }
        // Pipelined on one connection: the second answer must start right after the
        // first one's head, or the client would read its content as the next answer.
        let mut s = f.h1().await;
        s.write_all(
            b"HEAD /old HTTP/1.1\r\nHost: localhost\r\n\r\n\
              GET /old/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        let mut raw = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut raw).await;
        let raw = String::from_utf8_lossy(&raw);
        let (first, rest) = raw.split_once("\r\n\r\n").expect("a head");
        assert!(first.starts_with("HTTP/1.1 301 "), "{t:?}: {raw}");
        assert!(
            first
                .lines()
                .any(|l| l == "location: https://localhost/old"),
            "{t:?}: {raw}"
        );
        assert!(rest.starts_with("HTTP/1.1 301 "), "{t:?}: {raw}");
        assert!(
            rest.contains("location: https://localhost/old/x\r\n"),
            "{t:?}: {raw}"
        );
    }
}
