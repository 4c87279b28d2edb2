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

use std::sync::Arc;

use crate::http::headers::Fields;

pub use crate::keys::KeyRing;
pub use cookie::{Claims, Invalid, SessionId, Verified};

use crate::backend::{Candidates, EndpointState, Resolved, Snapshot};
use crate::balance::hash;
use crate::clock::Now;
use crate::config::{AffinitySettings, Rebalance};

/// What happened to a session on this request; sent as `x-tether-affinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No valid cookie: a session was created.
    New,
    /// The session went to the endpoint it is pinned to.
    Sticky,
    /// The pinned endpoint is gone, down, refused or done draining: re-pinned.
    Failover,
    /// Moved to a newly added endpoint by the rebalancing policy.
    Rebalanced,
}

impl Outcome {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Sticky => "sticky",
            Outcome::Failover => "failover",
            Outcome::Rebalanced => "rebalanced",
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
        /// Whether this request starts the session (false when it joins a session its
        /// HTTP/2 connection already started), so it is counted once.
        counted: bool,
    },
    /// Placed by a request attribute (`key = "header:..."` or `"client-ip"`): the ring
    /// owner of that value, sticky without a cookie.
    Keyed {
        /// The value's ring owner (its failover target when it cannot take it).
        owner: Option<u32>,
    },
    /// The cookie names an endpoint in the current snapshot.
    Pinned {
        /// Its index in the snapshot.
        endpoint: u32,
        /// The key that verified the cookie (0 = current signer).
        key_index: usize,
        /// What the cookie said.
        claims: Claims,
    },
    /// The cookie names an endpoint that left the table.
    Departed {
        /// Its identity, when remembered.
        previous: Option<Arc<str>>,
        /// What the cookie said.
        claims: Claims,
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
    /// Where the policy sends the session first: its pinned endpoint, a rebalancing
    /// target, or the local pod; `None` = its owner in ring order.
    pub target: Option<u32>,
    /// Whether ring placement must respect the load bound (new sessions and rebalancing
    /// moves; failovers stay on the plain ring so replicas agree).
    pub bounded: bool,
    /// A newly added endpoint the rebalancing policy moves this session to.
    pub rebalance_to: Option<u32>,
    /// Whether the cookie's `seen` time is due for a refresh.
    pub refresh_due: bool,
    /// When the decision was made.
    pub now: Now,
}

