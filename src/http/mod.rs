//! HTTP message rules every path shares, with no knowledge of backends or sessions:
//! which header fields are hop-by-hop or speak for tether, what a valid `Host` is, what
//! may ride in trailers ([`headers`]), and HTTP/1 messages as bytes: heads parsed with
//! httparse, body framing, heads written back ([`wire`]). Protocol code here cites the
//! RFC 9110/9112 clause it implements.

pub mod h2;
pub mod headers;
pub mod oracle;
pub mod wire;
