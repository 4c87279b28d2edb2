//! Any bytes as a client request head: parsing never panics, and whenever the HTTP/1
//! codec takes the head, it sends upstream exactly the request line and header fields
//! the HTTP/2 path would, and frames the body as it read it
//! (`tether::proxy::hygiene::hygiene_agrees`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tether::proxy::hygiene::hygiene_agrees(data) {
        panic!("{e}");
    }
});