/// The outcome for the endpoint that actually serves the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    /// new, sticky, failover or rebalanced.
    pub outcome: Outcome,
    /// On failover and rebalance, the identity of the endpoint the session came from.
    pub previous: Option<&'a str>,
    /// Whether the response must carry a new cookie (new session, re-pin, a cookie signed
    /// with an older key, or a due activity refresh).
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

    /// Makes a fresh decision join `session`, which another request started (the
    /// cookieless requests of one HTTP/2 connection share one): placed as that session,
    /// and not counted as a new one again.
    pub fn join(&mut self, snapshot: &Snapshot, session: SessionId) {
        if let Prior::Fresh { invalid, .. } = self.prior {
            let mut d = new_session(snapshot, session, self.now);
            d.prior = Prior::Fresh {
                invalid,
                counted: false,
            };
            *self = d;
        }
    }

    /// Where to try the request, in order.
    pub fn candidates(&self, snapshot: &Snapshot) -> Candidates {
        snapshot.candidates(self.target, self.bounded, self.key, self.now)
    }

    /// The candidates, worked out only as far as the request gets ([`Attempts`]).
    pub fn attempts<'a>(&'a self, snapshot: &'a Snapshot) -> Attempts<'a> {
        match self.target {
            // The first candidate whenever the target is up; the rest waits.
            Some(t) if snapshot.is_up(t, self.now) => {
                let mut list = Candidates::default();
                list.push(t);
                Attempts {
                    decision: self,
                    snapshot,
                    list,
                    complete: false,
                }
            }
            _ => Attempts {
                decision: self,
                snapshot,
                list: self.candidates(snapshot),
                complete: true,
            },
        }
    }

    /// What it means for the session if endpoint `actual` serves the request.
    pub fn placement<'a>(&'a self, actual: u32, snapshot: &'a Snapshot) -> Placement<'a> {
        let name = |i: u32| snapshot.endpoints.get(i as usize).map(|e| &*e.identity);
        match &self.prior {
            Prior::Fresh { .. } => Placement {
                outcome: Outcome::New,
                previous: None,
                set_cookie: true,
            },
            Prior::Keyed { owner } => Placement {
                outcome: if *owner == Some(actual) {
                    Outcome::Sticky
                } else {
                    Outcome::Failover
                },
                previous: owner.filter(|&o| o != actual).and_then(name),
                set_cookie: false,
            },
            Prior::Pinned {
                endpoint,
                key_index,
                ..
            } if *endpoint == actual => Placement {
                outcome: Outcome::Sticky,
                previous: None,
                set_cookie: *key_index != 0 || self.refresh_due,
            },
            Prior::Pinned { endpoint, .. } => Placement {
                outcome: if self.rebalance_to == Some(actual) {
                    Outcome::Rebalanced
                } else {
                    Outcome::Failover
                },
                previous: name(*endpoint),
                set_cookie: true,
            },
            Prior::Departed { previous, .. } => Placement {
                outcome: Outcome::Failover,
                previous: Some(previous.as_deref().unwrap_or("unknown")),
                set_cookie: true,
            },
        }
    }

    /// Records the session's load once endpoint `actual` answered: counted where it now
    /// lives, at the `seen` time its (possibly new) cookie carries.
    pub fn commit(&self, actual: u32, snapshot: &Snapshot) {
        let now = self.now.unix;
        let Some(target) = snapshot.endpoints.get(actual as usize) else {
            return;
        };
        let set_cookie = self.placement(actual, snapshot).set_cookie;
        match &self.prior {
            Prior::Fresh { counted, .. } => {
                if *counted {
                    target.sessions.add(now);
                    snapshot.sessions.add(now);
                }
            }
            // Keyed sessions carry no timestamps to count them by.
            Prior::Keyed { .. } => {}
            Prior::Pinned {
                endpoint, claims, ..
            } => {
                if !set_cookie {
                    return;
                }
                if let Some(old) = snapshot.endpoints.get(*endpoint as usize) {
                    old.sessions.remove(claims.seen);
                }
                snapshot.sessions.remove(claims.seen);
                target.sessions.add(now);
                snapshot.sessions.add(now);
            }
            Prior::Departed { claims, .. } => {
                snapshot.sessions.remove(claims.seen);
                target.sessions.add(now);
                snapshot.sessions.add(now);
            }
        }
    }

    /// [`Self::write_cookie_value`] as a string of its own.
    pub fn cookie_value(&self, keys: &KeyRing, actual: u32, snapshot: &Snapshot) -> String {
        let mut out = Vec::new();
        self.write_cookie_value(keys, actual, snapshot, &mut out);
        // base64 is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the cookie value naming endpoint `actual` to `out`, signed with the
    /// current key: the same session and start time, `placed` kept while the session
    /// stays put, `seen` now.
    pub fn write_cookie_value(
        &self,
        keys: &KeyRing,
        actual: u32,
        snapshot: &Snapshot,
        out: &mut Vec<u8>,
    ) {
        let token = snapshot
            .endpoints
            .get(actual as usize)
            .map_or(0, |e| e.tokens[0]);
        let placed = match &self.prior {
            Prior::Pinned {
                endpoint, claims, ..
            } if *endpoint == actual => claims.placed,
            _ => self.now.unix,
        };
        cookie::encode_into(
            keys.signer(),
            &Claims {
                session: self.session,
                endpoint_token: token,
                issued: self.issued,
                placed,
                seen: self.now.unix,
            },
            out,
        )
    }
}

/// A decision's [`Decision::candidates`], worked out as far as the request gets: when
/// the target (the pinned endpoint, for a sticky request) is up it is tried first, and
/// the ring walk for the endpoints after it runs only if it fails, so a sticky request
/// whose pod is up pays for no walk.
///
/// The list must come out as the eager one would have, so the rest is worked out with
/// the target counted as up whoever marked it down since (a cooling-off endpoint is not
/// retried through the all-down fallback, and a bounded placement's retries follow the
/// plain ring after it). Only the target is tried before the rest exists, so the
/// request's own failure marks never shape the list.
pub struct Attempts<'a> {
    decision: &'a Decision,
    snapshot: &'a Snapshot,
    list: Candidates,
    /// Whether `list` holds every candidate.
    complete: bool,
}

