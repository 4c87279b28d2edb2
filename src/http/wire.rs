//! HTTP/1 messages as bytes, for tether's HTTP/1 codec ([`super::native`]).
//!
//! Owns four things: reading a client request head (RFC 9112 §2-3: request line,
//! target form, `Host`) and its body framing (§6) in [`parse_request`], which answers
//! what tether takes, streams or refuses; rewriting heads by copying header lines with
//! the same hygiene as [`super::headers`] (the two are checked against each other by a
//! unit test and the `h1_head` fuzz target); reading upstream response heads and
//! finding where their bodies end ([`Framing`], [`Chunked`]) so bodies are relayed as
//! bytes without being re-encoded; and writing what the client gets (status line, Date,
//! framing restated, trailers filtered by RFC 9110 §6.5.1).
//!
//! Framing is strict on purpose: where a message's end could be read two ways (RFC 9112
//! §6.3: a length with a coding, repeated or odd lengths, codings not ending in
//! chunked, obsolete line folding) the request is refused, never guessed at.

use std::mem::MaybeUninit;

use super::headers::{self, X_TETHER_AFFINITY, X_TETHER_PREVIOUS, X_TETHER_SESSION};

/// Largest upstream response head accepted, on either HTTP/1 path; a larger one is a
/// failed exchange (502), held against the endpoint.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most header fields a head may carry (hyper's own default limit).
pub const MAX_HEADERS: usize = 100;

/// Why an upstream response cannot be relayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The response head is not valid HTTP/1.x.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// The response head is larger than the proxy accepts.
    #[error("response head too large")]
    HeadTooLarge,
    /// `Content-Length` values that are not one decimal number.
    #[error("invalid content-length")]
    ContentLength,
    /// A transfer coding other than a lone `chunked`.
    #[error("unsupported transfer-encoding")]
    TransferEncoding,
    /// A response the request did not ask for (101 without an upgrade).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The chunked body is malformed.
    #[error("malformed chunked body")]
    Chunked,
    /// The upstream connection failed.
    #[error("upstream connection: {0}")]
    Io(std::io::ErrorKind),
}

/// A client request head tether takes.
#[derive(Debug)]
pub struct RequestHead<'b> {
    /// Bytes the head takes in the buffer (request line to the empty line).
    pub len: usize,
    /// The method.
    pub method: &'b str,
    /// The request target in origin form (path and query).
    pub target: &'b str,
    /// The host: the absolute target's authority, else the `Host` value (text, by
    /// `headers::is_text`); empty for an HTTP/1.0 request that named none.
    pub host: &'b [u8],
    /// The host came from an absolute target, and replaces any `Host` field upstream
    /// (RFC 9112 §3.2.2).
    pub authority_host: bool,
    /// The client speaks HTTP/1.0: no chunked or 1xx responses, and the connection
    /// persists only with `Connection: keep-alive`.
    pub http10: bool,
    /// The protocol an upgrade request asks for (`Connection: upgrade` + `Upgrade`).
    pub upgrade: Option<&'b [u8]>,
    /// The header fields as the client sent them.
    pub fields: &'b [httparse::Header<'b>],
    /// The body's length by `Content-Length` (0 without one).
    pub body_len: usize,
    /// The body, when all of it follows the head in the buffer parsed; else empty (see
    /// [`RequestHead::body_complete`]).
    pub body: &'b [u8],
    /// A body too large to read whole first, or of unknown length: streamed upstream
    /// after the head (RFC 9112 §6.3).
    pub streamed: Streamed,
    /// The client sent `Expect: 100-continue` and waits for a 100 before its body
    /// (RFC 9110 §10.1.1); tether answers it and does not pass it on.
    pub expects_continue: bool,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// Whether a `Connection` value names a header to drop besides the fixed hop-by-hop
    /// ones (rare; only then is every field checked against its tokens).
    names_others: bool,
    /// A `TE` value asked for trailers (`TE: trailers` is kept, as gRPC requires).
    trailers: bool,
    /// Each field's name class, so the rewrite does not classify it again.
    kinds: [Known; MAX_HEADERS],
}

impl RequestHead<'_> {
    /// The path, without the query (what routes match); `/` for `OPTIONS *`.
    pub fn path(&self) -> &str {
        if self.target == "*" {
            return "/";
        }
        // memchr rather than `split('?')`: this runs on every route lookup.
        match memchr::memchr(b'?', self.target.as_bytes()) {
            Some(i) => &self.target[..i],
            None => self.target,
        }
    }

    /// Whether the request may be sent twice: an idempotent method and no body, the
    /// rule the HTTP/2 path applies too (a streamed body cannot be replayed, and a
    /// buffered one keeps to the same rule so every request retries alike).
    pub fn replayable(&self) -> bool {
        self.body_len == 0
            && self.streamed == Streamed::No
            && matches!(
                self.method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            )
    }

    /// Whether the whole body was in the buffer parsed.
    pub fn body_complete(&self) -> bool {
        self.body.len() == self.body_len
    }

    /// Bytes the request takes in the buffer: head and body.
    pub fn total_len(&self) -> usize {
        self.len + self.body_len
    }

    /// Whether the request is a `HEAD` (its response has no body, whatever it says).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A request body that is not read whole before an upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    /// None: no body, or one of `Content-Length` up to the connection's
    /// `request_buffer` ([`RequestHead::body_len`]).
    No,
    /// A `Content-Length` body larger than `request_buffer`.
    Length(u64),
    /// A chunked body (RFC 9112 §7.1).
    Chunked,
}

/// A request head the codec answers itself, with the status [`Refusal::status`] gives
/// and the connection closed (its next bytes cannot be trusted to start a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a valid HTTP/1.1 head (RFC 9112 §2.2, §3).
    #[error("malformed request")]
    Malformed,
    /// More header fields than tether takes, or a head over `max_header_bytes`.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// Body framing that cannot be read without guessing (RFC 9112 §6.3): an invalid
    /// or repeated `Content-Length`, `Transfer-Encoding` with `Content-Length`, or a
    /// transfer coding list that does not end in `chunked`.
    #[error("invalid message framing")]
    Framing,
    /// A transfer coding other than `chunked` alone (RFC 9112 §6.1: 501).
    #[error("unsupported transfer coding")]
    Coding,
}

