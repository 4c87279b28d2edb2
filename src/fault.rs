//! Who caused a failure. Only upstream faults (connect failures, resets, invalid
//! responses, response timeouts) count against an endpoint's health; a client's faults
//! are answered and counted as the client's (`tether_client_errors_total`), and never
//! touch an endpoint.

/// A failure the client caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientFault {
    /// The request body broke its framing: a bad chunk (RFC 9112 §7.1), or HTTP/2 DATA
    /// that does not add up to content-length (RFC 9113 §8.1.1).
    #[error("malformed request body")]
    MalformedBody = 0,
    /// The client closed the connection or reset the stream before its body ended.
    #[error("request aborted by the client")]
    Aborted = 1,
    /// The client did not send the rest of its body within the response timeout.
    #[error("request body timed out")]
    BodyTimeout = 2,
}

impl ClientFault {
    /// Every fault, in counter order.
    pub const ALL: [ClientFault; 3] = [
        ClientFault::MalformedBody,
        ClientFault::Aborted,
        ClientFault::BodyTimeout,
    ];

    /// The `reason` label of `tether_client_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFault::MalformedBody => "malformed_body",
            ClientFault::Aborted => "aborted",
            ClientFault::BodyTimeout => "body_timeout",
        }
    }
}
