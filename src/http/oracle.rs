//! hyper's HTTP/1 parsers as an oracle for tether's codec ([`super::wire`]), for the
//! `h1_framing` fuzz target and the unit tests below.
//!
//! The rule: where hyper accepts a message and tether takes it, both must read the same
//! message (the same method and target, the same body bytes, and for a response the
//! same status); where tether takes a message hyper refuses, that is a finding, unless
//! it is one of the deliberate differences listed in [`request_framing_agrees`]. Where
//! tether refuses and hyper accepts, nothing is wrong: tether is allowed to be stricter
//! (RFC 9112 §6.3 lets a server refuse what it cannot frame without guessing).
//!
//! Each check runs hyper on a current-thread runtime over an in-memory pipe: slow for a
//! request path, fine for a fuzzer.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire::{self, Framing, Parsed, ResponseParsed, Streamed};
use crate::config::DEFAULT_BUFFER;

/// A request as one parser read it: method, target and the whole body.
type Read = (String, String, Vec<u8>);

/// tether's reading of the first request in `raw`: `None` when it refuses it, or
/// when the message is not complete in `raw`.
fn tether_reads_request(raw: &[u8]) -> Option<Read> {
    let mut fields = wire::no_fields();
    let Parsed::Fast(h) = wire::parse_request(raw, &mut fields, DEFAULT_BUFFER) else {
        return None;
    };
    let rest = &raw[h.len..];
    let body = match h.streamed {
        Streamed::No => rest.get(..h.body_len)?.to_vec(),
        Streamed::Length(n) => rest.get(..usize::try_from(n).ok()?)?.to_vec(),
        Streamed::Chunked => {
            let mut data = Vec::new();
            match wire::Chunked::default().decode(rest, &mut data) {
                Ok((_, true)) => data,
                _ => return None,
            }
        }
    };
    Some((h.method.to_owned(), h.target.to_owned(), body))
}

/// hyper's reading of the first request in `raw` (sent, then the write side closed):
/// `None` when it refused the head or the body did not arrive whole.
fn hyper_reads_request(raw: &[u8]) -> Option<Read> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(raw.len() + 4096);
        let seen: Arc<Mutex<Option<Read>>> = Arc::default();
        let record = seen.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                if let Ok(body) = body.collect().await {
                    let mut seen = record.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.is_none() {
                        // An absolute target goes upstream as its path (the
                        // authority becomes the Host): compare what goes upstream.
                        let target = match (parts.uri.scheme(), parts.uri.path_and_query()) {
                            (Some(_), Some(pq)) => pq.to_string(),
                            (Some(_), None) => "/".to_owned(),
                            (None, _) => parts.uri.to_string(),
                        };
                        *seen = Some((parts.method.to_string(), target, body.to_bytes().to_vec()));
                    }
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
            }
        });
        // Half-closes allowed: the request is all sent before hyper answers.
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(server), svc);
        let serve = tokio::spawn(conn);
        let _ = client.write_all(raw).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
        let _ = serve.await;
        let read = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
        read
    })
}

/// Checks one raw request against hyper's server parser. `Ok(false)`: tether does not
/// take it whole (nothing to compare). `Err`: the two read it differently, or tether
/// takes what hyper refuses.
///
/// Deliberate differences, where tether takes what hyper refuses: none so far.
#[doc(hidden)]
pub fn request_framing_agrees(raw: &[u8]) -> Result<bool, String> {
    let Some(tether) = tether_reads_request(raw) else {
        return Ok(false);
    };
    let Some(hyper) = hyper_reads_request(raw) else {
        return Err(format!("tether takes a request hyper refuses: {tether:?}"));
    };
    if tether != hyper {
        return Err(format!(
            "tether reads {:?} {:?} ({} body bytes), hyper {:?} {:?} ({} body bytes)",
            tether.0,
            tether.1,
            tether.2.len(),
            hyper.0,
            hyper.1,
            hyper.2.len()
        ));
    }
    Ok(true)
}

/// A response as one parser read it: status and the whole body.
type Answer = (u16, Vec<u8>);

/// tether's reading of the response in `raw` to a GET: `None` when it refuses it or
/// the body is not whole (a close-delimited body ends where `raw` does).
fn tether_reads_response(raw: &[u8]) -> Option<Answer> {
    let mut at = 0;
    loop {
        let mut fields = wire::no_fields();
        match wire::parse_response(&raw[at..], &mut fields, false).ok()? {
            ResponseParsed::Informational(n) => at += n,
            ResponseParsed::Partial => return None,
            ResponseParsed::Head(h) if h.status < 100 => return None,
            ResponseParsed::Head(h) => {
                let rest = &raw[at + h.len..];
                let body = match h.framing {
                    Framing::Empty => Vec::new(),
                    Framing::Length(n) => rest.get(..usize::try_from(n).ok()?)?.to_vec(),
                    Framing::Close => rest.to_vec(),
                    Framing::Chunked => {
                        let mut data = Vec::new();
                        match wire::Chunked::default().decode(rest, &mut data) {
                            Ok((_, true)) => data,
                            _ => return None,
                        }
                    }
                };
                return Some((h.status, body));
            }
        }
    }
}

/// hyper's client reading of `raw` as the response to a GET: `None` when it refused it.
fn hyper_reads_response(raw: &[u8]) -> Option<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let (client, mut server) = tokio::io::duplex(raw.len() + 4096);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client))
                .await
                .ok()?;
        tokio::spawn(conn);
        let raw = raw.to_vec();
        tokio::spawn(async move {
            let mut head = [0u8; 4096];
            let _ = server.read(&mut head).await;
            let _ = server.write_all(&raw).await;
            let _ = server.shutdown().await;
        });
        let req = http::Request::get("/")
            .header("host", "a")
            .body(Empty::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes().to_vec();
        Some((status, body))
    })
}

/// Checks one raw response (to a GET) against hyper's client parser, by the same rule
/// as [`request_framing_agrees`].
///
/// Deliberate differences, where tether takes what hyper refuses: none so far.
#[doc(hidden)]
pub fn response_framing_agrees(raw: &[u8]) -> Result<bool, String> {
    let Some(tether) = tether_reads_response(raw) else {
        return Ok(false);
    };
    let Some(hyper) = hyper_reads_response(raw) else {
        return Err(format!(
            "tether takes a response hyper refuses: {} with {} body bytes",
            tether.0,
            tether.1.len()
        ));
    };
    if tether != hyper {
        return Err(format!(
            "tether reads {} with {} body bytes, hyper {} with {}",
            tether.0,
            tether.1.len(),
            hyper.0,
            hyper.1.len()
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_both_parsers_take_are_read_alike() {
        for raw in [
            &b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(
                request_framing_agrees(raw),
                Ok(true),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Found by the fuzzer: an absolute target whose authority has a percent
        // escape, which hyper's URI parser refuses; tether refuses it too.
        let escaped = b"#'GET http://~~C%CCCCC~/y HTTP/1.0\r\n\r\n";
        assert_eq!(request_framing_agrees(escaped), Ok(false));
        // Refused by tether (ambiguous framing): nothing to compare, nothing wrong.
        let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(request_framing_agrees(smuggle), Ok(false));
    }

    #[test]
    fn responses_both_parsers_take_are_read_alike() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        ] {
            assert_eq!(
                response_framing_agrees(raw),
                Ok(true),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Found by the fuzzer: chunked in an HTTP/1.0 response is faulty framing (RFC
        // 9112 §6.1), which hyper refuses and tether now does too.
        let old = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(response_framing_agrees(old), Ok(false));
    }
}
