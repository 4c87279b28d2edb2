//! Talking to the pods: connections pooled per endpoint ([`pool`]), tether's HTTP/1
//! client for requests that arrive as `http::Request` ([`h1`]; HTTP/1 clients' requests
//! are relayed by the codec in `proxy::native` over the same pool), and the bodies
//! that flow through an exchange, each recording enough to blame the right party
//! ([`body`]).

pub mod body;
pub mod h1;
pub mod pool;