impl Refusal {
    /// The status tether answers with.
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::Malformed | Refusal::Framing => http::StatusCode::BAD_REQUEST,
            Refusal::HeadTooLarge => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Coding => http::StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// What [`parse_request`] found at the start of the buffer. Unboxed though the head is
/// large: it lives on the stack for one match, and boxing would allocate per request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'b> {
    /// A complete head tether takes.
    Fast(RequestHead<'b>),
    /// The head is not complete yet.
    Partial,
    /// A head answered with an error status and a close.
    Refuse(Refusal),
    /// A `CONNECT` (answered 501 by the proxy).
    Connect,
    /// A `Host` missing, repeated or invalid (answered 400 by the proxy).
    InvalidHost,
    /// The HTTP/2 connection preface (RFC 9113 §3.4): a client with prior knowledge,
    /// whose connection is for the HTTP/2 server when this is its first message.
    Http2Preface,
}

/// The header names the codec acts on, told apart by length first so a field costs
/// one or two comparisons instead of one per name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Te,
    Cookie,
    /// `Date`: a response without one gets one (RFC 9110 §6.6.1).
    Date,
    XForwardedFor,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`: tether sets them for this hop.
    XForwardedThisHop,
    /// The other fixed hop-by-hop names (`Keep-Alive`, `Proxy-*`, `Trailer`).
    HopByHop,
    Other,
}

impl Known {
    fn of(name: &str) -> Known {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match name.len() {
            2 if is("te") => Known::Te,
            4 if is("host") => Known::Host,
            4 if is("date") => Known::Date,
            6 if is("expect") => Known::Expect,
            6 if is("cookie") => Known::Cookie,
            7 if is("upgrade") => Known::Upgrade,
            7 if is("trailer") => Known::HopByHop,
            10 if is("connection") => Known::Connection,
            10 if is("keep-alive") => Known::HopByHop,
            14 if is("content-length") => Known::ContentLength,
            15 if is("x-forwarded-for") => Known::XForwardedFor,
            16 if is("x-forwarded-host") => Known::XForwardedThisHop,
            16 if is("proxy-connection") => Known::HopByHop,
            17 if is("transfer-encoding") => Known::TransferEncoding,
            17 if is("x-forwarded-proto") => Known::XForwardedThisHop,
            18 if is("proxy-authenticate") => Known::HopByHop,
            19 if is("proxy-authorization") => Known::HopByHop,
            _ => Known::Other,
        }
    }

    /// Whether the name is removed from every message whatever `Connection` says: the
    /// same set as `headers::always_removed` plus `Connection` (a unit test holds them
    /// together).
    fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::Te
                | Known::TransferEncoding
                | Known::Upgrade
                | Known::HopByHop
        )
    }
}

/// Bytes of a request target passed on as they are: RFC 3986's
/// unreserved, sub-delims, `:`, `@`, `/`, `?` and `%` (no fragment).
const URI_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let extra = b"-._~!$&'()*+,;=:@/?%";
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

/// The origin-form target (path and query) and, for an absolute one, its authority.
/// `None` for a target tether does not take (400); `Some(Err)` for an absolute target
/// whose authority is not a valid host.
#[allow(clippy::type_complexity)]
fn request_target<'b>(
    method: &str,
    target: &'b str,
) -> Option<Result<(&'b str, Option<&'b [u8]>), ()>> {
    if !target.bytes().all(|b| URI_CHAR[b as usize]) {
        return None;
    }
    if target.starts_with('/') {
        return Some(Ok((target, None)));
    }
    // RFC 9112 §3.2.4: asterisk form, only for a server-wide OPTIONS.
    if target == "*" {
        return method
            .eq_ignore_ascii_case("OPTIONS")
            .then_some(Ok((target, None)));
    }
    // RFC 9112 §3.2.2: absolute form; the scheme says nothing tether acts on.
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    })?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // A query without a path would need a `/` put before it: rare enough to refuse.
    if rest[end..].is_empty() && authority.contains('?') {
        return None;
    }
    // Percent escapes are valid in a reg-name (RFC 3986 §3.2.2) but name no DNS host,
    // and URI parsers (hyper's among them) refuse them in an authority: so does tether.
    if authority.contains('%') || !headers::valid_host(authority.as_bytes()) {
        return Some(Err(()));
    }
    let path = if path.is_empty() { "/" } else { path };
    Some(Ok((path, Some(authority.as_bytes()))))
}

/// Room for the fields of one head, left uninitialised: httparse writes the ones it
/// parses. An initialised array is 3.2 KB of stores per head (`MAX_HEADERS` fields).
pub fn no_fields<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// Parses the request head at the start of `buf`. A body of known length up to
/// `max_body` bytes (the connection's `request_buffer`) is read whole before an
/// upstream is chosen and goes out in the same write as the head, so a slow client
/// never holds an upstream connection; larger and chunked bodies are
/// [`Streamed`].
pub fn parse_request<'b>(
    buf: &'b [u8],
    fields: &'b mut [MaybeUninit<httparse::Header<'b>>],
    max_body: usize,
) -> Parsed<'b> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // HTTP/2 prior knowledge opens with a request line httparse refuses.
        Err(_) if buf.starts_with(b"PRI * HTTP/2.0\r\n") => return Parsed::Http2Preface,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(Refusal::HeadTooLarge),
        Err(_) => return Parsed::Refuse(Refusal::Malformed),
    };
    let (Some(method), Some(raw_target), Some(version)) = (req.method, req.path, req.version)
    else {
        return Parsed::Refuse(Refusal::Malformed);
    };
    // RFC 9110 §9.3.6: a tunnel to anywhere, which a gateway does not open.
    if method.eq_ignore_ascii_case("CONNECT") {
        return Parsed::Connect;
    }
    // RFC 9112 §3.2: origin form, absolute form (whose authority is the host, §3.2.2)
    // or `OPTIONS *`; in RFC 3986 characters (httparse lets through more: a backtick,
    // braces, raw UTF-8, a fragment).
    let (target, authority) = match request_target(method, raw_target) {
        Some(Ok(t)) => t,
        Some(Err(())) => return Parsed::InvalidHost,
        None => return Parsed::Refuse(Refusal::Malformed),
    };
    let fields: &'b [httparse::Header<'b>] = req.headers;
    let mut host = None;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive = false;
    let mut wants_upgrade = false;
    let mut upgrade = None;
    let mut names_others = false;
    let mut trailers = false;
    let mut body_len = None;
    let mut chunked = false;
    let mut codings = 0;
    let mut expects_continue = false;
    let mut kinds = [Known::Other; MAX_HEADERS];
    for (f, kind) in fields.iter().zip(&mut kinds) {
        *kind = Known::of(f.name);
        match *kind {
            // Anything but one valid Host (RFC 9112 §3.2) is refused below (400).
            Known::Host => {
                hosts += 1;
                host = Some(f.value).filter(|h| headers::valid_host(h));
            }
            // One length, in plain digits: anything else (a list, a sign, a repeat) is
            // a question of where the message ends, which tether does not guess at
            // (RFC 9112 §6.3 item 5).
            Known::ContentLength => match (body_len, decimal(f.value)) {
                (None, Some(n)) => body_len = Some(n),
                _ => return Parsed::Refuse(Refusal::Framing),
            },
            // RFC 9112 §6.1: chunked must be the final coding, and only once; tether
            // decodes no other, so it takes `chunked` alone (in one field or several).
            Known::TransferEncoding => {
                let Some(v) = headers::text(f.value) else {
                    return Parsed::Refuse(Refusal::Framing);
                };
                for t in v.split(',').map(str::trim) {
                    codings += 1;
                    chunked = t.eq_ignore_ascii_case("chunked");
                    if t.is_empty() {
                        return Parsed::Refuse(Refusal::Framing);
                    }
                }
            }
            Known::Expect => {
                expects_continue |= f.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            Known::Connection => {
                let Some(v) = headers::text(f.value) else {
                    continue;
                };
                if v.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                    continue;
                }
                for t in v.split(',').map(str::trim) {
                    if t.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    } else if t.eq_ignore_ascii_case("upgrade") {
                        wants_upgrade = true;
                    }
                    names_others |= headers::names_other_header(t);
                }
            }
            Known::Upgrade => upgrade = Some(f.value),
            Known::Te => {
                trailers |= headers::text(f.value).is_some_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                });
            }
            _ => {}
        }
    }
    // RFC 9112 §3.2: one valid Host (an HTTP/1.0 request may have none); with an
    // absolute target, its authority is the host.
    let host = match (hosts, host, authority) {
        (0, _, Some(a)) if version == 0 => a,
        (0, _, None) if version == 0 => &[][..],
        (1, Some(h), a) => a.unwrap_or(h),
        _ => return Parsed::InvalidHost,
    };
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if version == 0 && codings > 0 {
        return Parsed::Refuse(Refusal::Framing);
    }
    // RFC 9112 §6.3 items 3 and 4: with both, the length is a smuggling attempt; a
    // coding list that does not end in chunked leaves no way to find the end.
    let streamed = match (codings, chunked, body_len) {
        (0, _, None) => Streamed::No,
        (0, _, Some(n)) if n <= max_body as u64 => Streamed::No,
        (0, _, Some(n)) => Streamed::Length(n),
        (_, true, None) if codings == 1 => Streamed::Chunked,
        (_, true, None) => return Parsed::Refuse(Refusal::Coding),
        _ => return Parsed::Refuse(Refusal::Framing),
    };
    let body_len = match streamed {
        Streamed::No => body_len.unwrap_or(0) as usize,
        _ => 0,
    };
    let body = buf.get(len..len + body_len).unwrap_or_default();
    // RFC 9110 §7.8: an HTTP/1.1 request asks to switch with `Connection: upgrade` and
    // `Upgrade`. Not to h2c (that upgrade is for tether itself, which takes HTTP/2 by
    // prior knowledge), and not with a body, which the switched connection would
    // have to carry first.
    let upgrade = upgrade
        .filter(|u| {
            wants_upgrade
                && version == 1
                && streamed == Streamed::No
                && body_len == 0
                && headers::is_text(u)
                && !u.trim_ascii().eq_ignore_ascii_case(b"h2c")
        })
        .map(<[u8]>::trim_ascii);
    // RFC 9112 §9.3: HTTP/1.0 persists only when asked to.
    let close = close || (version == 0 && !keep_alive);
    Parsed::Fast(RequestHead {
        len,
        method,
        target,
        host,
        authority_host: authority.is_some(),
        http10: version == 0,
        upgrade,
        fields,
        body_len,
        body,
        streamed,
        expects_continue,
        close,
        names_others,
        trailers,
        kinds,
    })
}

/// The affinity decision reads a fast-path request through this: `Cookie`, which every
/// request is asked for, is found by the name classes of the parse instead of by
/// comparing names again.
impl headers::Fields for RequestHead<'_> {
    fn values<'a>(&'a self, name: &'a http::HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let cookie = *name == http::header::COOKIE;
        self.fields
            .iter()
            .zip(&self.kinds)
            .filter(move |(f, &kind)| {
                if cookie {
                    kind == Known::Cookie
                } else {
                    f.name.eq_ignore_ascii_case(name.as_str())
                }
            })
            .map(|(f, _)| f.value)
    }
}

/// Whether any `Connection` value of `fields` names `name` (what `strip_hop_by_hop`
/// removes by name).
fn named_by_connection(fields: &[httparse::Header<'_>], name: &str) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .filter_map(|f| headers::text(f.value))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(name))
}

/// Whether a client field is dropped on the way upstream: hop-by-hop, named by
/// `Connection` (but `Host`, which a request always carries), or one that speaks for
/// tether in any spelling ([`headers::speaks_for_tether`]; `X-Forwarded-For` is
/// extended instead).
fn dropped_upstream(head: &RequestHead<'_>, name: &str, kind: Known) -> bool {
    kind.is_hop_by_hop()
        || kind == Known::XForwardedThisHop
        || (kind == Known::Expect && head.expects_continue)
        || (head.names_others
            && !matches!(kind, Known::Host | Known::ContentLength)
            && named_by_connection(head.fields, name))
        || (kind != Known::XForwardedFor && headers::speaks_for_tether(name.as_bytes()))
}

/// Writes one field line (RFC 9112 §5).
#[inline]
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the upstream request head for `head` into `out`, up to and without the
/// per-attempt fields ([`write_attempt`] ends the head). Same hygiene as the HTTP/2 path
/// (`prepare_request`): hop-by-hop fields and those `Connection` names dropped (`TE:
/// trailers` kept), client `x-tether-*` dropped, `X-Forwarded-For` extended with the
/// peer, `X-Forwarded-Proto` and `X-Forwarded-Host` describing this hop, and the
/// session id set.
pub fn write_request(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    peer: &[u8],
    secure: bool,
    session: &[u8],
) {
    write_request_with(out, head, peer, secure, session, None);
}

/// A route's header edit as the HTTP/1 writer applies it: which of the client's fields
/// not to relay, and the fields to write instead (the proxy's `config::HeaderEdit`,
/// whose names never include tether's own: `config::editable_header`).
pub trait Edit {
    /// Whether the client's lines of `name` (any case) are dropped.
    fn drops(&self, name: &str) -> bool;
    /// Writes the edit's own fields with `field(name, value)`.
    fn fields(&self, field: &mut dyn FnMut(&[u8], &[u8]));
    /// The request target to send instead of the client's (origin form), if any.
    fn target(&self) -> Option<&str> {
        None
    }
}

/// [`write_request`] with a route's header edit: the client's lines of a field it sets
/// or removes are not relayed, and its set and added fields are written before
/// tether's own.
pub fn write_request_edited(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    peer: &[u8],
    secure: bool,
    session: &[u8],
    edit: &dyn Edit,
) {
    write_request_with(out, head, peer, secure, session, Some(edit));
}

#[inline(always)]
fn write_request_with(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    peer: &[u8],
    secure: bool,
    session: &[u8],
    edit: Option<&dyn Edit>,
) {
    // Room for the head and what is added to it, so the copies below do not grow `out`.
    out.reserve(head.len + peer.len() + head.host.len() + session.len() + 256);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    let target = edit.and_then(|e| e.target()).unwrap_or(head.target);
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff = false;
    // RFC 9112 §3.2.2: an absolute target's authority replaces Host; HTTP/1.1 upstream
    // requests always carry one (§3.2). An edit that sets the host writes its own.
    if (head.authority_host || head.host.is_empty()) && !edit.is_some_and(|e| e.drops("host")) {
        field(out, b"host", head.host);
    }
    for (f, &kind) in head.fields.iter().zip(&head.kinds) {
        if dropped_upstream(head, f.name, kind) || (head.authority_host && kind == Known::Host) {
            continue;
        }
        if kind == Known::XForwardedFor {
            xff = true;
            continue;
        }
        if edit.is_some_and(|e| e.drops(f.name)) {
            continue;
        }
        field(out, f.name.as_bytes(), f.value);
    }
    if let Some(e) = edit {
        e.fields(&mut |n, v| field(out, n, v));
    }
    if head.trailers {
        field(out, b"te", b"trailers");
    }
    // The framing, restated: `Transfer-Encoding` is hop-by-hop (RFC 9112 §6.1).
    if head.streamed == Streamed::Chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    if let Some(protocol) = head.upgrade {
        field(out, b"connection", b"upgrade");
        field(out, b"upgrade", protocol);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    // Every line's value, joined (RFC 9110 §5.3), then the peer: `headers::forwarded`'s rule.
    if xff {
        for (f, &kind) in head.fields.iter().zip(&head.kinds) {
            if kind != Known::XForwardedFor || dropped_upstream(head, f.name, kind) {
                continue;
            }
            if let Some(p) = headers::text(f.value)
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                out.extend_from_slice(p.as_bytes());
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(peer);
    out.extend_from_slice(if secure {
        b"\r\nx-forwarded-proto: https\r\nx-forwarded-host: "
    } else {
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: "
    });
    out.extend_from_slice(head.host);
    out.extend_from_slice(b"\r\n");
    field(out, X_TETHER_SESSION.as_str().as_bytes(), session);
}

/// Ends a head written by [`write_request`] with what differs per endpoint tried: the
/// affinity outcome and, on failover or rebalance, the endpoint the session came from.
pub fn write_attempt(out: &mut Vec<u8>, outcome: &str, previous: Option<&str>) {
    field(
        out,
        X_TETHER_AFFINITY.as_str().as_bytes(),
        outcome.as_bytes(),
    );
    if let Some(p) = previous.filter(|p| headers::text(p.as_bytes()).is_some()) {
        field(out, X_TETHER_PREVIOUS.as_str().as_bytes(), p.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, relayed as it is.
    Chunked,
    /// Until the upstream closes the connection (HTTP/1.0 style).
    Close,
}

/// An upstream response head.
#[derive(Debug)]
pub struct ResponseHead<'b> {
    /// Bytes the head takes.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'b str,
    /// The header fields.
    pub fields: &'b [httparse::Header<'b>],
    /// How the body ends.
    pub framing: Framing,
    /// Whether the upstream connection can take another request afterwards.
    pub reusable: bool,
    /// Whether a `Connection` value names another header to drop.
    names_others: bool,
    /// Each field's name class, so the rewrite does not classify it again.
    kinds: [Known; MAX_HEADERS],
}

/// What [`parse_response`] found.
#[derive(Debug)]
pub enum ResponseParsed<'b> {
    /// A final response head.
    Head(ResponseHead<'b>),
    /// An informational (1xx) response of this many bytes, to be skipped as hyper's
    /// client does.
    Informational(usize),
    /// Not complete yet.
    Partial,
}

/// Parses the upstream response head at the start of `buf` (`head_request`: the
/// request was a HEAD).
pub fn parse_response<'b>(
    buf: &'b [u8],
    fields: &'b mut [MaybeUninit<httparse::Header<'b>>],
    head_request: bool,
) -> Result<ResponseParsed<'b>, Error> {
    parse_response_to(buf, fields, head_request, false)
}

/// [`parse_response`] for a request that asked to upgrade (`upgrade`): a 101 is then
/// its final answer, with no body, after which the connection carries the new
/// protocol (RFC 9110 §15.2.2).
pub fn parse_response_to<'b>(
    buf: &'b [u8],
    fields: &'b mut [MaybeUninit<httparse::Header<'b>>],
    head_request: bool,
    upgrade: bool,
) -> Result<ResponseParsed<'b>, Error> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, fields)
        .map_err(Error::Head)?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(ResponseParsed::Partial),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 && !upgrade {
        return Err(Error::Status(status));
    }
    if (100..200).contains(&status) && status != 101 {
        return Ok(ResponseParsed::Informational(len));
    }
    let fields: &'b [httparse::Header<'b>] = resp.headers;
    let mut reusable = resp.version == Some(1);
    let mut names_others = false;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut kinds = [Known::Other; MAX_HEADERS];
    for (f, kind) in fields.iter().zip(&mut kinds) {
        *kind = Known::of(f.name);
        match *kind {
            Known::ContentLength => {
                let v = decimal(f.value).ok_or(Error::ContentLength)?;
                if length.is_some_and(|l| l != v) {
                    return Err(Error::ContentLength);
                }
                length = Some(v);
            }
            Known::TransferEncoding => {
                if chunked.is_some() || !f.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(Error::TransferEncoding);
                }
                chunked = Some(());
            }
            Known::Connection => {
                // Nearly every upstream says exactly this.
                if f.value.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                match headers::text(f.value) {
                    Some(v) => {
                        for t in v.split(',') {
                            reusable &= !t.trim().eq_ignore_ascii_case("close");
                            names_others |= headers::names_other_header(t);
                        }
                    }
                    None => names_others = true,
                }
            }
            _ => {}
        }
    }
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if chunked.is_some() && resp.version == Some(0) {
        return Err(Error::TransferEncoding);
    }
    let framing = if status == 101 {
        reusable = false;
        Framing::Empty
    } else if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked.is_some() {
        // A message with both is suspect: relay it chunked, and never reuse the
        // connection it came on.
        reusable &= length.is_none();
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        reusable = false;
        Framing::Close
    };
    Ok(ResponseParsed::Head(ResponseHead {
        len,
        status,
        reason: resp.reason.unwrap_or(""),
        fields,
        framing,
        reusable,
        names_others,
        kinds,
    }))
}

