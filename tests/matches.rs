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
