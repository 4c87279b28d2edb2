//! Any bytes as a client request head: parsing never panics, and whenever the HTTP/1
//! fast path takes the head, it sends upstream exactly the request line and header
//! fields the hyper path would (`tether::proxy::wire::hygiene_agrees`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tether::proxy::wire::hygiene_agrees(data) {
        panic!("{e}");
    }
});