impl Attempts<'_> {
    /// The `n`th endpoint to try (from 0), if there is one.
    pub fn get(&mut self, n: usize) -> Option<u32> {
        if n >= self.list.as_slice().len() {
            self.settle();
        }
        self.list.as_slice().get(n).copied()
    }

    /// Works out the whole list, counting the target as up (as it was when the request
    /// chose it) and the other endpoints by their health at this moment.
    fn settle(&mut self) {
        if self.complete {
            return;
        }
        let d = self.decision;
        let rest = match d.target {
            Some(t) => self.snapshot.candidates_after(t, d.bounded, d.key, d.now),
            None => d.candidates(self.snapshot),
        };
        for &e in rest.as_slice() {
            self.list.push(e);
        }
        self.complete = true;
    }

    /// Whether there is an endpoint to try after the `n`th.
    pub fn after(&mut self, n: usize) -> bool {
        self.get(n + 1).is_some()
    }
}

/// Decides the session for a request from its candidate cookie values (the first that
/// verifies wins), the backend's affinity settings and the time.
pub fn decide<'v>(
    keys: &KeyRing,
    snapshot: &Snapshot,
    values: impl IntoIterator<Item = &'v [u8]>,
    settings: &AffinitySettings,
    now: Now,
) -> Decision {
    decide_with(|v| cookie::decode(keys, v), snapshot, values, settings, now)
}

/// [`decide`] with a connection's [`cookie::Memo`], so a cookie the connection already
/// sent is not verified again.
pub fn decide_memo<'v>(
    keys: &Arc<KeyRing>,
    memo: &mut cookie::Memo,
    snapshot: &Snapshot,
    values: impl IntoIterator<Item = &'v [u8]>,
    settings: &AffinitySettings,
    now: Now,
) -> Decision {
    decide_with(|v| memo.decode(keys, v), snapshot, values, settings, now)
}

/// [`decide`] with an HTTP/2 connection's [`cookie::SharedMemo`].
pub fn decide_shared<'v>(
    keys: &Arc<KeyRing>,
    memo: &cookie::SharedMemo,
    snapshot: &Snapshot,
    values: impl IntoIterator<Item = &'v [u8]>,
    settings: &AffinitySettings,
    now: Now,
) -> Decision {
    decide_with(|v| memo.decode(keys, v), snapshot, values, settings, now)
}

fn decide_with<'v>(
    mut decode: impl FnMut(&[u8]) -> Result<Verified, Invalid>,
    snapshot: &Snapshot,
    values: impl IntoIterator<Item = &'v [u8]>,
    settings: &AffinitySettings,
    now: Now,
) -> Decision {
    let mut invalid = None;
    for value in values {
        match decode(value) {
            Ok(v) if expired(&v.claims, settings, now.unix) => {
                invalid = invalid.or(Some(Invalid::Expired))
            }
            Ok(v) => return existing(snapshot, v, settings, now),
            Err(e) => invalid = invalid.or(Some(e)),
        }
    }
    let mut d = new_session(snapshot, SessionId::random(), now);
    d.prior = Prior::Fresh {
        invalid,
        counted: true,
    };
    d
}

/// The decision for a request placed by an attribute value (a header, the client IP):
/// the value's ring owner, deterministic on every replica, with the usual failover
/// order when it is down. The session id is derived from the value, so the backend sees
/// one stable `x-tether-session` per value.
pub fn keyed(snapshot: &Snapshot, value: &[u8], now: Now) -> Decision {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(value, hash::SESSION_SEED);
    let session = SessionId(h.to_be_bytes());
    let key = hash::key(value);
    let owner = snapshot.ring.owner(key);
    Decision {
        session,
        issued: now.unix,
        key,
        prior: Prior::Keyed { owner },
        target: owner,
        bounded: false,
        rebalance_to: None,
        refresh_due: false,
        now,
    }
}

