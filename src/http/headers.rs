//! Header hygiene between client and upstream: hop-by-hop headers, `X-Forwarded-*`, and
//! the `x-tether-*` headers backends trust.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Session id of the request (kept across failovers).
pub static X_TETHER_SESSION: HeaderName = HeaderName::from_static("x-tether-session");
/// `new`, `sticky` or `failover`.
pub static X_TETHER_AFFINITY: HeaderName = HeaderName::from_static("x-tether-affinity");
/// On failover, the endpoint the session came from.
pub static X_TETHER_PREVIOUS: HeaderName = HeaderName::from_static("x-tether-previous-endpoint");

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Read access to a request's header fields, whether hyper parsed them into a
/// [`HeaderMap`] or the HTTP/1 codec left them as raw `httparse` fields, so the
/// affinity decision reads both the same way.
pub trait Fields {
    /// Every value of the header `name` (lowercase), in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;

    /// The first value of `name`.
    fn first<'a>(&'a self, name: &'a HeaderName) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl Fields for HeaderMap {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl Fields for [httparse::Header<'_>] {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.as_str();
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// A header value as text under exactly [`HeaderValue::to_str`]'s rule (visible ASCII,
/// space and tab), so both request paths accept and ignore the same values.
pub fn text(value: &[u8]) -> Option<&str> {
    is_text(value)
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether [`text`] accepts `value`. Written as a fold without early exit so the
/// compiler can check many bytes per instruction.
pub fn is_text(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(32) < 95) | (b == b'\t'))
    })
}

const HOP_BY_HOP: [&HeaderName; 6] = [
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
    &header::PROXY_AUTHENTICATE,
];

/// Headers removed from every message, whatever `Connection` says (besides `Connection`
/// itself).
fn always_removed() -> impl Iterator<Item = &'static HeaderName> {
    HOP_BY_HOP
        .into_iter()
        .chain([&KEEP_ALIVE, &PROXY_CONNECTION])
}

/// Whether `name` (any case) is removed from every message whatever `Connection` says,
/// `Connection` itself included. Only the test that holds the codec's name classes
/// (`wire::Known`) to this module's list needs it by string.
#[cfg(test)]
pub(crate) fn is_hop_by_hop_name(name: &str) -> bool {
    name.eq_ignore_ascii_case(header::CONNECTION.as_str())
        || always_removed().any(|n| name.eq_ignore_ascii_case(n.as_str()))
}

/// Whether `name` is hop-by-hop whatever `Connection` says.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION || always_removed().any(|n| n == name)
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding` (hyper re-frames the body) and
/// `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass of name comparisons (standard names compare as
    // small integers) instead of nine hashed removals, which were a visible share of a
    // proxied request's instructions (benches/load/instructions.sh).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Nearly every upstream response says `Connection: keep-alive` (or `close`): tokens
    // that name no header, or only headers the fixed removal below takes anyway, need
    // no copy of the values and no removal by name.
    let names_others = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.split(',').any(names_other_header))
    });
    if names_others {
        // Names are removed by `&str`, which HeaderMap parses on the stack; a HeaderName
        // would allocate for every name it does not know.
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for value in &values {
            let Ok(v) = value.to_str() else { continue };
            for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                headers.remove(token);
            }
        }
    }
    if headers.remove(header::CONNECTION).is_some() && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for name in always_removed() {
        headers.remove(name);
    }
}

/// Whether a `Connection` token names a header that [`always_removed`] would not take
/// anyway (`close` names no header at all).
pub fn names_other_header(token: &str) -> bool {
    let t = token.trim();
    !(t.is_empty()
        || t.eq_ignore_ascii_case("close")
        || always_removed().any(|n| t.eq_ignore_ascii_case(n.as_str())))
}