/// The fields of an upstream response head as a map, for a response that goes to an
/// HTTP/2 client: the same fields [`write_response`] relays (hop-by-hop ones and those
/// `Connection` names dropped, `Content-Length` kept only for a body it frames).
///
/// `raw` holds the head's bytes from where it was parsed (`at`): each value is a slice
/// of it, so the map costs one allocation for the head instead of one per value.
pub fn response_fields(head: &ResponseHead<'_>, at: &[u8], raw: &bytes::Bytes) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(head.fields.len());
    let base = at.as_ptr() as usize;
    for (f, &kind) in head.fields.iter().zip(&head.kinds) {
        if kind.is_hop_by_hop()
            || (head.names_others
                && kind != Known::ContentLength
                && named_by_connection(head.fields, f.name))
            || (head.framing == Framing::Chunked && kind == Known::ContentLength)
        {
            continue;
        }
        // A value outside `raw` (a caller's mistake) is copied rather than misread.
        let start = (f.value.as_ptr() as usize).wrapping_sub(base);
        let range = start..start.saturating_add(f.value.len());
        let value = match raw.get(range.clone()) {
            Some(v) if v == f.value => raw.slice(range),
            _ => bytes::Bytes::copy_from_slice(f.value),
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(f.name.as_bytes()),
            http::HeaderValue::from_maybe_shared(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Writes tether's status line: its own version, whatever the upstream spoke (RFC 9110
/// §2.5), the three-digit code (all httparse accepts) and the reason.
fn status_line(out: &mut Vec<u8>, code: u16, reason: &str) {
    let code = code.min(999);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An interim (1xx) response head as a proxy forwards it: a proxy passes on the 1xx
/// responses it did not ask for itself (RFC 9110 §15.2), such as 103 Early Hints and a
/// 100 Continue the origin sends, without the hop-by-hop fields and those its
/// `Connection` names (RFC 9110 §7.6.1), which are also the connection-specific fields
/// HTTP/2 forbids (RFC 9113 §8.2.2). The one filter of interim heads, whichever
/// protocol the client speaks ([`write_informational`], [`informational_response`]).
pub struct Interim<'b> {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'b str,
    fields: &'b [httparse::Header<'b>],
}

impl<'b> Interim<'b> {
    /// Parses the complete interim head `raw` (as [`parse_response`] delimited it),
    /// with room for `fields`; `None` if it is not one.
    pub fn parse(raw: &'b [u8], fields: &'b mut [httparse::Header<'b>]) -> Option<Self> {
        let mut resp = httparse::Response::new(fields);
        let (Ok(httparse::Status::Complete(_)), Some(status)) = (resp.parse(raw), resp.code) else {
            return None;
        };
        Some(Interim {
            status,
            reason: resp.reason.unwrap_or(""),
            fields: resp.headers,
        })
    }

    /// The fields that go on to the client, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        let all = self.fields;
        all.iter()
            .filter(move |f| {
                !Known::of(f.name).is_hop_by_hop() && !named_by_connection(all, f.name)
            })
            .map(|f| (f.name, f.value))
    }
}

/// Writes the interim (1xx) response head `raw` for an HTTP/1.1 client, filtered as
/// [`Interim`] says.
pub fn write_informational(out: &mut Vec<u8>, raw: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Some(head) = Interim::parse(raw, &mut fields) else {
        return;
    };
    status_line(out, head.status, head.reason);
    for (name, value) in head.fields() {
        field(out, name.as_bytes(), value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The interim (1xx) response head `raw` for an HTTP/2 client, filtered as [`Interim`]
/// says (HTTP/2 has no reason phrase, RFC 9113 §8.3.2); `None` if it is not one.
pub fn informational_response(raw: &[u8]) -> Option<http::Response<()>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = Interim::parse(raw, &mut fields)?;
    let status = http::StatusCode::from_u16(head.status).ok()?;
    if !status.is_informational() {
        return None;
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    let map = resp.headers_mut();
    for (name, value) in head.fields() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    Some(resp)
}

/// A `Content-Length` value: one or more ASCII digits that fit 64 bits.
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Writes the client response head for `head`: hop-by-hop fields (and those
/// `Connection` names) dropped, the framing restated, `set_cookie` appended, and
/// `Connection: close` when this is the connection's last response.
pub fn write_response(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    set_cookie: Option<&[u8]>,
    close: bool,
) {
    write_response_to(out, head, set_cookie, close, false);
}

/// [`write_response`] for a client of either HTTP/1 version (`http10`: an HTTP/1.0
/// client, which cannot take chunked, so a chunked body goes to it decoded and
/// delimited by the close, RFC 9112 §6.3; and which keeps the connection only when
/// told so). A 101 says which protocol the connection switched to.
pub fn write_response_to(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    set_cookie: Option<&[u8]>,
    close: bool,
    http10: bool,
) {
    write_response_fields(out, head, http10);
    let connection = response_connection(head.status, head.framing, close, http10);
    end_response_head(out, set_cookie, connection);
}

/// The first part of a client response head for `head`, written as soon as the
/// upstream's head is read: the status line, its fields without the hop-by-hop ones
/// (and those `Connection` names, RFC 9110 §7.6.1), the framing restated, `Date` if it
/// has none, and for a 101 the protocol switched to. [`end_response_head`] ends it once
/// the exchange committed.
pub fn write_response_fields(out: &mut Vec<u8>, head: &ResponseHead<'_>, http10: bool) {
    write_response_fields_with(out, head, http10, None);
}

/// [`write_response_fields`] with a route's header edit: the pod's lines of a field it
/// sets or removes are not relayed, and its set and added fields follow the pod's.
pub fn write_response_fields_edited(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    http10: bool,
    edit: &dyn Edit,
) {
    write_response_fields_with(out, head, http10, Some(edit));
}

#[inline(always)]
fn write_response_fields_with(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    http10: bool,
    edit: Option<&dyn Edit>,
) {
    status_line(out, head.status, head.reason);
    let mut dated = false;
    for (f, &kind) in head.fields.iter().zip(&head.kinds) {
        // `Content-Length` frames the body being relayed: a `Connection` naming it
        // cannot take it away (that would leave the client no way to find the end).
        if kind.is_hop_by_hop()
            || (head.names_others
                && kind != Known::ContentLength
                && named_by_connection(head.fields, f.name))
            || (head.framing == Framing::Chunked && kind == Known::ContentLength)
        {
            continue;
        }
        if edit.is_some_and(|e| e.drops(f.name)) {
            continue;
        }
        dated |= kind == Known::Date;
        field(out, f.name.as_bytes(), f.value);
    }
    if let Some(e) = edit {
        e.fields(&mut |n, v| field(out, n, v));
    }
    if head.framing == Framing::Chunked && !http10 {
        field(out, b"transfer-encoding", b"chunked");
    }
    // RFC 9110 §6.6.1: a recipient with a clock forwarding a response without `Date`
    // adds one.
    if !dated {
        field(out, b"date", &http_date());
    }
    if head.status == 101 {
        field(out, b"connection", b"upgrade");
        let protocol = head.fields.iter().zip(&head.kinds);
        if let Some((f, _)) = protocol.into_iter().find(|(_, &k)| k == Known::Upgrade) {
            field(out, b"upgrade", f.value);
        }
    }
}

/// The `Connection` value a client response needs (RFC 9112 §9.3, §9.6): `close` when
/// it is the connection's last (`close`, a close-delimited body, or a chunked one an
/// HTTP/1.0 client gets decoded), `keep-alive` to an HTTP/1.0 client otherwise, none
/// for HTTP/1.1 or a 101 (which names its upgrade).
pub fn response_connection(
    status: u16,
    framing: Framing,
    close: bool,
    http10: bool,
) -> Option<&'static [u8]> {
    if status == 101 {
        None
    } else if close || framing == Framing::Close || (http10 && framing == Framing::Chunked) {
        Some(b"close")
    } else if http10 {
        Some(b"keep-alive")
    } else {
        None
    }
}

/// Ends a head [`write_response_fields`] began: the `Set-Cookie` of the session, the
/// `Connection` field, the empty line.
pub fn end_response_head(out: &mut Vec<u8>, set_cookie: Option<&[u8]>, connection: Option<&[u8]>) {
    if let Some(c) = set_cookie {
        field(out, b"set-cookie", c);
    }
    if let Some(c) = connection {
        field(out, b"connection", c);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an HTTP/1.1 response head for a response hyper's client produced (from an
/// h2c upstream; its hop-by-hop fields already gone), up to and without the
/// `Connection` field and the empty line: its fields, `Date` if it has none (RFC 9110
/// §6.6.1), and the framing restated (`length`, or `chunked`, or neither: the close).
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    fields: &http::HeaderMap,
    length: Option<u64>,
    chunked: bool,
) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    status_line(out, status, reason);
    for (name, value) in fields {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !fields.contains_key(http::header::DATE) {
        field(out, b"date", &http_date());
    }
    if let Some(n) = length {
        field(out, b"content-length", n.to_string().as_bytes());
    } else if chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
}

/// Writes one body frame for an HTTP/1 peer into `out` (RFC 9112 §7.1): data as one
/// chunk when `chunked` (as it is otherwise), trailers as the last chunk with the
/// trailer section (only when chunked: a body framed by length or by the close has
/// nowhere to carry them, and they are dropped). Returns whether the frame ended a
/// chunked body.
pub fn write_frame(
    out: &mut Vec<u8>,
    frame: http_body::Frame<bytes::Bytes>,
    chunked: bool,
) -> bool {
    match frame.into_data() {
        Ok(data) if chunked && !data.is_empty() => {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            false
        }
        Ok(data) => {
            out.extend_from_slice(&data);
            false
        }
        Err(frame) => match (frame.into_trailers(), chunked) {
            (Ok(trailers), true) => {
                out.extend_from_slice(b"0\r\n");
                write_trailer_map(out, &trailers);
                true
            }
            _ => false,
        },
    }
}

/// Writes a trailer section from a field map (the fields RFC 9110 §6.5.1 allows there)
/// and the empty line that ends it.
pub fn write_trailer_map(out: &mut Vec<u8>, trailers: &http::HeaderMap) {
    for (name, value) in trailers {
        if headers::allowed_in_trailers(name.as_str().as_bytes()) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The current time as an IMF-fixdate (RFC 9110 §5.6.7), formatted at most once a
/// second per thread.
pub fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let (at, date) = c.get();
        if at == second {
            return date;
        }
        let mut date = [b' '; 29];
        let text = httpdate::fmt_http_date(now);
        let n = text.len().min(29);
        date[..n].copy_from_slice(&text.as_bytes()[..n]);
        c.set((second, date));
        date
    })
}

/// Finds the end of a chunked body while its bytes are relayed unchanged.
///
/// Strict on purpose (CRLF line ends, hex sizes that fit 64 bits, bounded extension
/// and trailer lines): the client parses exactly the bytes this accepted.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Bytes left in the current chunk, or the size being read.
    size: u64,
    /// Digits or line bytes seen in the current line (bounds extensions and trailers).
    line: usize,
    /// Where in the input of the last [`Chunked::scan`] the trailer section began, if
    /// it began there (the byte after the last chunk's size line).
    trailer_at: Option<usize>,
    /// Chunk data seen so far (what `max_body_bytes` limits).
    data: u64,
    /// Trailer fields and bytes seen so far (bounded like a head: [`MAX_HEADERS`]
    /// fields, [`MAX_TRAILER`] bytes).
    trailer_fields: usize,
    trailer_bytes: usize,
}

/// Largest trailer section accepted (hyper's bound too).
pub const MAX_TRAILER: usize = 16 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    /// A trailer field's name.
    Trailer,
    /// A trailer field's value.
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Whether `b` may be in a token (RFC 9110 §5.6.2): a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

impl Chunked {
    /// Consumes `input`, the next bytes of the body. Returns how many of them belong to
    /// the body (all of them unless it ended inside `input`) and whether it ended.
    pub fn scan(&mut self, input: &[u8]) -> Result<(usize, bool), Error> {
        self.scan_into(input, None)
    }

    /// As [`Chunked::scan`], and appends the chunk data (the decoded body) to `data`:
    /// for a client that cannot take chunked (HTTP/1.0).
    pub fn decode(&mut self, input: &[u8], data: &mut Vec<u8>) -> Result<(usize, bool), Error> {
        self.scan_into(input, Some(data))
    }

    fn scan_into(
        &mut self,
        input: &[u8],
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), Error> {
        self.trailer_at = None;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.size > u64::MAX >> 4 {
                            return Err(Error::Chunked);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.line += 1;
                    }
                    None if self.line == 0 => return Err(Error::Chunked),
                    None => {
                        self.state = match b {
                            b' ' | b'\t' => State::SizeWs,
                            b';' => State::Ext,
                            b'\r' => State::SizeLf,
                            _ => return Err(Error::Chunked),
                        }
                    }
                },
                State::SizeWs => {
                    self.state = match b {
                        b' ' | b'\t' => State::SizeWs,
                        b';' => State::Ext,
                        b'\r' => State::SizeLf,
                        _ => return Err(Error::Chunked),
                    }
                }
                State::Ext => {
                    self.line += 1;
                    if self.line > MAX_LINE || (b < 32 && b != b'\t' && b != b'\r') || b == 127 {
                        return Err(Error::Chunked);
                    }
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::Chunked);
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        self.trailer_at = Some(i + 1);
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    if let Some(sink) = sink.as_deref_mut() {
                        sink.extend_from_slice(&input[i..i + take]);
                    }
                    self.size -= take as u64;
                    self.data = self.data.saturating_add(take as u64);
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    self.state = if b == b'\r' {
                        State::DataLf
                    } else {
                        return Err(Error::Chunked);
                    }
                }
                State::DataLf => {
                    self.state = if b == b'\n' {
                        State::Size
                    } else {
                        return Err(Error::Chunked);
                    }
                }
                // RFC 9112 §7.1.2: each trailer line is a field line, `token ":" value`
                // (no obs-fold); anything else makes the body malformed.
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else if is_tchar(b) && self.trailer_fields < MAX_HEADERS {
                        self.trailer_fields += 1;
                        self.trailer_bytes += 1;
                        self.line = 1;
                        State::Trailer
                    } else {
                        return Err(Error::Chunked);
                    }
                }
                State::Trailer => {
                    self.line += 1;
                    self.trailer_bytes += 1;
                    if self.line > MAX_LINE || self.trailer_bytes > MAX_TRAILER {
                        return Err(Error::Chunked);
                    }
                    if b == b':' {
                        self.state = State::TrailerValue;
                    } else if !is_tchar(b) {
                        return Err(Error::Chunked);
                    }
                }
                State::TrailerValue => {
                    self.line += 1;
                    self.trailer_bytes += 1;
                    if self.line > MAX_LINE || self.trailer_bytes > MAX_TRAILER {
                        return Err(Error::Chunked);
                    }
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\t' | b' '..=b'~' | 0x80.. => {}
                        _ => return Err(Error::Chunked),
                    }
                }
                State::TrailerLf => {
                    self.state = if b == b'\n' {
                        State::TrailerStart
                    } else {
                        return Err(Error::Chunked);
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(Error::Chunked);
                    }
                    self.state = State::Done;
                    return Ok((i + 1, true));
                }
                State::Done => return Ok((i, true)),
            }
            i += 1;
        }
        Ok((input.len(), self.state == State::Done))
    }
}

