//! tether's own HTTP/2 codec (RFC 9113), the bytes of a connection without its policy:
//! frames read and written ([`frame`]), and header blocks compressed and decompressed
//! ([`hpack`], RFC 7541). It has no knowledge of streams' exchanges, backends or
//! sessions; the server connection that drives it is `proxy::h2`.
//!
//! Why tether's own rather than the `h2` crate's (which served HTTP/2 before): on the
//! HTTP/2 path more than half of the instructions per proxied request were the `h2`
//! crate's and the `http` maps it takes and gives (benches/load/instructions.sh with
//! `H2=1`), and CPU per request is what ranks a proxy on machines whose cores it shares
//! with its clients and pods. A proxy's server side needs a small part of what a
//! general HTTP/2 library does: no push, no client role, no priorities, no dynamic
//! table or Huffman coding on what it sends (RFC 7541 lets an encoder use neither), and
//! header fields handed over as byte slices rather than built into maps. Each layer is
//! held to its RFC's examples and rules in its unit tests and fuzzed (`fuzz/`); the
//! connection is held to the behavioural suite the `h2` crate's server passed, on
//! every transport. The `h2` crate stays under hyper's HTTP/2 client, to h2c pods.

pub mod frame;
pub mod hpack;