/// Whether a client field named `name` speaks for tether: any `x-tether-*` or
/// `x-forwarded-{for,proto,host}` name, in any case and with `_` read as `-`.
///
/// CGI, WSGI, PHP and Rack servers hand headers to the app as variables in which both
/// `X-Tether-Session` and `X_Tether_Session` become `HTTP_X_TETHER_SESSION`, so a
/// client could otherwise spoof what tether tells the app by spelling it with
/// underscores. Every such field is dropped on the way upstream, except the exact
/// spelling `X-Forwarded-For`, which [`forwarded`] extends (the one chain tether
/// continues rather than replaces).
pub fn speaks_for_tether(name: &[u8]) -> bool {
    // Most names fail here, at one or two byte comparisons.
    if name.len() < 9 || name[0] | 0x20 != b'x' || !matches!(name[1], b'-' | b'_') {
        return false;
    }
    /// `name` read as a CGI variable name would be, against `want` (lowercase, `-`).
    fn same(name: &[u8], want: &[u8]) -> bool {
        name.len() == want.len()
            && name
                .iter()
                .zip(want)
                .all(|(&n, &w)| n.to_ascii_lowercase() == w || (n == b'_' && w == b'-'))
    }
    same(&name[..9], b"x-tether-")
        || same(name, b"x-forwarded-for")
        || same(name, b"x-forwarded-host")
        || same(name, b"x-forwarded-proto")
}

/// Whether a field named `name` may be relayed in a trailer section (RFC 9110 §6.5.1).
///
/// A trailer arrives after the content, so a field whose meaning is needed before it
/// (framing, routing, request modifiers, authentication, response control, content
/// format, RFC 9110 §6.5.1) cannot be honoured there, and one a recipient merged into the
/// header section could change how the message is read after the fact. Those are
/// dropped, with every hop-by-hop field and every field that [`speaks_for_tether`];
/// the rest (checksums, gRPC status, timing) go on.
pub fn allowed_in_trailers(name: &[u8]) -> bool {
    const FORBIDDEN: [&str; 30] = [
        // Framing and hop-by-hop (RFC 9112 §6, RFC 9110 §7.6.1).
        "content-length",
        "transfer-encoding",
        "trailer",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        // Routing and request modifiers.
        "host",
        "expect",
        "max-forwards",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        // Authentication and state.
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "cookie",
        "set-cookie",
        // Response control and content format.
        "cache-control",
        "expires",
        "location",
        "retry-after",
        "content-type",
        "content-encoding",
        "content-range",
    ];
    let Some(name) = text(name) else {
        return false;
    };
    !(name.is_empty()
        || speaks_for_tether(name.as_bytes())
        || FORBIDDEN.iter().any(|f| name.eq_ignore_ascii_case(f))
        || name.len() > 6 && name[..6].eq_ignore_ascii_case("proxy-"))
}

/// Removes every client field that [`speaks_for_tether`] (but `X-Forwarded-For` itself,
/// which [`forwarded`] extends), so backends can trust what tether sets.
/// Allocates only when such a field is present.
pub fn strip_tether_headers(headers: &mut HeaderMap) {
    let spoofed =
        |n: &HeaderName| *n != X_FORWARDED_FOR && speaks_for_tether(n.as_str().as_bytes());
    if !headers.keys().any(spoofed) {
        return;
    }
    let spoofs: Vec<HeaderName> = headers.keys().filter(|n| spoofed(n)).cloned().collect();
    for name in spoofs {
        headers.remove(name);
    }
}

/// Whether `value` is a valid `Host` (RFC 9112 §3.2, RFC 9110 §7.2): `uri-host [ ":"
/// port ]` as RFC 3986 §3.2.2–3.2.3 define them. No userinfo (`a@b`), no blanks or
/// lists, no empty host (RFC 9110 §4.2.1), an IPv6 literal only in brackets; the port
/// in digits.
pub fn valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return valid_ip_literal(value);
    }
    // One table lookup a byte over the usual `name[:port]`; a percent escape (rare)
    // takes the slower, exact walk.
    let end = value
        .iter()
        .position(|&b| !REG_NAME[b as usize])
        .unwrap_or(value.len());
    let (host, port) = match value.get(end) {
        None => (value, &value[..0]),
        Some(b':') => (&value[..end], &value[end + 1..]),
        Some(b'%') => match memchr::memchr(b':', value) {
            Some(i) if reg_name(&value[..i]) => (&value[..i], &value[i + 1..]),
            None if reg_name(value) => (value, &value[..0]),
            _ => return false,
        },
        Some(_) => return false,
    };
    !host.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// `[IPv6]` with an optional `:port` (RFC 3986 §3.2.2 `IP-literal`; IPvFuture is