impl Chunked {
    /// Where the trailer section began in the input of the last [`Chunked::scan`], if it
    /// began there.
    pub fn trailer_start(&self) -> Option<usize> {
        self.trailer_at
    }

    /// Bytes of chunk data seen so far.
    pub fn data_len(&self) -> u64 {
        self.data
    }
}

/// Writes the trailer section `section` (the field lines after the last chunk and the
/// empty line that ends them, as [`Chunked`] accepted them) with only the fields
/// [`headers::allowed_in_trailers`] lets through (RFC 9110 §6.5.1), and the empty line.
pub fn write_trailers(out: &mut Vec<u8>, section: &[u8]) {
    for (name, value) in trailer_fields(section) {
        out.extend_from_slice(name);
        out.push(b':');
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The fields of a trailer section (as [`Chunked`] accepted it) that may be relayed
/// (RFC 9110 §6.5.1, [`headers::allowed_in_trailers`]): each name and its value as
/// sent (after the colon, blanks included). The one reading of a trailer section,
/// whether it goes on as bytes or as a field map.
pub fn trailer_fields(section: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    section.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Field names are tokens: no blank before the colon, no obs-fold line.
        let colon = line.iter().position(|&b| b == b':')?;
        let name = &line[..colon];
        (!name.is_empty()
            && name.iter().all(|&b| b.is_ascii_graphic())
            && headers::allowed_in_trailers(name))
        .then(|| (name, &line[colon + 1..]))
    })
}

