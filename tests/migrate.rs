//! `tether migrate` as a library: what an ingress-nginx Ingress becomes, checked against
//! the Gateway API v1.6.1 CRD schemas (tests/data/gateway-api) and tether's own config
//! parser.
//!
//! The CRDs' `openAPIV3Schema`s are structural OpenAPI v3 schemas, which JSON Schema
//! validators read as they are: `x-kubernetes-*` keys are unknown keywords and ignored.
//! The CEL rules in `x-kubernetes-validations` (e.g. "a Service backendRef needs a port")
//! cannot be checked here. An API server prunes fields its schema does not name instead
//! of rejecting them; to catch such fields the schemas are made strict
//! (`additionalProperties: false` on every object that lists its properties).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use tether::gateway::api::*;
use tether::ingress::annotations::Verdict;
use tether::ingress::migrate::{migrate, Error, Migration, Options};

const SHOP: &str = include_str!("../examples/ingress-nginx/shop.yaml");

/// The `v1` schema of a CRD file, made strict.
fn schema(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gateway-api")
        .join(file);
    let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        // XBackendTrafficPolicy (experimental) has only v1alpha1.
        .find(|v| v["name"] == "v1" || v["name"] == "v1alpha1")
        .unwrap();
    let mut s = version["schema"]["openAPIV3Schema"].clone();
    strict(&mut s);
    s
}

fn strict(s: &mut Value) {
    match s {
        Value::Object(o) => {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            // `metadata` is `type: object` without properties in a CRD: the API server
            // checks it, not the CRD.
            for v in o.values_mut() {
                strict(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

fn schema_for(kind: &str) -> Value {
    schema(match kind {
        "GatewayClass" => "gateway.networking.k8s.io_gatewayclasses.yaml",
        "Gateway" => "gateway.networking.k8s.io_gateways.yaml",
        "HTTPRoute" => "gateway.networking.k8s.io_httproutes.yaml",
        "ReferenceGrant" => "gateway.networking.k8s.io_referencegrants.yaml",
        "XBackendTrafficPolicy" => "gateway.networking.x-k8s.io_xbackendtrafficpolicies.yaml",
        other => panic!("no CRD for {other}"),
    })
}

/// Panics with every schema violation of `object`.
fn validate(object: &Value) {
    let kind = object["kind"].as_str().expect("kind");
    let validator = jsonschema::validator_for(&schema_for(kind)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} violates its CRD: {errors:#?}\n{object:#}"
    );
}

/// Every object `migrate` prints, read back from its YAML output.
fn printed_objects(m: &Migration) -> Vec<Value> {
    use serde::Deserialize;
    let yaml = m.gateway_yaml().unwrap();
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn run(text: &str) -> Migration {
    migrate(text, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn ingress(annotations: &[(&str, &str)], spec: &str) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("    {k}: {v:?}\n"));
    }
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  namespace: team\n  annotations:\n{a}spec:\n{spec}"
    )
}

const TWO_HOSTS: &str = "  ingressClassName: nginx
  defaultBackend:
    service: {name: fallback, port: {number: 8080}}
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: a, port: {number: 80}}}}
  - host: '*.b.example.com'
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: b, port: {name: web}}}}
  tls:
  - hosts: [a.example.com, '*.b.example.com']
    secretName: certs
";

/// A sample of what `migrate` meets: the seed-style Ingress, header affinity, client-IP
/// affinity, several hosts with wildcard, default backend and TLS, and no affinity.
fn inputs() -> Vec<String> {
    vec![
        SHOP.to_string(),
        ingress(
            &[(
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$http_x_user",
            )],
            TWO_HOSTS,
        ),
        ingress(
            &[(
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$remote_addr",
            )],
            TWO_HOSTS,
        ),
        ingress(
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                (
                    "nginx.ingress.kubernetes.io/session-cookie-samesite",
                    "None",
                ),
                (
                    "nginx.ingress.kubernetes.io/session-cookie-domain",
                    ".example.com",
                ),
                ("nginx.ingress.kubernetes.io/session-cookie-expires", "600"),
                ("nginx.ingress.kubernetes.io/affinity-mode", "balanced"),
                (
                    "nginx.ingress.kubernetes.io/session-cookie-change-on-failure",
                    "true",
                ),
            ],
            TWO_HOSTS,
        ),
        ingress(&[("kubernetes.io/ingress.class", "nginx")], TWO_HOSTS),
    ]
}

