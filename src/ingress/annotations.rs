//! ingress-nginx annotations → tether affinity, with a verdict for each annotation.
//!
//! This is the only place that knows what `nginx.ingress.kubernetes.io/*` annotations
//! mean. [`map`] reads an Ingress's annotations and returns the affinity they ask for
//! ([`Affinity`], independent of how it is later written: Gateway API
//! `sessionPersistence` or tether.toml) and one [`Finding`] per annotation saying how it
//! was honoured. ingress-nginx's behaviour is summarised in each reason, so the report
//! reads as a plan for the move.

use std::collections::BTreeMap;

/// The prefix of ingress-nginx annotations.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// ingress-nginx's default affinity cookie name.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// How an annotation (or an Ingress field) was carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Same behaviour in tether.
    Mapped,
    /// Carried over with a difference the reason names.
    Approximated,
    /// Not carried over; the reason says why and what to do.
    Unsupported,
    /// Not an ingress-nginx annotation: listed, not interpreted.
    NotIngressNginx,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Mapped => "mapped",
            Verdict::Approximated => "approximated",
            Verdict::Unsupported => "not supported",
            Verdict::NotIngressNginx => "not ingress-nginx",
        })
    }
}

/// The verdict on one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The full annotation name.
    pub annotation: String,
    /// Its value.
    pub value: String,
    /// How it was carried over.
    pub verdict: Verdict,
    /// What tether does with it, or why it cannot.
    pub how: String,
}

/// What places a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// tether's signed cookie (`affinity: cookie`).
    Cookie,
    /// Consistent hashing on a request header (`upstream-hash-by: $http_x_foo`), with
    /// the header name in its usual spelling (`X-Foo`).
    Header(String),
    /// Consistent hashing on the client address (`upstream-hash-by: $remote_addr`).
    ClientIp,
}

