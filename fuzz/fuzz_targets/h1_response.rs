//! Any bytes as an upstream response on the HTTP/1 fast path: parsing the head, writing
//! the client head and scanning a chunked body never panic, the client head relays the
//! upstream's fields unchanged and in order (`wire::response_rewrite_agrees`), and the
//! chunked scanner finds the same end whether the body arrives whole or split at any
//! point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::wire::{self, Chunked, Framing, ResponseParsed};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = wire::response_rewrite_agrees(data) {
        panic!("{e}\n{:?}", String::from_utf8_lossy(data));
    }
    let mut fields = wire::no_fields();
    if let Ok(ResponseParsed::Head(h)) = wire::parse_response(data, &mut fields, data.len() % 2 == 0) {
        let mut out = Vec::new();
        wire::write_response(&mut out, &h, Some(b"t=v"), false);
        if h.framing == Framing::Chunked {
            let body = &data[h.len..];
            let whole = Chunked::default().scan(body);
            let split = body.len() / 2;
            let mut c = Chunked::default();
            let parts = c.scan(&body[..split]).and_then(|(a, done)| {
                if done {
                    return Ok((a, true));
                }
                c.scan(&body[split..]).map(|(b, done)| (split + b, done))
            });
            assert_eq!(whole, parts, "split at {split}");
        }
    }
});