#[test]
fn a_sticky_ingress_becomes_an_httproute_with_cookie_persistence_and_an_https_gateway() {
    let m = run(SHOP);
    assert_eq!(m.gateways.len(), 1);
    let g = &m.gateways[0];
    assert_eq!(g.metadata.name.as_deref(), Some("nginx"));
    assert_eq!(g.metadata.namespace.as_deref(), Some("web"));
    assert_eq!(g.spec.gateway_class_name, "tether");
    let listeners: Vec<_> = g
        .spec
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.port,
                l.protocol.as_str(),
                l.hostname.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("http", 80, "HTTP", None),
            (
                "https-shop-example-com",
                443,
                "HTTPS",
                Some("shop.example.com")
            )
        ]
    );
    let tls = g.spec.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.certificate_refs[0].name, "shop-tls");

    assert_eq!(m.routes.len(), 1);
    let r = &m.routes[0];
    assert_eq!(r.metadata.name.as_deref(), Some("shop"));
    assert_eq!(r.metadata.namespace.as_deref(), Some("web"));
    assert_eq!(r.spec.parent_refs[0].name, "nginx");
    assert_eq!(r.spec.hostnames, ["shop.example.com"]);
    assert_eq!(
        r.spec.rules.len(),
        2,
        "one rule per path: each its own session"
    );
    let paths: Vec<_> = r
        .spec
        .rules
        .iter()
        .map(|rule| {
            let p = rule.matches[0].path.as_ref().unwrap();
            (p.kind, p.value.as_deref().unwrap())
        })
        .collect();
    assert_eq!(
        paths,
        [
            (Some(PathMatchType::PathPrefix), "/"),
            (Some(PathMatchType::PathPrefix), "/api")
        ]
    );
    assert_eq!(r.spec.rules[0].backend_refs[0].name, "storefront");
    assert_eq!(r.spec.rules[0].backend_refs[0].port, Some(80));
    assert_eq!(r.spec.rules[1].backend_refs[0].name, "api");
    assert_eq!(r.spec.rules[1].backend_refs[0].port, None, "named port");
    for rule in &r.spec.rules {
        let sp = rule.session_persistence.as_ref().unwrap();
        assert_eq!(sp.kind, Some(SessionPersistenceType::Cookie));
        assert_eq!(sp.session_name.as_deref(), Some("SHOPSESSION"));
        // 172800 s: six digits would break the CRD's `[0-9]{1,5}` pattern.
        assert_eq!(sp.absolute_timeout.as_deref(), Some("48h"));
        assert_eq!(
            sp.cookie_config.as_ref().unwrap().lifetime_type,
            Some(LifetimeType::Permanent)
        );
    }
    let row = |item: &str| {
        m.rows
            .iter()
            .find(|r| r.item.ends_with(item))
            .unwrap_or_else(|| panic!("no row {item}: {:#?}", m.rows))
    };
    assert!(row("port.name").how.contains("named port: set the number"));
    assert_eq!(row("proxy-body-size").verdict, Verdict::Unsupported);
    assert_eq!(row("session-cookie-max-age").verdict, Verdict::Mapped);
}

#[test]
fn every_gateway_and_httproute_printed_validates_against_the_v1_6_1_crds() {
    let mut seen = 0;
    for input in inputs() {
        for object in printed_objects(&run(&input)) {
            validate(&object);
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} objects checked");
}

#[test]
fn the_gateway_api_manifests_of_config_kubernetes_validate_against_the_v1_6_1_crds() {
    use serde::Deserialize;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/gateway");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object = Value::deserialize(doc).unwrap();
            if object["apiVersion"] == "gateway.networking.k8s.io/v1" {
                validate(&object);
                kinds.push(object["kind"].as_str().unwrap().to_string());
            }
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["Gateway", "GatewayClass", "HTTPRoute"]);
}