/// The affinity an Ingress's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// What places a session.
    pub key: Key,
    /// Cookie name (`session-cookie-name`, default `INGRESSCOOKIE`).
    pub cookie_name: String,
    /// `session-cookie-path`; `None` lets the path follow the route (GEP-1619).
    pub cookie_path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-samesite`, lowercase as tether.toml spells it.
    pub same_site: Option<String>,
    /// `session-cookie-secure`.
    pub secure: Option<bool>,
    /// Session lifetime in seconds (`session-cookie-max-age`, else `-expires`): the
    /// cookie's Max-Age and, in tether, a signed absolute timeout.
    pub lifetime: Option<u64>,
    /// tether's `rebalance` for `affinity-mode`.
    pub rebalance: Option<&'static str>,
}

/// The affinity an Ingress asks for, and the verdict on every annotation it carries.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// `None` when the annotations ask for no affinity.
    pub affinity: Option<Affinity>,
    /// One per annotation, in name order.
    pub findings: Vec<Finding>,
}

/// Annotations that only mean something with `affinity: cookie`.
const COOKIE_ONLY: &[&str] = &[
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-secure",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-change-on-failure",
];

/// Reads an Ingress's annotations.
pub fn map(annotations: &BTreeMap<String, String>) -> Mapping {
    let nginx = |name: &str| {
        annotations
            .get(&format!("{PREFIX}{name}"))
            .map(|v| v.trim())
    };
    let cookie = nginx("affinity") == Some("cookie");
    let mut affinity = cookie.then(|| Affinity {
        key: Key::Cookie,
        cookie_name: DEFAULT_COOKIE.into(),
        cookie_path: None,
        domain: None,
        same_site: None,
        secure: None,
        lifetime: None,
        rebalance: None,
    });
    let mut findings = Vec::new();
    for (name, value) in annotations {
        let Some(short) = name.strip_prefix(PREFIX) else {
            findings.push(finding(
                name,
                value,
                Verdict::NotIngressNginx,
                "not an ingress-nginx annotation: not interpreted",
            ));
            continue;
        };
        let v = value.trim();
        let (verdict, how) = match (short, affinity.as_mut()) {
            ("affinity", Some(_)) => (
                Verdict::Mapped,
                "sessionPersistence type Cookie on every rule; tether's signed cookie (HMAC, key id, \
                 reveals nothing about the pod) replaces nginx's unsigned one"
                    .to_string(),
            ),
            ("affinity", None) => (
                Verdict::Unsupported,
                format!("only \"cookie\" exists in ingress-nginx; {v:?} gives no affinity"),
            ),
            (s, None) if COOKIE_ONLY.contains(&s) => (
                Verdict::Unsupported,
                "ignored: only meaningful with affinity: cookie (ingress-nginx ignores it too)"
                    .into(),
            ),
            ("affinity-mode", Some(a)) => match v {
                "balanced" => {
                    a.rebalance = Some("balanced");
                    (
                        Verdict::Mapped,
                        "TOML rebalance = \"balanced\": on scale-out, sessions whose ring owner is a \
                         new pod move to it (nginx moved almost all); Gateway API has no field. \
                         Consider tether's default \"gradual\", which moves only idle sessions"
                            .into(),
                    )
                }
                "persistent" => {
                    a.rebalance = Some("persistent");
                    (
                        Verdict::Approximated,
                        "TOML rebalance = \"persistent\": live sessions never move while their pod \
                         serves, new pods fill through the load bound; unlike nginx, a session \
                         whose pod is gone is re-pinned on the ring, not to a random pod; \
                         Gateway API has no field"
                            .into(),
                    )
                }
                other => (
                    Verdict::Unsupported,
                    format!("unknown mode {other:?} (ingress-nginx knows balanced and persistent)"),
                ),
            },
            ("session-cookie-name", Some(a)) => {
                if valid_cookie_name(v) {
                    a.cookie_name = v.into();
                    (
                        Verdict::Mapped,
                        "sessionPersistence.sessionName; TOML cookie".into(),
                    )
                } else {
                    (
                        Verdict::Unsupported,
                        format!(
                            "{v:?} is not a valid cookie name (RFC 6265 token); {DEFAULT_COOKIE} is used"
                        ),
                    )
                }
            }
            ("session-cookie-path", Some(a)) => {
                if v.starts_with('/') && !v.contains(';') {
                    a.cookie_path = Some(v.into());
                    (
                        Verdict::Approximated,
                        "TOML path; Gateway API has no field: GEP-1619 derives the cookie path \
                         from each rule's path match"
                            .into(),
                    )
                } else {
                    (
                        Verdict::Unsupported,
                        format!("{v:?} is not a cookie path (must start with '/')"),
                    )
                }
            }
            ("session-cookie-domain", Some(a)) => {
                a.domain = Some(v.into());
                (
                    Verdict::Approximated,
                    "TOML only (domain); Gateway API has no field".into(),
                )
            }
            ("session-cookie-samesite", Some(a)) => match v.to_ascii_lowercase().as_str() {
                s @ ("lax" | "strict" | "none") => {
                    a.same_site = Some(s.to_string());
                    let extra = if s == "none" {
                        "; with None, tether requires secure = true (browsers drop SameSite=None \
                         without Secure)"
                    } else {
                        ""
                    };
                    (
                        Verdict::Approximated,
                        format!("TOML only (same_site = {s:?}); Gateway API has no field{extra}"),
                    )
                }
                _ => (
                    Verdict::Unsupported,
                    format!("{v:?} is not Lax, Strict or None"),
                ),
            },
            ("session-cookie-secure", Some(a)) => match v {
                "true" | "false" => {
                    a.secure = Some(v == "true");
                    (
                        Verdict::Approximated,
                        "TOML only (secure); Gateway API has no field (tether sets Secure by \
                         default behind TLS)"
                            .into(),
                    )
                }
                _ => (Verdict::Unsupported, format!("{v:?} is not true or false")),
            },
            ("session-cookie-max-age", Some(a)) => match v.parse::<u64>() {
                Ok(secs) if secs > 0 => capped_lifetime(
                    a,
                    secs,
                    Verdict::Mapped,
                    "sessionPersistence.absoluteTimeout with cookieConfig.lifetimeType \
                     Permanent; TOML max_age and absolute_timeout (tether also ends the \
                     session server-side, which nginx left to the browser)",
                ),
                _ => (
                    Verdict::Unsupported,
                    format!("{v:?} is not a positive number of seconds"),
                ),
            },
            ("session-cookie-expires", Some(a)) => {
                let max_age = nginx("session-cookie-max-age")
                    .and_then(|m| m.parse::<u64>().ok())
                    .is_some_and(|m| m > 0);
                match v.parse::<u64>() {
                    Ok(_) if max_age => (
                        Verdict::Approximated,
                        "superseded by session-cookie-max-age (browsers prefer Max-Age too)".into(),
                    ),
                    Ok(secs) if secs > 0 => capped_lifetime(
                        a,
                        secs,
                        Verdict::Approximated,
                        "as a Max-Age of the same length: sessionPersistence.absoluteTimeout \
                         (Permanent); TOML max_age and absolute_timeout",
                    ),
                    _ => (
                        Verdict::Unsupported,
                        format!("{v:?} is not a positive number of seconds"),
                    ),
                }
            }
            ("session-cookie-change-on-failure", Some(_)) => match v {
                "true" => (
                    Verdict::Mapped,
                    "tether always re-pins a session whose pod fails or leaves, and rewrites \
                     its cookie"
                        .into(),
                ),
                "false" => (
                    Verdict::Approximated,
                    "tether re-pins a session whose pod fails or leaves anyway (nginx kept \
                     the cookie pointing at the failed pod)"
                        .into(),
                ),
                _ => (Verdict::Unsupported, format!("{v:?} is not true or false")),
            },
            ("upstream-hash-by", Some(_)) => (
                Verdict::Unsupported,
                "ignored: affinity: cookie takes precedence (as in ingress-nginx)".into(),
            ),
            ("upstream-hash-by", None) => match hash_key(v) {
                Some(key) => {
                    let how = match &key {
                        Key::Header(h) => format!(
                            "sessionPersistence type Header, sessionName {h}; TOML key = \
                             \"header:{h}\" (tether hashes the header on its ring with bounded \
                             load, and falls back to its cookie when the header is absent)"
                        ),
                        _ => "TOML key = \"client-ip\" (set trusted_proxies if tether runs \
                              behind a load balancer); Gateway API sessionPersistence has no \
                              client-address type, so the HTTPRoute carries none"
                            .into(),
                    };
                    let verdict = match key {
                        Key::Header(_) => Verdict::Mapped,
                        _ => Verdict::Approximated,
                    };
                    affinity = Some(Affinity {
                        key,
                        cookie_name: DEFAULT_COOKIE.into(),
                        cookie_path: None,
                        domain: None,
                        same_site: None,
                        secure: None,
                        lifetime: None,
                        rebalance: None,
                    });
                    (verdict, how)
                }
                None => (
                    Verdict::Unsupported,
                    format!(
                        "tether hashes a request header or the client address; {v:?} is neither"
                    ),
                ),
            },
            (other, _) => (
                Verdict::Unsupported,
                format!("ingress-nginx annotation {other:?} has no tether equivalent yet"),
            ),
        };
        findings.push(finding(name, value, verdict, &how));
    }
    Mapping { affinity, findings }
}

fn finding(annotation: &str, value: &str, verdict: Verdict, how: &str) -> Finding {
    Finding {
        annotation: annotation.into(),
        value: value.into(),
        verdict,
        how: how.into(),
    }
}

/// An RFC 6265 cookie name (a token), as tether.toml accepts it.
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The key an `upstream-hash-by` value hashes, when tether can hash it: one nginx
/// variable, `$http_NAME` (a header, dashes written as underscores) or the client
/// address.
fn hash_key(value: &str) -> Option<Key> {
    match value {
        "$remote_addr" | "$binary_remote_addr" => Some(Key::ClientIp),
        v => {
            let name = v.strip_prefix("$http_")?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            let header = name
                .split('_')
                .map(|part| {
                    let mut c = part.chars();
                    c.next()
                        .map(|f| {
                            f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
                        })
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            Some(Key::Header(header))
        }
    }
}

/// A session lifetime of `secs`, at most tether's longest duration (one year, so the
/// Gateway API and TOML outputs say the same): `verdict` and `how` when it fits, an
/// approximation saying so when it had to be shortened.
fn capped_lifetime(a: &mut Affinity, secs: u64, verdict: Verdict, how: &str) -> (Verdict, String) {
    let cap = crate::config::MAX_DURATION.as_secs();
    a.lifetime = Some(secs.min(cap));
    if secs > cap {
        (
            Verdict::Approximated,
            format!("{how}; shortened to {cap} s (one year), the longest lifetime tether signs"),
        )
    } else {
        (verdict, how.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn verdict(m: &Mapping, short: &str) -> Verdict {
        m.findings
            .iter()
            .find(|f| f.annotation == format!("{PREFIX}{short}"))
            .unwrap_or_else(|| panic!("no finding for {short}: {:?}", m.findings))
            .verdict
    }

    #[test]
    fn cookie_affinity_takes_name_path_and_max_age() {
        let m = map(&annotations(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-expires", "3600"),
            ("affinity-mode", "persistent"),
        ]));
        let a = m.affinity.unwrap();
        assert_eq!(a.key, Key::Cookie);
        assert_eq!(a.cookie_name, "route");
        assert_eq!(a.cookie_path.as_deref(), Some("/"));
        assert_eq!(a.lifetime, Some(172_800), "max-age wins over expires");
        assert_eq!(a.rebalance, Some("persistent"));
        assert_eq!(m.findings.len(), 6);
    }

    #[test]
    fn a_lifetime_past_one_year_is_shortened_and_reported_as_approximated() {
        let m = map(&annotations(&[
            ("affinity", "cookie"),
            ("session-cookie-max-age", "34560000"),
        ]));
        assert_eq!(verdict(&m, "session-cookie-max-age"), Verdict::Approximated);
        assert_eq!(m.affinity.unwrap().lifetime, Some(31_536_000));
    }

    #[test]
    fn upstream_hash_by_a_header_becomes_header_affinity() {
        let m = map(&annotations(&[("upstream-hash-by", "$http_x_session_id")]));
        assert_eq!(
            m.affinity.as_ref().unwrap().key,
            Key::Header("X-Session-Id".into())
        );
        assert_eq!(verdict(&m, "upstream-hash-by"), Verdict::Mapped);
        let ip = map(&annotations(&[("upstream-hash-by", "$binary_remote_addr")]));
        assert_eq!(ip.affinity.unwrap().key, Key::ClientIp);
        let uri = map(&annotations(&[("upstream-hash-by", "$request_uri")]));
        assert!(uri.affinity.is_none());
        assert_eq!(verdict(&uri, "upstream-hash-by"), Verdict::Unsupported);
    }

    #[test]
    fn cookie_settings_without_affinity_and_unknown_annotations_are_reported() {
        let mut a = annotations(&[("session-cookie-name", "x"), ("rewrite-target", "/")]);
        a.insert("kubernetes.io/ingress.class".into(), "nginx".into());
        let m = map(&a);
        assert!(m.affinity.is_none());
        assert_eq!(verdict(&m, "session-cookie-name"), Verdict::Unsupported);
        assert_eq!(verdict(&m, "rewrite-target"), Verdict::Unsupported);
        assert_eq!(m.findings.len(), 3);
        assert!(m
            .findings
            .iter()
            .any(|f| f.verdict == Verdict::NotIngressNginx));
    }
}