/// Checks the client head [`write_response`] writes for one raw upstream response: it
/// parses whole, keeps the status, relays upstream fields with name and value unchanged
/// and in the upstream's order, relays no hop-by-hop field, and ends with what tether
/// adds. `Ok(false)`: not a final response head. For the unit test below and the
/// `h1_response` fuzz target.
#[doc(hidden)]
pub fn response_rewrite_agrees(raw: &[u8]) -> Result<bool, String> {
    let mut fields = no_fields();
    let Ok(ResponseParsed::Head(h)) = parse_response(raw, &mut fields, false) else {
        return Ok(false);
    };
    let mut out = Vec::new();
    write_response(&mut out, &h, Some(b"t=v"), false);
    let mut sent = [httparse::EMPTY_HEADER; MAX_HEADERS + 3];
    let mut parsed = httparse::Response::new(&mut sent);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => return Err(format!("wrote an unparsable head ({other:?})")),
    }
    if parsed.code != Some(h.status) {
        return Err(format!("status {:?} for {}", parsed.code, h.status));
    }
    let mut added: Vec<(&str, &[u8])> = Vec::new();
    if h.framing == Framing::Chunked {
        added.push(("transfer-encoding", b"chunked"));
    }
    let kept_date = h.fields.iter().zip(&h.kinds).any(|(f, &k)| {
        k == Known::Date && !(h.names_others && named_by_connection(h.fields, f.name))
    });
    if !kept_date {
        // Compared by name: the clock may tick between writing and checking.
        added.push(("date", b""));
    }
    added.push(("set-cookie", b"t=v"));
    if h.framing == Framing::Close {
        added.push(("connection", b"close"));
    }
    let sent = parsed.headers;
    let Some(split) = sent.len().checked_sub(added.len()) else {
        return Err(format!("{} fields written", sent.len()));
    };
    let tail: Vec<_> = sent[split..]
        .iter()
        .map(|f| match f.name {
            "date"
                if std::str::from_utf8(f.value)
                    .is_ok_and(|d| httpdate::parse_http_date(d).is_ok()) =>
            {
                (f.name, &b""[..])
            }
            _ => (f.name, f.value),
        })
        .collect();
    if tail != added {
        return Err(format!("ends with {tail:?}"));
    }
    let mut upstream = h.fields.iter();
    for f in &sent[..split] {
        if Known::of(f.name).is_hop_by_hop() {
            return Err(format!("relayed {:?}", f.name));
        }
        if !upstream.any(|u| u.name == f.name && u.value == f.value) {
            return Err(format!(
                "{}: {:?} is not an upstream field in order",
                f.name,
                String::from_utf8_lossy(f.value)
            ));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_BUFFER;

    fn fast(raw: &[u8]) -> Option<String> {
        let mut fields = no_fields();
        match parse_request(raw, &mut fields, DEFAULT_BUFFER) {
            Parsed::Fast(h) => {
                let mut out = Vec::new();
                write_request(&mut out, &h, b"192.0.2.1", false, b"s1");
                write_attempt(&mut out, "sticky", None);
                Some(String::from_utf8(out).unwrap())
            }
            _ => None,
        }
    }

    #[test]
    fn name_classes_agree_with_the_shared_hop_by_hop_list() {
        for name in [
            "Connection",
            "TE",
            "te",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authenticate",
            "proxy-authorization",
            "Host",
            "Cookie",
            "Content-Length",
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-Forwarded-Proto",
            "tea",
            "Trailers",
            "connectio",
            "x-kept",
            "",
            "Proxy-Authorizatio",
        ] {
            assert_eq!(
                Known::of(name).is_hop_by_hop(),
                headers::is_hop_by_hop_name(name),
                "{name}"
            );
        }
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"18446744073709551616", b"+1", b"1 ", b"0x1"] {
            assert_eq!(decimal(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// What `parse_request` makes of `raw`, in a word.
    fn verdict(raw: &[u8]) -> String {
        let mut fields = no_fields();
        match parse_request(raw, &mut fields, DEFAULT_BUFFER) {
            Parsed::Fast(h) => match h.streamed {
                Streamed::No => format!("whole {}", h.body_len),
                Streamed::Length(n) => format!("stream {n}"),
                Streamed::Chunked => "stream chunked".into(),
            },
            Parsed::Partial => "partial".into(),
            Parsed::Refuse(r) => format!("refuse {}", r.status().as_u16()),
            Parsed::Connect => "connect".into(),
            Parsed::InvalidHost => "invalid host".into(),
            Parsed::Http2Preface => "http/2".into(),
        }
    }

    #[test]
    fn every_body_framing_is_streamed_refused_or_read_whole_by_rfc_9112() {
        let large = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            DEFAULT_BUFFER + 1
        );
        let cases: [(&[u8], &str); 30] = [
            (large.as_bytes(), "stream 65537"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", "whole 3"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "stream chunked"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n", "stream chunked"),
            // RFC 9112 §6.3 item 3: both is a smuggling attempt.
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "refuse 400"),
            // §6.3 item 4: chunked not last, or twice.
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "refuse 501"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "refuse 501"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", "refuse 400"),
            // §6.3 item 5: one length in digits.
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", "refuse 400"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc", "whole 3"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", "whole 0"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "whole 0"),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "connect"),
            (b"GET / HTTP/1.1\r\n\r\n", "invalid host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "invalid host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", "refuse 400"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", "partial"),
            // RFC 9112 §3.2: targets in RFC 3986 characters, no fragment.
            (b"GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n", "refuse 400"),
            (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", "refuse 400"),
            (b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", "refuse 400"),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "refuse 400"),
            (b"GET http://a@b/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid host"),
            (b"GET http://b/ HTTP/1.1\r\n\r\n", "invalid host"),
            (b"GET / HTTP/1.0\r\n\r\n", "whole 0"),
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "refuse 400"),
        ];
        for (raw, want) in cases {
            assert_eq!(verdict(raw), want, "{}", String::from_utf8_lossy(raw));
        }
        let raw = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(verdict(raw), "http/2");
    }

    #[test]
    fn targets_hosts_versions_and_upgrades_are_read_as_rfc_9112_says() {
        // (head, host, target, http10, close, upgrade)
        type Case<'a> = (&'a [u8], &'a str, &'a str, bool, bool, Option<&'a str>);
        let cases: [Case; 7] = [
            (b"GET http://B.test:8080/x?y HTTP/1.1\r\nHost: a.test\r\n\r\n", "B.test:8080", "/x?y", false, false, None),
            (b"GET HTTPS://b.test HTTP/1.1\r\nHost: a.test\r\n\r\n", "b.test", "/", false, false, None),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "a", "*", false, false, None),
            (b"GET / HTTP/1.0\r\n\r\n", "", "/", true, true, None),
            (b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", "a", "/", true, false, None),
            (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket \r\n\r\n", "a", "/ws", false, false, Some("websocket")),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "a", "/", false, false, None),
        ];
        for (raw, host, target, http10, close, upgrade) in cases {
            let mut fields = no_fields();
            let Parsed::Fast(h) = parse_request(raw, &mut fields, DEFAULT_BUFFER) else {
                panic!("{}", String::from_utf8_lossy(raw));
            };
            let got = (
                std::str::from_utf8(h.host).unwrap(),
                h.target,
                h.http10,
                h.close,
                h.upgrade.map(|u| std::str::from_utf8(u).unwrap()),
            );
            assert_eq!(
                got,
                (host, target, http10, close, upgrade),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Upstream, the authority is the one Host, and an empty Host stands for none.
        let out = fast(b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        assert!(
            out.starts_with("GET /x HTTP/1.1\r\nhost: b.test\r\n"),
            "{out}"
        );
        let hosts = out
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"));
        assert_eq!(hosts.count(), 1, "{out}");
        assert!(out.contains("x-forwarded-host: b.test\r\n"), "{out}");
        let out = fast(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\nhost: \r\n"), "{out}");
    }

    #[test]
    fn a_small_body_is_taken_with_its_length_and_found_whole_only_when_all_of_it_came() {
        let mut fields = no_fields();
        let raw = b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET";
        let Parsed::Fast(h) = parse_request(raw, &mut fields, DEFAULT_BUFFER) else {
            panic!("a 5-byte body is the fast path's");
        };
        assert_eq!((h.body_len, h.body), (5, &b"hello"[..]));
        assert!(h.body_complete());
        assert_eq!(
            h.total_len(),
            raw.len() - 3,
            "the next request starts after the body"
        );
        // A body is never sent twice, whatever the method (as on the hyper path).
        assert!(!h.replayable());

        let mut fields = no_fields();
        let cut = b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel";
        let Parsed::Fast(h) = parse_request(cut, &mut fields, DEFAULT_BUFFER) else {
            panic!("the head is complete");
        };
        assert!(!h.body_complete() && h.body.is_empty());
        // A body is never sent twice, even with an idempotent method (as on the hyper
        // path, which streams bodies and so cannot replay them).
        assert!(!h.replayable(), "a PUT with a body is not replayed");

        let mut fields = no_fields();
        let at_limit =
            format!("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: {DEFAULT_BUFFER}\r\n\r\n");
        assert!(matches!(
            parse_request(at_limit.as_bytes(), &mut fields, DEFAULT_BUFFER),
            Parsed::Fast(h) if h.body_len == DEFAULT_BUFFER
        ));
        let mut fields = no_fields();
        let Parsed::Fast(h) = parse_request(
            b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            &mut fields,
            DEFAULT_BUFFER,
        ) else {
            panic!("an empty body is taken");
        };
        assert!(h.replayable() && h.body_complete());
    }

    #[test]
    fn request_head_is_rewritten_with_the_hyper_paths_hygiene() {
        let out = fast(
            b"GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\n\
              X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers, deflate\r\nX-Tether-Session: spoof\r\n\
              X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto: https\r\n\
              X_Tether_Session: spoof\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil\r\n\
              Cookie: a=b\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nCookie: a=b\r\nContent-Length: 0\r\n\
             te: trailers\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: a.example\r\nx-tether-session: s1\r\nx-tether-affinity: sticky\r\n\r\n"
        );
    }

    /// Upstream heads in every line shape the copy meets (blanks after the colon or
    /// none, trailing blanks, bare-LF line ends, empty values) with fields that are
    /// relayed, dropped, or restated.
    #[test]
    fn response_fields_are_relayed_unchanged_in_order_on_generated_heads() {
        const FIELDS: &[&[u8]] = &[
            b"Server: nginx",
            b"Date: Thu, 26 Nov 2026 16:00:00 GMT",
            b"Content-Type: text/plain",
            b"Content-Length: 5",
            b"Connection: keep-alive",
            b"Connection: close, X-Drop",
            b"X-Drop: 1",
            b"Keep-Alive: timeout=5",
            b"Transfer-Encoding: chunked",
            b"Set-Cookie: a=1",
            b"Set-Cookie: b=2",
            b"X-Empty:",
            b"X-Pod: pod-1",
        ];
        let mut next = crate::testing::picker(0x2545_f491_4f6c_dd1d);
        let mut relayed = 0;
        for _ in 0..20_000 {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            for _ in 0..next(9) {
                let line = FIELDS[next(FIELDS.len())];
                let colon = line.iter().position(|&b| b == b':').unwrap();
                raw.extend_from_slice(&line[..=colon]);
                raw.extend_from_slice([&b""[..], b" ", b" \t "][next(3)]);
                raw.extend_from_slice(line[colon + 1..].trim_ascii_start());
                raw.extend_from_slice([&b"\r\n"[..], b"\r\n", b" \r\n", b"\n"][next(4)]);
            }
            raw.extend_from_slice(b"\r\n");
            match response_rewrite_agrees(&raw) {
                Ok(r) => relayed += usize::from(r),
                Err(e) => panic!("{}\n{e}", String::from_utf8_lossy(&raw)),
            }
        }
        assert!(relayed > 10_000, "only {relayed} heads were relayed");
    }

    fn response(raw: &[u8], head_request: bool) -> Result<(Framing, bool, String), Error> {
        let mut fields = no_fields();
        match parse_response(raw, &mut fields, head_request)? {
            ResponseParsed::Head(h) => {
                let mut out = Vec::new();
                write_response(&mut out, &h, Some(b"t=v; Path=/"), false);
                Ok((h.framing, h.reusable, String::from_utf8(out).unwrap()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_interim_head_loses_the_same_fields_for_either_protocol() {
        // RFC 9110 §7.6.1 and RFC 9113 §8.2.2: hop-by-hop fields, those `Connection`
        // names, and so every connection-specific one HTTP/2 forbids.
        let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x-foo\r\n\
X-Foo: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\
Upgrade: h2c\r\nProxy-Connection: keep-alive\r\nLink: </b.js>\r\n\r\n";
        let mut out = Vec::new();
        write_informational(&mut out, raw);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nLink: </b.js>\r\n\r\n"
        );
        let resp = informational_response(raw).expect("a 1xx");
        assert_eq!(resp.status(), http::StatusCode::EARLY_HINTS);
        let got: Vec<(&str, &[u8])> = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(got, [("link", &b"</a.css>"[..]), ("link", b"</b.js>")]);
        assert!(informational_response(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(informational_response(b"HTTP/1.1 103 Early").is_none());
    }

    #[test]
    fn response_field_values_for_http2_clients_are_exactly_the_pods_after_a_1xx() {
        let wire = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
HTTP/1.1 200 OK\r\nx-a: one\r\nconnection: close\r\nx-b: two words\r\ncontent-length: 2\r\n\r\nok";
        let mut fields = no_fields();
        let Ok(ResponseParsed::Informational(skip)) = parse_response(wire, &mut fields, false)
        else {
            panic!("a 103 first");
        };
        let head = &wire[skip..];
        let mut fields = no_fields();
        let Ok(ResponseParsed::Head(h)) = parse_response(head, &mut fields, false) else {
            panic!("then the 200");
        };
        let raw = bytes::Bytes::copy_from_slice(&head[..h.len]);
        let map = response_fields(&h, head, &raw);
        let got: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let want: Vec<(&str, &[u8])> = vec![
            ("x-a", b"one"),
            ("x-b", b"two words"),
            ("content-length", b"2"),
        ];
        assert_eq!(got, want);
        // Given bytes the head was not parsed from, values are copied, not misread.
        let elsewhere = bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\n");
        let map = response_fields(&h, wire, &elsewhere);
        let got: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let ok = |raw: &[u8], head| response(raw, head).map(|(f, r, _)| (f, r));
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                false
            ),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            ok(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok((Framing::Length(1), false))
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
        ] {
            assert!(
                response(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut fields = no_fields();
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1",
                &mut fields,
                false
            ),
            Ok(ResponseParsed::Informational(37))
        ));
    }

    #[test]
    fn response_head_drops_hop_by_hop_and_restates_framing() {
        let (_, _, out) = response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\n\
              Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Pod: a\r\n\
              Date: Tue, 01 Dec 2026 15:00:00 GMT\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-Pod: a\r\nDate: Tue, 01 Dec 2026 15:00:00 GMT\r\n\
             transfer-encoding: chunked\r\nset-cookie: t=v; Path=/\r\n\r\n"
        );
        let (_, _, out) = response(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        // RFC 9110 §6.6.1: a response without Date gets one, in IMF-fixdate.
        let date = out.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        // A Connection naming Content-Length cannot unframe the body.
        let (framing, _, out) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(framing, Framing::Length(5));
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
    }

    #[test]
    fn chunked_scanner_finds_the_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let (a, done) = c.scan(&body[..split]).unwrap();
            if done {
                assert_eq!(a, end);
                continue;
            }
            assert_eq!(a, split);
            let (b, done) = c.scan(&body[split..]).unwrap();
            assert!(done, "split {split}");
            assert_eq!(split + b, end);
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"fffffffffffffffff\r\n",
            b"\r\n",
            b"5;a\x01b\r\n",
            b"0\r\nX: 1\nY: 2\r\n\r\n",
            // Trailer lines are field lines (RFC 9112 §7.1.2): a name, a colon, a value
            // in visible characters; no obs-fold.
            b"0\r\n\x01\x00 1\r\n\r\n",
            b"0\r\nX 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nX: 1\r\n folded\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(
                Chunked::default().scan(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Trailers are bounded like a head: 100 fields, 16 KiB.
        let many = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
        let long = format!(
            "0\r\n{}\r\n",
            format!("X: {}\r\n", "v".repeat(4000)).repeat(5)
        );
        let fits = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS));
        assert!(Chunked::default().scan(fits.as_bytes()).is_ok());
        for bad in [many.as_bytes(), long.as_bytes()] {
            assert!(
                Chunked::default().scan(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