#[test]
fn typed_structs_have_only_fields_the_crd_schemas_define_and_round_trip() {
    // Every field of every struct set, so each one meets the strict schema.
    let route = HTTPRoute::new(
        "r",
        HTTPRouteSpec {
            parent_refs: vec![ParentReference {
                group: Some(GROUP.into()),
                kind: Some("Gateway".into()),
                namespace: Some("ns".into()),
                name: "g".into(),
                section_name: Some("http".into()),
                port: Some(80),
            }],
            hostnames: vec!["a.example.com".into()],
            rules: vec![HTTPRouteRule {
                name: Some("rule-a".into()),
                matches: vec![HTTPRouteMatch {
                    path: Some(HTTPPathMatch {
                        kind: Some(PathMatchType::Exact),
                        value: Some("/a".into()),
                    }),
                    headers: vec![HTTPHeaderMatch {
                        kind: Some("Exact".into()),
                        name: "x-a".into(),
                        value: "1".into(),
                    }],
                    ..Default::default()
                }],
                backend_refs: vec![HTTPBackendRef {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: "svc".into(),
                    namespace: Some("other".into()),
                    port: Some(8080),
                    weight: Some(3),
                    ..Default::default()
                }],
                session_persistence: Some(SessionPersistence {
                    session_name: Some("s".into()),
                    absolute_timeout: Some("1h".into()),
                    kind: Some(SessionPersistenceType::Cookie),
                    cookie_config: Some(CookieConfig {
                        lifetime_type: Some(LifetimeType::Permanent),
                    }),
                }),
                ..Default::default()
            }],
        },
    );
    let gateway = Gateway::new(
        "g",
        GatewaySpec {
            gateway_class_name: "tether".into(),
            listeners: vec![Listener {
                name: "https".into(),
                hostname: Some("*.example.com".into()),
                port: 443,
                protocol: "HTTPS".into(),
                tls: Some(ListenerTls {
                    mode: Some("Terminate".into()),
                    certificate_refs: vec![SecretObjectReference {
                        group: Some(String::new()),
                        kind: Some("Secret".into()),
                        name: "certs".into(),
                        namespace: Some("ns".into()),
                    }],
                }),
                allowed_routes: Some(AllowedRoutes {
                    namespaces: Some(RouteNamespaces {
                        from: Some("All".into()),
                        ..RouteNamespaces::default()
                    }),
                    ..AllowedRoutes::default()
                }),
            }],
        },
    );
    let class = GatewayClass::new(
        "tether",
        GatewayClassSpec {
            controller_name: "tether.dev/gateway".into(),
            description: Some("tether".into()),
        },
    );
    let grant = ReferenceGrant::new(
        "grant",
        ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: GROUP.into(),
                kind: "HTTPRoute".into(),
                namespace: "ns".into(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: Some("svc".into()),
            }],
        },
    );
    for object in [
        serde_json::to_value(&route).unwrap(),
        serde_json::to_value(&gateway).unwrap(),
        serde_json::to_value(&class).unwrap(),
        serde_json::to_value(&grant).unwrap(),
    ] {
        assert_eq!(object["apiVersion"], "gateway.networking.k8s.io/v1");
        validate(&object);
    }
    // A misspelt field is caught: the strict schema is not vacuous.
    let mut bad = serde_json::to_value(&route).unwrap();
    bad["spec"]["rules"][0]["sessionPersistence"]["cookieName"] = json!("x");
    let validator = jsonschema::validator_for(&schema_for("HTTPRoute")).unwrap();
    assert!(!validator.is_valid(&bad));

    let back: HTTPRoute = serde_json::from_value(serde_json::to_value(&route).unwrap()).unwrap();
    assert_eq!(back.spec, route.spec);
    let back: Gateway =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&gateway).unwrap()).unwrap();
    assert_eq!(back.spec, gateway.spec);
    // What an API server sends, with fields tether does not read, still deserialises.
    let served = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns", "generation": 3},
        "spec": {"parentRefs": [{"name": "g"}], "rules": [{
            "filters": [{"type": "RequestHeaderModifier"}],
            "timeouts": {"request": "10s"},
            "backendRefs": [{"name": "svc", "port": 80}],
            "sessionPersistence": {"type": "Header", "sessionName": "X-User"}}]},
        "status": {"parents": []}
    });
    let r: HTTPRoute = serde_json::from_value(served).unwrap();
    let sp = r.spec.rules[0].session_persistence.as_ref().unwrap();
    assert_eq!(sp.kind, Some(SessionPersistenceType::Header));
}

