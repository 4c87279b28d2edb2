//! Any bytes as HPACK header blocks: decoding never panics, with a fresh decoder and
//! again with the same decoder (its dynamic table as the first block left it); and fields
//! cut from the bytes, written by tether's encoder, decode back to exactly themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::h2::hpack::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    // The first octet picks the announced table size and where the bytes split in two.
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let table_size = usize::from(knob) * 32;
    let split = rest.len() * usize::from(knob % 8) / 8;
    let (first, second) = rest.split_at(split);
    let mut decoder = Decoder::new(table_size);
    for block in [first, second, rest] {
        let _ = decoder.decode(block, 1 << 14, |name, value| {
            assert!(name.len() + value.len() <= 1 << 14);
            Ok::<(), ()>(())
        });
    }

    // Fields: the bytes cut at each 0xff, taken in pairs as name and value.
    let mut pieces = rest.split(|&b| b == 0xff);
    let mut fields = Vec::new();
    while let (Some(name), Some(value)) = (pieces.next(), pieces.next()) {
        fields.push((name, value));
    }
    let status = u16::from_le_bytes([knob, rest.first().copied().unwrap_or(0)]);
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new(4096);
    for _ in 0..2 {
        let mut block = Vec::new();
        encoder.begin(&mut block);
        encoder.status(&mut block, status);
        for (name, value) in &fields {
            encoder.field(&mut block, name, value);
        }
        let mut got = Vec::new();
        decoder
            .decode(&block, usize::MAX, |name, value| {
                got.push((name.to_vec(), value.to_vec()));
                Ok::<(), ()>(())
            })
            .expect("tether's own block decodes");
        let mut want = vec![(b":status".to_vec(), status.to_string().into_bytes())];
        want.extend(fields.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
        assert_eq!(got, want);
    }
});