/// The decision for a new session with id `session`: the local pod when `prefer_local`
/// named one and it is ready, up and within the load bound, else the session's owner in
/// ring order among the endpoints within the load bound.
pub fn new_session(snapshot: &Snapshot, session: SessionId, now: Now) -> Decision {
    let key = hash::session(&session.0);
    let target = snapshot.local.filter(|&l| {
        let e = &snapshot.endpoints[l as usize];
        e.state == EndpointState::Ready
            && !e.health.is_down(now.instant)
            && snapshot.within_bound(l, now.unix)
    });
    Decision {
        session,
        issued: now.unix,
        key,
        prior: Prior::Fresh {
            invalid: None,
            counted: true,
        },
        target,
        bounded: true,
        rebalance_to: None,
        refresh_due: false,
        now,
    }
}

/// Past the absolute timeout, or idle for longer than the idle timeout. `seen` lags the
/// last request by less than one refresh interval, which the idle check allows for, so
/// a session is never cut short.
fn expired(c: &Claims, s: &AffinitySettings, now: u64) -> bool {
    let past = |t: u64, limit: Option<std::time::Duration>| {
        limit.is_some_and(|d| now.saturating_sub(t) > d.as_secs())
    };
    past(c.issued, s.absolute_timeout)
        || past(c.seen, s.idle_timeout.map(|d| d + s.refresh_interval()))
}

fn existing(snapshot: &Snapshot, v: Verified, s: &AffinitySettings, now: Now) -> Decision {
    let claims = v.claims;
    let key = hash::session(&claims.session.0);
    let refresh = s.refresh_interval().as_secs();
    let mut d = Decision {
        session: claims.session,
        issued: claims.issued,
        key,
        prior: Prior::Fresh {
            invalid: None,
            counted: true,
        },
        target: None,
        // Failovers follow the plain ring order, so every replica picks the same target
        // whatever load it has seen; Maglev already spreads a lost endpoint's sessions
        // over all survivors in proportion to their weights, so there is no stampede
        // onto one neighbour for a load bound to prevent.
        bounded: false,
        rebalance_to: None,
        refresh_due: now.unix.saturating_sub(claims.seen) >= refresh,
        now,
    };
    match snapshot.resolve(v.key_index, claims.endpoint_token) {
        Resolved::Departed(previous) => d.prior = Prior::Departed { previous, claims },
        Resolved::Present(p) => {
            d.prior = Prior::Pinned {
                endpoint: p,
                key_index: v.key_index,
                claims,
            };
            let pinned = &snapshot.endpoints[p as usize];
            let sticky = match pinned.state {
                EndpointState::Ready => true,
                EndpointState::Draining => pinned
                    .draining_since
                    .is_none_or(|t| now.unix.saturating_sub(t) < s.drain_timeout.as_secs()),
            };
            if sticky {
                d.target = Some(p);
                if pinned.state == EndpointState::Ready {
                    d.rebalance_to = rebalance_target(snapshot, p, &claims, key, s, now);
                    if let Some(o) = d.rebalance_to {
                        d.target = Some(o);
                        d.bounded = true;
                    }
                }
            }
        }
    }
    d
}

/// The newly added endpoint a sticky session should move to under the rebalancing
/// policy, if any: its ring owner, when that owner joined after the session was placed,
/// is up and within the load bound, and (gradual) the session has been idle long enough
/// and the owner's move rate allows one more.
fn rebalance_target(
    snapshot: &Snapshot,
    pinned: u32,
    c: &Claims,
    key: u64,
    s: &AffinitySettings,
    now: Now,
) -> Option<u32> {
    if s.rebalance == Rebalance::Persistent {
        return None;
    }
    let owner = snapshot.ring.owner(key)?;
    let o = &snapshot.endpoints[owner as usize];
    if owner == pinned
        || o.added <= c.placed
        || o.health.is_down(now.instant)
        || !snapshot.within_bound(owner, now.unix)
    {
        return None;
    }
    if s.rebalance == Rebalance::Gradual {
        // `seen` can lag the last request by up to one refresh interval: wait that much
        // longer, so a session in mid-conversation never moves.
        let idle_for = (s.rebalance_idle + s.refresh_interval()).as_secs();
        if now.unix.saturating_sub(c.seen) < idle_for || !o.moves.try_acquire(now.instant) {
            return None;
        }
    }
    Some(owner)
}