#[test]
fn the_printed_toml_is_a_config_tether_accepts_with_a_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k1"),
        "UkVQTEFDRS1NRS1XSVRILVRFVEhFUi1LRVlHRU4tT1VUUFVU",
    )
    .unwrap();
    for input in inputs() {
        let m = run(&input);
        let toml = format!("{}\n[[keys]]\nid = \"k1\"\nsecret_file = \"k1\"\n", m.toml);
        let config = tether::config::Config::parse(&toml, "migrated.toml", dir.path())
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.keys.len(), 1);
        assert!(!config.routes.is_empty());
    }
    // The seed-style Ingress: the cookie as ingress-nginx set it.
    let m = run(SHOP);
    let config = tether::config::Config::parse(&m.toml, "migrated.toml", dir.path()).unwrap();
    let cookie = &config.backends[0].affinity.cookie;
    assert_eq!(cookie.name, "SHOPSESSION");
    assert_eq!(cookie.path, "/");
    assert_eq!(
        cookie.max_age,
        Some(std::time::Duration::from_secs(172_800))
    );
    assert_eq!(
        config.backends[0].affinity.rebalance,
        tether::config::Rebalance::Persistent
    );
    // SameSite=None needs Secure: written so tether accepts it.
    let m = run(&inputs()[3]);
    assert!(
        m.toml.contains("same_site = \"none\"\nsecure = true"),
        "{}",
        m.toml
    );
}

#[test]
fn unknown_nginx_annotations_are_unsupported_rows_and_hash_by_a_header_is_header_persistence() {
    let m = run(&ingress(
        &[
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$http_x_user_id",
            ),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("cert-manager.io/cluster-issuer", "letsencrypt"),
        ],
        TWO_HOSTS,
    ));
    let verdicts: BTreeMap<&str, Verdict> = m
        .rows
        .iter()
        .map(|r| (r.item.as_str(), r.verdict))
        .collect();
    assert_eq!(
        verdicts["nginx.ingress.kubernetes.io/rewrite-target"],
        Verdict::Unsupported
    );
    assert_eq!(
        verdicts["nginx.ingress.kubernetes.io/ssl-redirect"],
        Verdict::Unsupported
    );
    assert_eq!(
        verdicts["cert-manager.io/cluster-issuer"],
        Verdict::NotIngressNginx
    );
    assert_eq!(
        verdicts["nginx.ingress.kubernetes.io/upstream-hash-by"],
        Verdict::Mapped
    );
    let report = m.report();
    assert!(
        report.contains(
            "| team/app | nginx.ingress.kubernetes.io/rewrite-target | /$2 | not supported |"
        ),
        "{report}"
    );
    for route in &m.routes {
        for rule in &route.spec.rules {
            let sp = rule.session_persistence.as_ref().unwrap();
            assert_eq!(sp.kind, Some(SessionPersistenceType::Header));
            assert_eq!(sp.session_name.as_deref(), Some("X-User-Id"));
            assert!(sp.cookie_config.is_none());
        }
    }
    assert!(m.toml.contains("key = \"header:X-User-Id\""), "{}", m.toml);
}

