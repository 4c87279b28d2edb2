//! Session affinity: reading the cookie, deciding where a session belongs, and telling
//! the backend and the client what happened.
//!
//! [`decide`] is the one place that turns a request's cookies into a [`Decision`]:
//! a valid cookie pins the session to its endpoint; anything else (absent, malformed,
//! forged, unknown key) is a new session. [`Decision::placement`] then says, for the
//! endpoint that actually answered, whether that was `new`, `sticky` or `failover`, which
//! endpoint the session came from, and whether the client needs a new cookie. Keeping the
//! fallback in one place is what makes the headers, the cookie and (later) the metrics
//! agree.

pub mod cookie;
pub mod keys;

use std::sync::Arc;

use http::HeaderMap;

pub use cookie::{Claims, Invalid, SessionId, Verified};
pub use keys::KeyRing;

use crate::backend::{Resolved, Snapshot};
use crate::balance::hash;
use crate::config::{CookieSettings, SameSite};

/// What happened to a session on this request; sent as `x-tether-affinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No valid cookie: a session was created.
    New,
    /// The session went to the endpoint it is pinned to.
    Sticky,
    /// The pinned endpoint is gone, down or refused: the session was re-pinned.
    Failover,
}

impl Outcome {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Sticky => "sticky",
            Outcome::Failover => "failover",
        }
    }
}

/// Where the request's cookie said the session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// No valid cookie.
    Fresh {
        /// Why a cookie that was present was not accepted.
        invalid: Option<Invalid>,
    },
    /// The cookie names an endpoint in the current snapshot.
    Pinned {
        /// Its index in the snapshot.
        endpoint: u32,
        /// The key that verified the cookie (0 = current signer).
        key_index: usize,
    },
    /// The cookie names an endpoint that left the table.
    Departed {
        /// Its identity, when remembered.
        previous: Option<Arc<str>>,
    },
}

/// The affinity decision for one request, made before any endpoint is tried.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The session (kept across failovers).
    pub session: SessionId,
    /// When the session started (unix seconds).
    pub issued: u64,
    /// Placement key on the ring.
    pub key: u64,
    /// What the cookie said.
    pub prior: Prior,
}

/// The outcome for the endpoint that actually serves the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    /// new, sticky or failover.
    pub outcome: Outcome,
    /// On failover, the identity of the endpoint the session came from.
    pub previous: Option<&'a str>,
    /// Whether the response must carry a new cookie (new session, re-pin, or a cookie
    /// signed with an older key).
    pub set_cookie: bool,
}

impl Decision {
    /// The endpoint the cookie pins the session to, if it is in the snapshot.
    pub fn pinned(&self) -> Option<u32> {
        match self.prior {
            Prior::Pinned { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    /// Whether this is a new session (no valid cookie).
    pub fn is_fresh(&self) -> bool {
        matches!(self.prior, Prior::Fresh { .. })
    }

    /// What it means for the session if endpoint `actual` serves the request.
    pub fn placement<'a>(&'a self, actual: u32, snapshot: &'a Snapshot) -> Placement<'a> {
        match &self.prior {
            Prior::Fresh { .. } => Placement {
                outcome: Outcome::New,
                previous: None,
                set_cookie: true,
            },
            Prior::Pinned {
                endpoint,
                key_index,
            } if *endpoint == actual => Placement {
                outcome: Outcome::Sticky,
                previous: None,
                set_cookie: *key_index != 0,
            },
            Prior::Pinned { endpoint, .. } => Placement {
                outcome: Outcome::Failover,
                previous: snapshot
                    .endpoints
                    .get(*endpoint as usize)
                    .map(|e| &*e.identity),
                set_cookie: true,
            },
            Prior::Departed { previous } => Placement {
                outcome: Outcome::Failover,
                previous: Some(previous.as_deref().unwrap_or("unknown")),
                set_cookie: true,
            },
        }
    }

    /// The cookie value naming endpoint `actual`, signed with the current key.
    pub fn cookie_value(&self, keys: &KeyRing, actual: u32, snapshot: &Snapshot) -> String {
        let token = snapshot
            .endpoints
            .get(actual as usize)
            .map_or(0, |e| e.tokens[0]);
        cookie::encode(
            keys.signer(),
            &Claims {
                session: self.session,
                endpoint_token: token,
                issued: self.issued,
            },
        )
    }
}

/// Decides the session for a request from its candidate cookie values (the first that
/// verifies wins). `now` is unix seconds, the issue time of a new session.
pub fn decide<'v>(
    keys: &KeyRing,
    snapshot: &Snapshot,
    values: impl IntoIterator<Item = &'v str>,
    now: u64,
) -> Decision {
    let mut invalid = None;
    for value in values {
        match cookie::decode(keys, value) {
            Ok(v) => {
                let prior = match snapshot.resolve(v.key_index, v.claims.endpoint_token) {
                    Resolved::Present(endpoint) => Prior::Pinned {
                        endpoint,
                        key_index: v.key_index,
                    },
                    Resolved::Departed(previous) => Prior::Departed { previous },
                };
                return Decision {
                    session: v.claims.session,
                    issued: v.claims.issued,
                    key: hash::session(&v.claims.session.0),
                    prior,
                };
            }
            Err(e) => invalid = invalid.or(Some(e)),
        }
    }
    let session = SessionId::random();
    Decision {
        session,
        issued: now,
        key: hash::session(&session.0),
        prior: Prior::Fresh { invalid },
    }
}

/// The values of every cookie called `name` in the request's `Cookie` headers (HTTP/2
/// clients may split cookies over several headers; a browser may send duplicates when
/// cookies with different paths exist). Does not allocate.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// Renders the cookie attributes once per backend: everything after `name=value`.
pub fn cookie_attributes(s: &CookieSettings) -> Box<str> {
    let mut c = ::cookie::Cookie::build((s.name.clone(), "v"))
        .path(s.path.clone())
        .secure(s.secure)
        .http_only(s.http_only)
        .same_site(match s.same_site {
            SameSite::Lax => ::cookie::SameSite::Lax,
            SameSite::Strict => ::cookie::SameSite::Strict,
            SameSite::None => ::cookie::SameSite::None,
        });
    if let Some(d) = &s.domain {
        c = c.domain(d.clone());
    }
    if let Some(age) = s.max_age {
        c = c.max_age(::cookie::time::Duration::seconds(
            i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
        ));
    }
    let rendered = c.build().to_string();
    let prefix_len = s.name.len() + 2; // "name=v"
    rendered[prefix_len..].into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookie_values_finds_every_value_of_the_name() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1; tether=x; b=2"));
        h.append("cookie", HeaderValue::from_static("tether=\"y\""));
        let v: Vec<_> = cookie_values(&h, "tether").collect();
        assert_eq!(v, ["x", "y"]);
        assert_eq!(cookie_values(&h, "teth").count(), 0);
    }

    #[test]
    fn attributes_render_like_a_browser_expects() {
        let mut s = CookieSettings {
            name: "sid".into(),
            path: "/".into(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            max_age: None,
        };
        let a = cookie_attributes(&s);
        assert!(a.starts_with("; "), "{a}");
        assert!(a.contains("Path=/") && a.contains("HttpOnly") && a.contains("SameSite=Lax"));
        assert!(!a.contains("Max-Age") && !a.contains("Expires"), "{a}");
        s.max_age = Some(std::time::Duration::from_secs(60));
        s.secure = true;
        let a = cookie_attributes(&s);
        assert!(a.contains("Max-Age=60") && a.contains("Secure"), "{a}");
    }
}
