//! The check that holds the two request-head rewrites to one output: the HTTP/1
//! codec's, which copies header lines as bytes ([`wire::write_request`]), and the HTTP/2
//! path's, on a `HeaderMap` ([`super::prepare_request`]). Both must send upstream the
//! same request line and fields, and frame the body as the codec read it. Used by the
//! unit tests below and the `h1_head` fuzz target.

use crate::config::DEFAULT_BUFFER;
use crate::http::headers::{X_TETHER_AFFINITY, X_TETHER_PREVIOUS, X_TETHER_SESSION};
use crate::http::wire::{
    decimal, no_fields, parse_request, write_attempt, write_request, Parsed, Streamed, MAX_HEADERS,
};

/// Checks the HTTP/1 codec's request hygiene against the HTTP/2 path's on one raw head:
/// both must send the same request line and the same header fields upstream (names
/// lowercased; fields of one name in the same order), and the upstream head must carry
/// the body's framing as the codec read it. `Ok(false)`: not a head the codec takes.
#[doc(hidden)]
pub fn hygiene_agrees(raw: &[u8]) -> Result<bool, String> {
    use http::header::{HeaderName, HeaderValue};
    let mut fields = no_fields();
    let Parsed::Fast(head) = parse_request(raw, &mut fields, DEFAULT_BUFFER) else {
        return Ok(false);
    };
    let conn = super::Connection::new(([192, 0, 2, 1], 5000).into(), false);
    let mut out = Vec::new();
    write_request(&mut out, &head, conn.peer_value.as_bytes(), false, b"s1");
    write_attempt(&mut out, "failover", Some("ep-1"));
    let mut sent = [httparse::EMPTY_HEADER; MAX_HEADERS * 2];
    let mut parsed = httparse::Request::new(&mut sent);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => return Err(format!("fast path wrote an unparsable head ({other:?})")),
    }
    let mut fast: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    // The upstream must frame the body exactly as the fast path read it: one length,
    // the body's, or none for no body. Anything else lets body bytes become a request.
    let lengths: Vec<_> = fast
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| decimal(v))
        .collect();
    let chunked: Vec<_> = fast
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_slice())
        .collect();
    let framed = match (head.streamed, &lengths[..], &chunked[..]) {
        (Streamed::No, [], []) => head.body_len == 0,
        (Streamed::No, [Some(n)], []) => *n == head.body_len as u64,
        (Streamed::Length(want), [Some(n)], []) => *n == want,
        (Streamed::Chunked, [], [v]) => *v == b"chunked",
        _ => false,
    };
    if !framed {
        return Err(format!(
            "a body framed {:?} ({} bytes) goes upstream with lengths {lengths:?} and codings {chunked:?}",
            head.streamed, head.body_len
        ));
    }
    // Framing is compared above: hyper's client restates it from the body it sends.
    fast.retain(|(n, _)| n != "content-length" && n != "transfer-encoding");

    let mut req = http::Request::new(crate::upstream::body::RequestBody::Empty);
    *req.method_mut() =
        http::Method::from_bytes(head.method.as_bytes()).map_err(|e| e.to_string())?;
    *req.uri_mut() = head
        .target
        .parse()
        .map_err(|e| format!("hyper would reject the target {:?}: {e}", head.target))?;
    for f in head.fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_bytes(f.value).map_err(|e| e.to_string())?;
        req.headers_mut().append(name, value);
    }
    // The host as the codec settled it (an absolute target's authority, or none for
    // HTTP/1.0), as `settle_host` does on the HTTP/2 path.
    if head.authority_host || head.host.is_empty() {
        let host = HeaderValue::from_bytes(head.host).map_err(|e| e.to_string())?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    let mut stamps = Vec::new();
    super::request::prepare_request(&mut req, &conn, &mut stamps);
    let h = req.headers_mut();
    for (name, value) in stamps {
        h.append(name, value);
    }
    h.insert(&X_TETHER_SESSION, HeaderValue::from_static("s1"));
    h.insert(&X_TETHER_AFFINITY, HeaderValue::from_static("failover"));
    h.insert(&X_TETHER_PREVIOUS, HeaderValue::from_static("ep-1"));
    let mut hyper: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .filter(|(n, _)| n != "content-length" && n != "transfer-encoding")
        // tether answers `Expect: 100-continue` itself (RFC 9110 §10.1.1).
        .filter(|(n, _)| !(head.expects_continue && n == "expect"))
        .collect();
    // By name only, and stable: values of one name must keep their order.
    fast.sort_by(|a, b| a.0.cmp(&b.0));
    hyper.sort_by(|a, b| a.0.cmp(&b.0));
    if parsed.method != Some(req.method().as_str()) || parsed.path != Some(head.target) {
        return Err(format!(
            "request line differs: {:?} {:?}",
            parsed.method, parsed.path
        ));
    }
    if fast != hyper {
        let show = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        return Err(format!(
            "fast path sends {:#?}\nhyper path sends {:#?}",
            show(&fast),
            show(&hyper)
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers;

    /// Heads built from the fields where the two paths could disagree: `Connection`
    /// naming other fields (even `Host` and `X-Forwarded-For`), repeated and blank
    /// `X-Forwarded-For`, `TE` variants, spoofed `x-tether-*` and `x-forwarded-*` (with
    /// underscores too), values that are not text,
    /// and the line shapes the fast path copies or rewrites (no or extra blanks after
    /// the colon, trailing blanks, bare-LF line ends).
    #[test]
    fn fast_path_hygiene_matches_the_hyper_path_on_generated_heads() {
        const NAMES: &[&str] = &[
            "Connection",
            "connection",
            "Keep-Alive",
            "TE",
            "te",
            "X-Forwarded-For",
            "x-forwarded-for",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Tether-Session",
            "x-tether-affinity",
            "X-Tether-Previous-Endpoint",
            "X_Tether_Session",
            "x_tether-affinity",
            "X_Forwarded_For",
            "x_forwarded_host",
            "X-Forwarded_Proto",
            "X-A",
            "x-b",
            "Cookie",
            "cookie",
            "COOKIE",
            "Cookie2",
            "Cookies",
            "Proxy-Authorization",
            "Proxy-Connection",
            "Trailer",
            "Content-Length",
            "Accept",
        ];
        const VALUES: &[&[u8]] = &[
            b"keep-alive",
            b"close",
            b"x-a",
            b"X-A, keep-alive",
            b"host",
            b"x-forwarded-for",
            b"X-B,, te",
            b"",
            b" , ",
            b"trailers",
            b"gzip, Trailers",
            b"10.0.0.1",
            b"1.1.1.1, 2.2.2.2",
            b"caf\xc3\xa9",
            b"\xff",
            b"a=b; tether=x",
            b"0",
            b"x-tether-session",
            b"proxy-authorization, x-forwarded-host",
            b"content-length",
            b"Content-Length, close",
        ];
        let mut next = crate::testing::picker(0x9e37_79b9_7f4a_7c15);
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut raw = b"GET /p?q HTTP/1.1\r\nHost: a.example\r\n".to_vec();
            for _ in 0..next(8) {
                let name = NAMES[next(NAMES.len())];
                let value = if name.eq_ignore_ascii_case("content-length") {
                    [&b"0"[..], b"5", b"016"][next(3)]
                } else {
                    VALUES[next(VALUES.len())]
                };
                raw.extend_from_slice(name.as_bytes());
                raw.extend_from_slice([&b": "[..], b":", b":\t  "][next(3)]);
                raw.extend_from_slice(value);
                raw.extend_from_slice([&b"\r\n"[..], b"\r\n", b" \r\n", b"\n"][next(4)]);
            }
            raw.extend_from_slice(b"\r\n");
            match hygiene_agrees(&raw) {
                Ok(t) => taken += usize::from(t),
                Err(e) => panic!("{}\n{e}", String::from_utf8_lossy(&raw)),
            }
            // The affinity decision finds cookies by the name class the parser gave
            // each field; it must see what a lookup by name sees, in any casing and
            // next to names that merely start alike.
            let mut fields = no_fields();
            if let Parsed::Fast(h) = parse_request(&raw, &mut fields, DEFAULT_BUFFER) {
                use headers::Fields;
                let by_class: Vec<_> = h.values(&http::header::COOKIE).collect();
                let by_name: Vec<_> = h.fields.values(&http::header::COOKIE).collect();
                assert_eq!(by_class, by_name);
            }
        }
        assert!(taken > 15_000, "only {taken} heads took the fast path");
    }

    #[test]
    fn heads_the_fuzzer_found_keep_both_paths_in_agreement() {
        // An HTTP/1.0 head with no Host (it goes upstream with an empty one).
        let raw = b"GET / HTTP/1.0\r\nHxs|:DELETE /x HTTP-foror\nX-FX-Forwarded-For: 1..4\xd7\ntent-Letioh: 0\r\n\r\n";
        assert_eq!(hygiene_agrees(raw), Ok(true));
        let raw = b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n";
        assert_eq!(hygiene_agrees(raw), Ok(true));
    }
}