#[test]
fn several_hosts_become_one_httproute_each_and_the_default_backend_a_catch_all_rule() {
    let m = run(&ingress(&[], TWO_HOSTS));
    let names: Vec<_> = m
        .routes
        .iter()
        .map(|r| (r.metadata.name.clone().unwrap(), r.spec.hostnames.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "app-a-example-com".to_string(),
                vec!["a.example.com".to_string()]
            ),
            (
                "app-wildcard-b-example-com".to_string(),
                vec!["*.b.example.com".to_string()]
            ),
            ("app-any-host".to_string(), vec![]),
        ]
    );
    let catch_all = &m.routes[2].spec.rules[0];
    assert!(catch_all.matches.is_empty());
    assert_eq!(catch_all.backend_refs[0].name, "fallback");
    let a = &m.routes[0].spec.rules;
    assert_eq!(
        a[0].matches[0].path.as_ref().unwrap().kind,
        Some(PathMatchType::Exact)
    );
    assert_eq!(
        a[1].matches[0].path.as_ref().unwrap().kind,
        Some(PathMatchType::PathPrefix),
        "ImplementationSpecific as a prefix"
    );
    assert!(m.rows.iter().any(|r| r.item.ends_with("pathType")
        && r.value == "ImplementationSpecific"
        && r.verdict == Verdict::Approximated));
    let https: Vec<_> = m.gateways[0]
        .spec
        .listeners
        .iter()
        .filter(|l| l.protocol == "HTTPS")
        .map(|l| l.hostname.clone().unwrap())
        .collect();
    assert_eq!(https, ["a.example.com", "*.b.example.com"]);
    // The TOML keeps the wildcard host (it used to drop it, routing every host there).
    assert!(m.toml.contains("host = \"*.b.example.com\""), "{}", m.toml);
}

#[test]
fn bad_input_names_the_document_and_the_field() {
    let options = Options::default();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
    let err = migrate(&format!("{svc}---\n{}", ingress(&[], "  rules:\n  - http:\n      paths:\n      - path: /\n        backend: {service: {name: a}}\n")), &options).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Field { index: 2, .. }), "{text}");
    assert!(
        text.contains("spec.rules[0].http.paths[0]") && text.contains("pathType"),
        "{text}"
    );

    let err = migrate(&format!("{svc}---\nkey: [unclosed\n"), &options).unwrap_err();
    assert!(matches!(err, Error::Yaml { index: 2, .. }), "{err}");

    let err = migrate(svc, &options).unwrap_err();
    assert!(matches!(err, Error::NoIngress { documents: 1 }), "{err}");

    let err = migrate("- a\n- b\n", &options).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("document 1: (document): not a mapping"),
        "{err}"
    );
}

#[test]
fn the_xbackendtrafficpolicy_struct_has_only_fields_its_crd_defines_and_round_trips() {
    // Every field set, so each one meets the strict schema.
    let policy = XBackendTrafficPolicy::new(
        "sessions",
        XBackendTrafficPolicySpec {
            target_refs: vec![LocalPolicyTargetReference {
                group: String::new(),
                kind: "Service".into(),
                name: "web".into(),
            }],
            session_persistence: Some(SessionPersistence {
                session_name: Some("SHOP".into()),
                absolute_timeout: Some("1h".into()),
                kind: Some(SessionPersistenceType::Cookie),
                cookie_config: Some(CookieConfig {
                    lifetime_type: Some(LifetimeType::Permanent),
                }),
            }),
        },
    );
    let object = serde_json::to_value(&policy).unwrap();
    assert_eq!(object["apiVersion"], "gateway.networking.x-k8s.io/v1alpha1");
    assert_eq!(object["kind"], "XBackendTrafficPolicy");
    validate(&object);
    // A misspelt field is caught: the strict schema is not vacuous.
    let mut bad = object.clone();
    bad["spec"]["targetRefs"][0]["namespace"] = json!("other");
    let validator = jsonschema::validator_for(&schema_for("XBackendTrafficPolicy")).unwrap();
    assert!(!validator.is_valid(&bad));
    let back: XBackendTrafficPolicy = serde_json::from_value(object).unwrap();
    assert_eq!(back.spec, policy.spec);
    // What an API server sends, with retryConstraint and status, still deserialises.
    let served = json!({
        "apiVersion": "gateway.networking.x-k8s.io/v1alpha1", "kind": "XBackendTrafficPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                 "retryConstraint": {"budget": {"percent": 20}}},
        "status": {"ancestors": []}
    });
    let p: XBackendTrafficPolicy = serde_json::from_value(served).unwrap();
    assert!(p.spec.session_persistence.is_none());
}