/// refused).
fn valid_ip_literal(value: &[u8]) -> bool {
    let Some(end) = memchr::memchr(b']', value) else {
        return false;
    };
    let literal = std::str::from_utf8(&value[1..end]).ok();
    if literal
        .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
        .is_none()
    {
        return false;
    }
    match &value[end + 1..] {
        [] => true,
        [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The bytes a `reg-name` is made of without escapes: unreserved and sub-delims.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    t
};

/// RFC 3986 §3.2.2 `reg-name`: unreserved, sub-delims and well-formed percent escapes.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = |j: usize| host.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// A peer address rendered once per connection as a header value, so requests do not
/// format it again.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The forwarding fields for this hop, pushed onto `out` for the request to carry:
/// `X-Forwarded-For` with the peer (see [`peer_value`]) appended to the values of all
/// the client's lines, joined as RFC 9110 §5.3 combines them (those lines are removed
/// from `headers`: their values are in the new one), then `X-Forwarded-Proto` and, when
/// the request names a host, `X-Forwarded-Host`. The latter two describe this hop; the
/// client's own were dropped by [`strip_tether_headers`].
pub fn forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    secure: bool,
    host: Option<&HeaderValue>,
    out: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let mut chain = String::new();
    let mut lines = false;
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        lines = true;
        if let Some(p) = text(prior.as_bytes())
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            chain.push_str(p);
            chain.push_str(", ");
        }
    }
    let xff = match peer.to_str() {
        Ok(peer) if !chain.is_empty() => {
            chain.push_str(peer);
            HeaderValue::from_str(&chain).ok()
        }
        _ => Some(peer.clone()),
    };
    if lines {
        headers.remove(&X_FORWARDED_FOR);
    }
    if let Some(v) = xff {
        out.push((X_FORWARDED_FOR.clone(), v));
    }
    let proto = HeaderValue::from_static(if secure { "https" } else { "http" });
    out.push((X_FORWARDED_PROTO.clone(), proto));
    if let Some(h) = host {
        out.push((X_FORWARDED_HOST.clone(), h.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_and_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret, b@d name,,"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_keep_alive_is_removed_with_the_keep_alive_header() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Keep-Alive, close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-length", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("content-length"));

        // A second Connection value naming another header is still honoured.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.append("connection", HeaderValue::from_static("x-internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_headers_are_removed_without_a_connection_header() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn underscore_and_mixed_spellings_of_tethers_headers_are_recognised() {
        for name in [
            "x-tether-session",
            "X_Tether_Session",
            "x_tether-affinity",
            "X-TETHER_PREVIOUS-ENDPOINT",
            "x-tether-anything",
            "X_Forwarded_For",
            "x_forwarded-host",
            "X-Forwarded_Proto",
        ] {
            assert!(speaks_for_tether(name.as_bytes()), "{name}");
        }
        for name in [
            "x-tetherx",
            "x-forwarded-fort",
            "x-forwarded",
            "x-request-id",
            "host",
        ] {
            assert!(!speaks_for_tether(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn host_values_follow_rfc_3986_authority_without_userinfo() {
        for ok in [
            "a.test",
            "a.test:8080",
            "A-B.test:",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.test",
            "a%2Eb",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "b.test x",
            "a@b.test",
            "b.test, a.test",
            "app.example.com:@evil.example",
            "a.test:8o",
            "a.test:123456",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "a/b",
            "a%2",
            "a.test:80:80",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn client_tether_headers_are_removed_and_forwarded_set() {
        let mut h = HeaderMap::new();
        h.insert("x-tether-session", HeaderValue::from_static("spoof"));
        h.insert("X-Tether-Affinity", HeaderValue::from_static("sticky"));
        h.insert("x_tether_session", HeaderValue::from_static("spoof"));
        h.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2 "));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        strip_tether_headers(&mut h);
        let mut added = Vec::new();
        forwarded(
            &mut h,
            &peer_value("127.0.0.2".parse().unwrap()),
            false,
            Some(&HeaderValue::from_static("a.example")),
            &mut added,
        );
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("x-forwarded-proto"));
        for (name, value) in added {
            h.insert(name, value);
        }
        assert!(!h.contains_key("x-tether-session") && !h.contains_key("x-tether-affinity"));
        assert!(!h.contains_key("x_tether_session") && !h.contains_key("x_forwarded_for"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }
}
