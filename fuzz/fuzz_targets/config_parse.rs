//! Any text as a config file: parsing and validation never panic; they accept or name
//! a field and a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match tether::config::Config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent")) {
        Ok(c) => assert!(!c.backends.is_empty() && !c.routes.is_empty()),
        Err(e) => assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e}"),
    }
});