/// The values of every cookie called `name` in the request's `Cookie` headers (HTTP/2
/// clients may split cookies over several headers; a browser may send duplicates when
/// cookies with different paths exist). Does not allocate.
pub fn cookie_values<'a, H: Fields + ?Sized>(
    headers: &'a H,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> {
    // On bytes: a value that passes `headers::is_text` holds only visible ASCII, space
    // and tab, where `str::trim` and `trim_ascii` agree, and the `str` splitting this
    // replaced was a large share of a request's instructions; `memchr` finds the
    // separators faster than a per-byte split predicate.
    headers
        .values(&http::header::COOKIE)
        .filter(|v| crate::http::headers::is_text(v))
        .flat_map(|v| Pairs(Some(v)))
        .filter_map(move |pair| {
            let eq = memchr::memchr(b'=', pair)?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let v = pair[eq + 1..].trim_ascii();
            let start = v.iter().position(|&b| b != b'"').unwrap_or(v.len());
            let end = v.iter().rposition(|&b| b != b'"').map_or(start, |i| i + 1);
            Some(&v[start..end.max(start)])
        })
}

/// The `;`-separated pieces of a `Cookie` value.
struct Pairs<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Pairs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        Some(match memchr::memchr(b';', rest) {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                &rest[..i]
            }
            None => {
                self.0 = None;
                rest
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CookieSettings, SameSite};
    use http::HeaderValue;

    #[test]
    fn cookie_values_finds_every_value_of_the_name() {
        let mut h = http::HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1; tether=x; b=2"));
        h.append("cookie", HeaderValue::from_static("tether=\"y\""));
        let v: Vec<_> = cookie_values(&h, "tether").collect();
        assert_eq!(v, [b"x".as_slice(), b"y"]);
        assert_eq!(cookie_values(&h, "teth").count(), 0);
    }

    /// The byte-level scan gives exactly what the `str` version it replaced gave.
    #[test]
    fn cookie_values_match_the_str_reference_on_generated_headers() {
        fn reference<'a>(h: &'a http::HeaderMap, name: &'a str) -> Vec<&'a [u8]> {
            h.get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k.trim() == name).then(|| v.trim().trim_matches('"').as_bytes())
                })
                .collect()
        }
        const KEYS: &[&[u8]] = &[b"tether", b"teth", b"a", b"", b"tether2"];
        const VALUES: &[&[u8]] = &[b"x", b"", b"\xff", b"=", b"v=1", b"\"q\""];
        const PAD: &[&[u8]] = &[b"", b" ", b"\t", b"\"", b"  "];
        let mut pick = crate::testing::picker(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let mut h = http::HeaderMap::new();
            for _ in 0..1 + pick(2) {
                let mut v = Vec::new();
                for i in 0..pick(4) {
                    if i > 0 {
                        v.push(b';');
                    }
                    for part in [
                        PAD[pick(PAD.len())],
                        KEYS[pick(KEYS.len())],
                        PAD[pick(PAD.len())],
                        if pick(5) == 0 { b"" } else { b"=" },
                        PAD[pick(PAD.len())],
                        VALUES[pick(VALUES.len())],
                        PAD[pick(PAD.len())],
                    ] {
                        v.extend_from_slice(part);
                    }
                }
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    h.append("cookie", v);
                }
            }
            let got: Vec<_> = cookie_values(&h, "tether").collect();
            assert_eq!(got, reference(&h, "tether"), "{h:?}");
        }
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
        let a = s.attributes();
        assert!(a.starts_with("; "), "{a}");
        assert!(a.contains("Path=/") && a.contains("HttpOnly") && a.contains("SameSite=Lax"));
        assert!(!a.contains("Max-Age") && !a.contains("Expires"), "{a}");
        s.max_age = Some(std::time::Duration::from_secs(60));
        s.secure = true;
        let a = s.attributes();
        assert!(a.contains("Max-Age=60") && a.contains("Secure"), "{a}");
    }
}
