//! Criterion benches for the pure hot paths: table lookup and build, cookie sign and
//! verify, route match, and the whole per-request affinity decision without I/O.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use tether::affinity::{self, cookie, Claims, KeyRing, SessionId};
use tether::backend::{Backend, EndpointSpec, EndpointState};
use tether::balance::{hash, Member, Ring};
use tether::clock::Clock;
use tether::config::{Config, KeyMaterial, RouteSettings};
use tether::proxy::route::RouteTable;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("app-7d9f8b6c4-{i:05}")).collect()
}

fn members(names: &[String]) -> Vec<Member<'_>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Member {
            identity: n,
            weight: 1,
            index: i as u32,
        })
        .collect()
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_lookup");
    for n in [10, 100, 1_000, 10_000] {
        let names = names(n);
        let r = Ring::build(&members(&names));
        let mut k = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            b.iter(|| {
                k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(r.owner(black_box(k)))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("ring_build");
    g.sample_size(10);
    for n in [10, 100, 1_000, 10_000] {
        let names = names(n);
        let m = members(&names);
        g.bench_with_input(BenchmarkId::from_parameter(n), &m, |b, m| {
            b.iter(|| black_box(Ring::build(black_box(m))))
        });
    }
    g.finish();
}

fn keys() -> KeyRing {
    KeyRing::from_config(&[KeyMaterial {
        id: "k1".into(),
        secret: vec![42; 32],
        file: None,
    }])
}

fn cookies(c: &mut Criterion) {
    let keys = keys();
    let claims = Claims {
        session: SessionId([7; 16]),
        endpoint_token: 0x0123_4567_89ab_cdef,
        issued: 1_790_000_000,
        placed: 1_790_000_000,
        seen: 1_790_000_000,
    };
    c.bench_function("cookie_sign", |b| {
        b.iter(|| black_box(cookie::encode(keys.signer(), black_box(&claims))))
    });
    let value = cookie::encode(keys.signer(), &claims);
    c.bench_function("cookie_verify", |b| {
        b.iter(|| black_box(cookie::decode(&keys, black_box(&value))))
    });
    c.bench_function("session_hash", |b| {
        b.iter(|| black_box(hash::session(black_box(&[9; 16]))))
    });
}

fn routes(c: &mut Criterion) {
    let r = |host: Option<&str>, p: &str, backend| RouteSettings {
        host: host.map(Into::into),
        path_prefix: p.into(),
        to: tether::config::RouteTo::Backend(backend),
        matches: Default::default(),
        filters: Default::default(),
    };
    let table = RouteTable::new(&[
        r(None, "/", 0),
        r(None, "/static", 1),
        r(Some("api.example.com"), "/v1", 2),
        r(Some("api.example.com"), "/v2", 3),
        r(Some("app.example.com"), "/", 4),
        r(Some("app.example.com"), "/admin", 5),
    ]);
    c.bench_function("route_match", |b| {
        b.iter(|| {
            black_box(table.find(
                black_box(Some(b"api.example.com:443".as_slice())),
                black_box("/v2/users/42"),
            ))
        })
    });
}

fn decision(c: &mut Criterion) {
    let config = Config::parse(
        "[[backend]]\nname='app'\nendpoints=['127.0.0.1:1']\n",
        "bench",
        Path::new("."),
    )
    .expect("bench config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let keys = Arc::new(keys());
    let settings = config.backends[0].clone();
    let backend = Backend::with_clock(
        settings.clone(),
        keys.clone(),
        None,
        Clock::at(1_790_000_000),
    );
    backend.publish(
        (0..100u16)
            .map(|i| EndpointSpec {
                identity: format!("app-{i}").into(),
                address: SocketAddr::from(([10, 0, 0, 1], 8000 + i)),
                weight: 1,
                state: EndpointState::Ready,
                h2c: false,
            })
            .collect(),
    );
    let snapshot = backend.snapshot();
    let affinity = &settings.affinity;
    // 100,000 live sessions placed through the real path: the per-request cost must not
    // depend on how many sessions exist (tether keeps no per-session state).
    let mut value = String::new();
    for _ in 0..100_000 {
        let now = backend.clock().now();
        let d = affinity::decide(&keys, &snapshot, None, affinity, now);
        let i = d.candidates(&snapshot).as_slice()[0];
        d.commit(i, &snapshot);
        value = d.cookie_value(&keys, i, &snapshot);
    }
    let now = backend.clock().now();
    assert_eq!(snapshot.sessions.live(now.unix), 100_000);
    eprintln!(
        "live sessions: {}; server-side bytes per live session: 0 (counters are per endpoint: {} bytes each, {} bytes for this backend of 100 endpoints)",
        snapshot.sessions.live(now.unix),
        std::mem::size_of::<tether::balance::SessionCounter>(),
        101 * std::mem::size_of::<tether::balance::SessionCounter>(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("_ga=GA1.2.3; theme=dark; tether={value}; lang=en"))
            .expect("header"),
    );
    c.bench_function("decide_sticky_100_endpoints_100k_sessions", |b| {
        b.iter(|| {
            let d = affinity::decide(
                &keys,
                &snapshot,
                affinity::cookie_values(black_box(&headers), "tether"),
                affinity,
                backend.clock().now(),
            );
            black_box(d.candidates(&snapshot))
        })
    });
    let empty = HeaderMap::new();
    c.bench_function("decide_new_bounded_100_endpoints_100k_sessions", |b| {
        b.iter(|| {
            let d = affinity::decide(
                &keys,
                &snapshot,
                affinity::cookie_values(black_box(&empty), "tether"),
                affinity,
                backend.clock().now(),
            );
            black_box(d.candidates(&snapshot))
        })
    });
}

criterion_group!(benches, ring, cookies, routes, decision);
criterion_main!(benches);
