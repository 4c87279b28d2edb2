//! Any bytes as an HTTP/1 request, and as an HTTP/1 response: wherever tether's codec
//! takes a message hyper's parser also takes, both read the same message (method,
//! target and body; status and body), and tether takes nothing hyper refuses
//! (`tether::http::oracle`). The first byte picks which side the rest is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&side, raw)) = data.split_first() else {
        return;
    };
    let checked = if side % 2 == 0 {
        tether::http::oracle::request_framing_agrees(raw)
    } else {
        tether::http::oracle::response_framing_agrees(raw)
    };
    if let Err(e) = checked {
        panic!("{e}");
    }
});
