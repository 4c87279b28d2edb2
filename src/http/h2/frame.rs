//! HTTP/2 frames (RFC 9113 §4, §6) for a server: the 9-octet head, each frame type's
//! payload parsed into a [`Frame`] without copying (DATA and field-block payloads are
//! slices of the read buffer), every violation §5.4 and §6 name classed as the
//! connection's ([`Error::Connection`], GOAWAY) or one stream's ([`Error::Stream`],
//! RST_STREAM), and the frames a server sends written into a buffer. Which frame may
//! come when, stream states and flow-control windows are the connection's.

use bytes::Bytes;

use self::flag::{ACK, END_HEADERS, END_STREAM, PADDED};
use self::kind::*;

/// An error code (RFC 9113 §7). Unknown codes are kept as they came: they "MUST NOT
/// trigger any special behavior".
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    /// Not an error: a graceful GOAWAY.
    pub const NO_ERROR: Reason = Reason(0x0);
    /// An unspecific protocol error.
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    /// The peer broke the flow-control protocol.
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// SETTINGS not acknowledged in time.
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    /// A frame after the stream was half-closed.
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    /// A frame of invalid size.
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: Reason = Reason(0x8);
    /// The field-block compression context cannot be kept.
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// The connection of a CONNECT request was reset or closed.
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    /// The peer behaves in a way that may cost too much.
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    /// The transport's security falls short (§9.2).
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    /// HTTP/1.1 must be used instead.
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The code's name in RFC 9113 §7, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Reason::NO_ERROR => "NO_ERROR",
            Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
            Reason::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Reason::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            Reason::STREAM_CLOSED => "STREAM_CLOSED",
            Reason::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Reason::REFUSED_STREAM => "REFUSED_STREAM",
            Reason::CANCEL => "CANCEL",
            Reason::COMPRESSION_ERROR => "COMPRESSION_ERROR",
            Reason::CONNECT_ERROR => "CONNECT_ERROR",
            Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Reason::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            Reason::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

/// The name where the code has one (so errors and logs read `PROTOCOL_ERROR`), else
/// the number.
impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Reason({:#x})", self.0),
        }
    }
}

/// A violation found while parsing a frame (RFC 9113 §5.4): the connection's, answered
/// with GOAWAY and closing, or one stream's, answered with RST_STREAM on that stream.
///
/// A stream error from a HEADERS frame (a self-dependency) hands back no field block:
/// the connection still owes HPACK that block (§4.3), so it either treats the error as
/// the connection's (§5.4.1 allows it) or re-reads the frame's block itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The connection's: GOAWAY with the reason, then close (§5.4.1).
    #[error("connection error {0:?}: {1}")]
    Connection(Reason, &'static str),
    /// One stream's: RST_STREAM with the reason on that stream (§5.4.2).
    #[error("stream {0} error {1:?}: {2}")]
    Stream(u32, Reason, &'static str),
}

/// Octets in a frame head (§4.1).
pub const HEAD_LEN: usize = 9;

/// What a client sends first (§3.4), before its SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// SETTINGS_MAX_FRAME_SIZE until a peer's SETTINGS says otherwise, and the least it may
/// say (§6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The most SETTINGS_MAX_FRAME_SIZE may say: 2^24-1, the frame head's length field
/// (§4.1, §6.5.2).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The largest flow-control window and increment, 2^31-1 (§6.9.1).
pub const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

/// Frame type codes (§6, §11.2).
pub mod kind {
    /// DATA (§6.1).
    pub const DATA: u8 = 0x0;
    /// HEADERS (§6.2).
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY (§6.3).
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM (§6.4).
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS (§6.5).
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (§6.6).
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING (§6.7).
    pub const PING: u8 = 0x6;
    /// GOAWAY (§6.8).
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE (§6.9).
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION (§6.10).
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (§6). Flags a frame type does not define are ignored (§4.1).
pub mod flag {
    /// DATA, HEADERS: the stream's last frame from this side (§6.1, §6.2).
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement (§6.5, §6.7).
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the field block's last frame (§6.2, §6.10).
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a Pad Length field and padding (§6.1, §6.2).
    pub const PADDED: u8 = 0x8;
    /// HEADERS: priority fields (§6.2).
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (§6.5.2; ENABLE_CONNECT_PROTOCOL is RFC 8441 §3).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

/// The reserved bit of stream identifiers and window increments (§4.1, §6.9).
const STREAM_MASK: u32 = 0x7fff_ffff;

/// A frame head (§4.1), the reserved bit dropped from the stream identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length, 24 bits.
    pub len: u32,
    /// The frame type ([`kind`]).
    pub kind: u8,
    /// The flags ([`flag`]).
    pub flags: u8,
    /// The stream identifier, 31 bits; 0 for the connection.
    pub stream: u32,
}

/// Reads a frame head (§4.1): the reserved bit "MUST remain unset when sending and MUST
/// be ignored when receiving".
pub fn head(bytes: &[u8; HEAD_LEN]) -> Head {
    let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
    Head {
        len: u32::from_be_bytes([0, l0, l1, l2]),
        kind,
        flags,
        stream: u32::from_be_bytes([s0, s1, s2, s3]) & STREAM_MASK,
    }
}

/// A frame as a server receives it, its padding and priority fields removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA (§6.1).
    Data {
        /// The stream, never 0.
        stream: u32,
        /// END_STREAM: the client's last frame on the stream.
        end_stream: bool,
        /// The payload without padding.
        data: Bytes,
        /// The whole frame's length, padding included, which flow control counts
        /// (§6.9.1).
        flow_len: u32,
    },
    /// HEADERS (§6.2). Priority fields, if any, are validated and dropped (RFC 9113
    /// deprecates the priority scheme, §5.3.2).
    Headers {
        /// The stream, never 0.
        stream: u32,
        /// END_STREAM: no DATA follows on the stream (trailers end it too).
        end_stream: bool,
        /// END_HEADERS: the field block is whole; else CONTINUATION frames follow.
        end_headers: bool,
        /// The field block fragment (§4.3), for HPACK.
        block: Bytes,
    },
    /// PRIORITY (§6.3), validated and otherwise ignored (§5.3.2).
    Priority {
        /// The stream, never 0.
        stream: u32,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        /// The stream, never 0.
        stream: u32,
        /// Why the client reset it.
        code: Reason,
    },
    /// SETTINGS (§6.5).
    Settings {
        /// ACK: the client acknowledges the server's SETTINGS; no parameters.
        ack: bool,
        /// The parameters the frame carries.
        settings: Settings,
    },
    /// PING (§6.7).
    Ping {
        /// ACK: the answer to the server's PING.
        ack: bool,
        /// The opaque data, echoed in the answer.
        payload: [u8; 8],
    },
    /// GOAWAY (§6.8), its debug data dropped.
    GoAway {
        /// The last stream the client acted on, its reserved bit dropped.
        last_stream: u32,
        /// Why the client is closing.
        code: Reason,
    },
    /// WINDOW_UPDATE (§6.9).
    WindowUpdate {
        /// The stream; 0 for the connection's window.
        stream: u32,
        /// 1..=2^31-1, its reserved bit dropped.
        increment: u32,
    },
    /// CONTINUATION (§6.10).
    Continuation {
        /// The stream, never 0.
        stream: u32,
        /// END_HEADERS: the field block is whole.
        end_headers: bool,
        /// The field block fragment (§4.3), for HPACK.
        block: Bytes,
    },
    /// A frame type this endpoint does not know, ignored (§4.1, §5.5).
    Unknown,
}

/// The parameters of one SETTINGS frame (§6.5.2), each as the frame last gave it.
/// Unknown identifiers are ignored (§6.5.2).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE (0x1): the HPACK dynamic table the sender decodes with.
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH (0x2).
    pub enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (0x4), at most 2^31-1.
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (0x5), 2^14..=2^24-1.
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (0x6), advisory.
    pub max_header_list_size: Option<u32>,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8, RFC 8441 §3): extended CONNECT.
    pub enable_connect_protocol: Option<bool>,
}

fn connection(reason: Reason, why: &'static str) -> Error {
    Error::Connection(reason, why)
}

/// Parses one frame whose head is `head` and payload `payload` (exactly `head.len`
/// octets), for a server whose SETTINGS_MAX_FRAME_SIZE is `max_frame_size`.
///
/// Checks what one frame shows: sizes, stream 0 where a frame needs a stream, padding,
/// self-dependency, SETTINGS values, zero window increments. A PUSH_PROMISE is an error:
/// a client cannot push (§8.4). What needs the connection's state (stream states and
/// parity, CONTINUATION sequencing, windows) is left to the connection.
pub fn parse(head: &Head, payload: Bytes, max_frame_size: u32) -> Result<Frame, Error> {
    // §4.2: a frame larger than SETTINGS_MAX_FRAME_SIZE. Held as the connection's for
    // every type, as §5.4.1 allows.
    if head.len > max_frame_size {
        return Err(connection(
            Reason::FRAME_SIZE_ERROR,
            "frame longer than max_frame_size",
        ));
    }
    if payload.len() != head.len as usize {
        return Err(connection(
            Reason::INTERNAL_ERROR,
            "payload length differs from the frame head",
        ));
    }
    let stream = head.stream;
    let flags = head.flags;
    match head.kind {
        DATA => {
            // §6.1: DATA on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "data on stream 0"));
            }
            let data = if flags & PADDED != 0 {
                unpad(payload)?
            } else {
                payload
            };
            Ok(Frame::Data {
                stream,
                end_stream: flags & END_STREAM != 0,
                data,
                flow_len: head.len,
            })
        }
        HEADERS => {
            // §6.2: HEADERS on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "headers on stream 0"));
            }
            let mut block = if flags & PADDED != 0 {
                unpad(payload)?
            } else {
                payload
            };
            if flags & flag::PRIORITY != 0 {
                // §6.2: Exclusive, Stream Dependency and Weight, 5 octets. Too few is a
                // frame too small for its mandatory fields, the connection's since the
                // frame carries a field block (§4.2).
                let Some(&[d0, d1, d2, d3, _weight]) = block.get(..5) else {
                    return Err(connection(
                        Reason::FRAME_SIZE_ERROR,
                        "headers too short for its priority fields",
                    ));
                };
                // §5.3.1: a stream cannot depend on itself.
                if u32::from_be_bytes([d0, d1, d2, d3]) & STREAM_MASK == stream {
                    return Err(Error::Stream(
                        stream,
                        Reason::PROTOCOL_ERROR,
                        "stream depends on itself",
                    ));
                }
                block = block.slice(5..);
            }
            Ok(Frame::Headers {
                stream,
                end_stream: flags & END_STREAM != 0,
                end_headers: flags & END_HEADERS != 0,
                block,
            })
        }
        PRIORITY => {
            // §6.3: PRIORITY on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "priority on stream 0"));
            }
            // §6.3: a length other than 5 is a stream FRAME_SIZE_ERROR.
            let [d0, d1, d2, d3, _weight] = *payload else {
                return Err(Error::Stream(
                    stream,
                    Reason::FRAME_SIZE_ERROR,
                    "priority length is not 5",
                ));
            };
            // §5.3.1: a stream cannot depend on itself.
            if u32::from_be_bytes([d0, d1, d2, d3]) & STREAM_MASK == stream {
                return Err(Error::Stream(
                    stream,
                    Reason::PROTOCOL_ERROR,
                    "stream depends on itself",
                ));
            }
            Ok(Frame::Priority { stream })
        }
        RST_STREAM => {
            // §6.4: RST_STREAM on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "rst_stream on stream 0"));
            }
            // §6.4: a length other than 4 is a connection FRAME_SIZE_ERROR.
            let [c0, c1, c2, c3] = *payload else {
                return Err(connection(
                    Reason::FRAME_SIZE_ERROR,
                    "rst_stream length is not 4",
                ));
            };
            Ok(Frame::RstStream {
                stream,
                code: Reason(u32::from_be_bytes([c0, c1, c2, c3])),
            })
        }
        SETTINGS => {
            // §6.5: SETTINGS on a stream is a connection PROTOCOL_ERROR.
            if stream != 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "settings on a stream"));
            }
            let ack = flags & ACK != 0;
            // §6.5: an acknowledgement with a payload is a connection FRAME_SIZE_ERROR.
            if ack && !payload.is_empty() {
                return Err(connection(
                    Reason::FRAME_SIZE_ERROR,
                    "settings ack with a payload",
                ));
            }
            Ok(Frame::Settings {
                ack,
                settings: settings(&payload)?,
            })
        }
        // §8.4: "A client cannot push", so a server treats PUSH_PROMISE as a connection
        // PROTOCOL_ERROR.
        PUSH_PROMISE => Err(connection(
            Reason::PROTOCOL_ERROR,
            "push_promise from a client",
        )),
        PING => {
            // §6.7: PING on a stream is a connection PROTOCOL_ERROR.
            if stream != 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "ping on a stream"));
            }
            // §6.7: a length other than 8 is a connection FRAME_SIZE_ERROR.
            let Ok(data) = <[u8; 8]>::try_from(payload.as_ref()) else {
                return Err(connection(Reason::FRAME_SIZE_ERROR, "ping length is not 8"));
            };
            Ok(Frame::Ping {
                ack: flags & ACK != 0,
                payload: data,
            })
        }
        GOAWAY => {
            // §6.8: GOAWAY on a stream is a connection PROTOCOL_ERROR.
            if stream != 0 {
                return Err(connection(Reason::PROTOCOL_ERROR, "goaway on a stream"));
            }
            // §4.2: shorter than its Last-Stream-ID and Error Code, a frame on stream 0,
            // so the connection's FRAME_SIZE_ERROR.
            let Some(&[l0, l1, l2, l3, c0, c1, c2, c3]) = payload.get(..8) else {
                return Err(connection(
                    Reason::FRAME_SIZE_ERROR,
                    "goaway shorter than 8",
                ));
            };
            Ok(Frame::GoAway {
                // §6.8: the reserved bit is ignored.
                last_stream: u32::from_be_bytes([l0, l1, l2, l3]) & STREAM_MASK,
                code: Reason(u32::from_be_bytes([c0, c1, c2, c3])),
            })
        }
        WINDOW_UPDATE => {
            // §6.9: a length other than 4 is a connection FRAME_SIZE_ERROR.
            let [i0, i1, i2, i3] = *payload else {
                return Err(connection(
                    Reason::FRAME_SIZE_ERROR,
                    "window_update length is not 4",
                ));
            };
            // §6.9: the reserved bit is ignored.
            let increment = u32::from_be_bytes([i0, i1, i2, i3]) & STREAM_MASK;
            // §6.9: an increment of 0 is a stream PROTOCOL_ERROR, or the connection's
            // on the connection's window.
            if increment == 0 {
                return Err(if stream == 0 {
                    connection(Reason::PROTOCOL_ERROR, "window_update of 0")
                } else {
                    Error::Stream(stream, Reason::PROTOCOL_ERROR, "window_update of 0")
                });
            }
            Ok(Frame::WindowUpdate { stream, increment })
        }
        CONTINUATION => {
            // §6.10: CONTINUATION on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(connection(
                    Reason::PROTOCOL_ERROR,
                    "continuation on stream 0",
                ));
            }
            Ok(Frame::Continuation {
                stream,
                end_headers: flags & END_HEADERS != 0,
                block: payload,
            })
        }
        // §4.1, §5.5: unknown frame types are ignored and discarded.
        _ => Ok(Frame::Unknown),
    }
}

/// A padded payload (§6.1, §6.2) without its Pad Length field and padding.
fn unpad(payload: Bytes) -> Result<Bytes, Error> {
    // §4.2: a PADDED frame without room for its Pad Length field is too small for its
    // mandatory fields; held as the connection's, as §5.4.1 allows for DATA.
    let Some(&pad) = payload.first() else {
        return Err(connection(
            Reason::FRAME_SIZE_ERROR,
            "padded frame without a pad length",
        ));
    };
    // §6.1, §6.2: padding as long as the payload or longer is a connection
    // PROTOCOL_ERROR.
    let Some(end) = payload.len().checked_sub(1 + usize::from(pad)) else {
        return Err(connection(
            Reason::PROTOCOL_ERROR,
            "padding as long as the payload",
        ));
    };
    Ok(payload.slice(1..1 + end))
}

/// A SETTINGS payload's parameters (§6.5.1, §6.5.2), in order, the last of an
/// identifier winning.
fn settings(payload: &[u8]) -> Result<Settings, Error> {
    // §6.5: a length not a multiple of 6 is a connection FRAME_SIZE_ERROR.
    let params = payload.chunks_exact(6);
    if !params.remainder().is_empty() {
        return Err(connection(
            Reason::FRAME_SIZE_ERROR,
            "settings length is not a multiple of 6",
        ));
    }
    let mut s = Settings::default();
    for param in params {
        let &[i0, i1, v0, v1, v2, v3] = param else {
            continue;
        };
        let value = u32::from_be_bytes([v0, v1, v2, v3]);
        match u16::from_be_bytes([i0, i1]) {
            SETTINGS_HEADER_TABLE_SIZE => s.header_table_size = Some(value),
            // §6.5.2: other than 0 or 1 is a connection PROTOCOL_ERROR.
            SETTINGS_ENABLE_PUSH => {
                s.enable_push = Some(flag(value, "settings_enable_push is not 0 or 1")?)
            }
            SETTINGS_MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
            SETTINGS_INITIAL_WINDOW_SIZE => {
                // §6.5.2: above 2^31-1 is a connection FLOW_CONTROL_ERROR.
                if value > MAX_WINDOW_SIZE {
                    return Err(connection(
                        Reason::FLOW_CONTROL_ERROR,
                        "settings_initial_window_size above 2^31-1",
                    ));
                }
                s.initial_window_size = Some(value);
            }
            SETTINGS_MAX_FRAME_SIZE => {
                // §6.5.2: outside 2^14..=2^24-1 is a connection PROTOCOL_ERROR.
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                    return Err(connection(
                        Reason::PROTOCOL_ERROR,
                        "settings_max_frame_size out of range",
                    ));
                }
                s.max_frame_size = Some(value);
            }
            SETTINGS_MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
            // RFC 8441 §3: other than 0 or 1 is a connection PROTOCOL_ERROR.
            SETTINGS_ENABLE_CONNECT_PROTOCOL => {
                s.enable_connect_protocol = Some(flag(
                    value,
                    "settings_enable_connect_protocol is not 0 or 1",
                )?)
            }
            // §6.5.2: unknown identifiers are ignored.
            _ => {}
        }
    }
    Ok(s)
}

fn flag(value: u32, why: &'static str) -> Result<bool, Error> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(connection(Reason::PROTOCOL_ERROR, why)),
    }
}

/// Appends a frame head (§4.1), the reserved bit unset. `len` must fit 24 bits (at most
/// the peer's SETTINGS_MAX_FRAME_SIZE); only its low 24 bits are written.
pub fn write_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize, "frame length {len}");
    let [_, l0, l1, l2] = (len as u32).to_be_bytes();
    out.extend_from_slice(&[l0, l1, l2, kind, flags]);
    out.extend_from_slice(&(stream & STREAM_MASK).to_be_bytes());
}

/// Appends a SETTINGS frame (§6.5) with the parameters `settings` has.
pub fn write_settings(out: &mut Vec<u8>, settings: &Settings) {
    let params = [
        (SETTINGS_HEADER_TABLE_SIZE, settings.header_table_size),
        (SETTINGS_ENABLE_PUSH, settings.enable_push.map(u32::from)),
        (
            SETTINGS_MAX_CONCURRENT_STREAMS,
            settings.max_concurrent_streams,
        ),
        (SETTINGS_INITIAL_WINDOW_SIZE, settings.initial_window_size),
        (SETTINGS_MAX_FRAME_SIZE, settings.max_frame_size),
        (SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
        (
            SETTINGS_ENABLE_CONNECT_PROTOCOL,
            settings.enable_connect_protocol.map(u32::from),
        ),
    ];
    let len = 6 * params.iter().filter(|(_, v)| v.is_some()).count();
    write_head(out, len, SETTINGS, 0, 0);
    for (id, value) in params {
        if let Some(value) = value {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends a SETTINGS acknowledgement (§6.5.3).
pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_head(out, 0, SETTINGS, ACK, 0);
}

/// Appends the answer to a PING (§6.7): the same payload, ACK set.
pub fn write_ping_ack(out: &mut Vec<u8>, payload: [u8; 8]) {
    write_head(out, 8, PING, ACK, 0);
    out.extend_from_slice(&payload);
}

/// Appends a PING (§6.7).
pub fn write_ping(out: &mut Vec<u8>, payload: [u8; 8]) {
    write_head(out, 8, PING, 0, 0);
    out.extend_from_slice(&payload);
}

/// Appends a WINDOW_UPDATE (§6.9); stream 0 for the connection's window. `increment`
/// must be 1..=2^31-1.
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & STREAM_MASK).to_be_bytes());
}

/// Appends a RST_STREAM (§6.4).
pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: Reason) {
    write_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&code.0.to_be_bytes());
}

/// Appends a GOAWAY (§6.8) with `debug` as its additional debug data.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: Reason, debug: &[u8]) {
    write_head(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & STREAM_MASK).to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a field block as one HEADERS frame and as many CONTINUATION frames as it
/// needs (§6.2, §6.10), each at most `max_frame_size` (the peer's; held to its legal
/// range, §6.5.2): END_STREAM on the HEADERS frame, END_HEADERS on the last frame.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE) as usize;
    let (first, mut rest) = block.split_at(block.len().min(max));
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_head(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(max));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        write_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

/// Appends the head of one unpadded DATA frame of `len` octets (§6.1), END_STREAM when
/// `end`; the caller writes (or vectors) the payload after it.
pub fn write_data_head(out: &mut Vec<u8>, stream: u32, len: usize, end: bool) {
    write_head(out, len, DATA, if end { END_STREAM } else { 0 }, stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as the RFC lays it out (§4.1), parsed with the default max frame size.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, Error> {
        parse_with(kind, flags, stream, payload, DEFAULT_MAX_FRAME_SIZE)
    }

    fn parse_with(
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        max: u32,
    ) -> Result<Frame, Error> {
        let mut raw = Vec::new();
        let len = payload.len() as u32;
        raw.extend_from_slice(&len.to_be_bytes()[1..]);
        raw.push(kind);
        raw.push(flags);
        raw.extend_from_slice(&stream.to_be_bytes());
        raw.extend_from_slice(payload);
        let h = head(raw[..9].try_into().unwrap());
        parse(&h, Bytes::from(raw).slice(9..), max)
    }

    fn conn(reason: Reason) -> impl Fn(Result<Frame, Error>) {
        move |r| match r {
            Err(Error::Connection(got, _)) => assert_eq!(got, reason),
            other => panic!("want connection {reason:?}, got {other:?}"),
        }
    }

    fn stream_err(stream: u32, reason: Reason) -> impl Fn(Result<Frame, Error>) {
        move |r| match r {
            Err(Error::Stream(s, got, _)) => assert_eq!((s, got), (stream, reason)),
            other => panic!("want stream {stream} {reason:?}, got {other:?}"),
        }
    }

    /// Every complete frame in `raw`, as the connection would read them.
    fn parse_all(raw: &[u8], max: u32) -> Vec<Frame> {
        let buf = Bytes::copy_from_slice(raw);
        let mut at = 0;
        let mut frames = Vec::new();
        while at < buf.len() {
            let h = head(buf[at..at + HEAD_LEN].try_into().unwrap());
            let start = at + HEAD_LEN;
            let end = start + h.len as usize;
            frames.push(parse(&h, buf.slice(start..end), max).unwrap());
            at = end;
        }
        frames
    }

    #[test]
    fn head_reads_the_layout_and_drops_the_reserved_bit() {
        let h = head(&[0x01, 0x02, 0x03, 0x09, 0xff, 0x80, 0x00, 0x00, 0x05]);
        assert_eq!(
            h,
            Head {
                len: 0x010203,
                kind: CONTINUATION,
                flags: 0xff,
                stream: 5,
            }
        );
    }

    #[test]
    fn data_is_a_slice_of_the_read_buffer() {
        let raw = Bytes::from_static(b"\x00\x00\x05\x00\x01\x00\x00\x00\x01hello");
        let h = head(raw[..9].try_into().unwrap());
        let payload = raw.slice(9..);
        let Frame::Data { data, .. } = parse(&h, payload, DEFAULT_MAX_FRAME_SIZE).unwrap() else {
            panic!("not data");
        };
        assert_eq!(&data[..], b"hello");
        assert_eq!(data.as_ptr(), raw[9..].as_ptr());
    }

    #[test]
    fn data_parses_stream_end_stream_and_payload() {
        assert_eq!(
            frame(DATA, END_STREAM, 1, b"hello").unwrap(),
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: Bytes::from_static(b"hello"),
                flow_len: 5,
            }
        );
        assert_eq!(
            frame(DATA, 0, 3, b"").unwrap(),
            Frame::Data {
                stream: 3,
                end_stream: false,
                data: Bytes::new(),
                flow_len: 0,
            }
        );
    }

    #[test]
    fn data_padding_is_stripped_and_counted_by_flow_len() {
        // §6.1: Pad Length (3), data, padding.
        assert_eq!(
            frame(DATA, PADDED | END_STREAM, 1, b"\x03abc\0\0\0").unwrap(),
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: Bytes::from_static(b"abc"),
                flow_len: 7,
            }
        );
        // Padding filling all but the Pad Length field: empty data.
        assert_eq!(
            frame(DATA, PADDED, 1, b"\x02\0\0").unwrap(),
            Frame::Data {
                stream: 1,
                end_stream: false,
                data: Bytes::new(),
                flow_len: 3,
            }
        );
    }

    #[test]
    fn data_on_stream_0_or_overpadded_is_a_connection_error() {
        conn(Reason::PROTOCOL_ERROR)(frame(DATA, 0, 0, b"x"));
        conn(Reason::PROTOCOL_ERROR)(frame(DATA, PADDED, 1, b"\x04abc"));
        conn(Reason::PROTOCOL_ERROR)(frame(DATA, PADDED, 1, b"\x01"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(DATA, PADDED, 1, b""));
    }

    #[test]
    fn headers_parse_flags_and_block() {
        assert_eq!(
            frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86").unwrap(),
            Frame::Headers {
                stream: 1,
                end_stream: true,
                end_headers: true,
                block: Bytes::from_static(b"\x82\x86"),
            }
        );
        assert_eq!(
            frame(HEADERS, 0, 3, b"\x82").unwrap(),
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: false,
                block: Bytes::from_static(b"\x82"),
            }
        );
    }

    #[test]
    fn headers_padding_and_priority_are_stripped() {
        // §6.2: Pad Length, E + Stream Dependency, Weight, block, padding.
        let payload = b"\x02\x80\x00\x00\x01\x10\x82\x86\0\0";
        assert_eq!(
            frame(HEADERS, PADDED | flag::PRIORITY | END_HEADERS, 3, payload).unwrap(),
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: true,
                block: Bytes::from_static(b"\x82\x86"),
            }
        );
        // Priority alone.
        assert_eq!(
            frame(HEADERS, flag::PRIORITY, 3, b"\x00\x00\x00\x00\xff\x82").unwrap(),
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: false,
                block: Bytes::from_static(b"\x82"),
            }
        );
        // Padding alone.
        assert_eq!(
            frame(HEADERS, PADDED, 3, b"\x01\x82\0").unwrap(),
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: false,
                block: Bytes::from_static(b"\x82"),
            }
        );
    }

    #[test]
    fn headers_violations_are_the_connections_but_self_dependency_is_the_streams() {
        conn(Reason::PROTOCOL_ERROR)(frame(HEADERS, END_HEADERS, 0, b"\x82"));
        conn(Reason::PROTOCOL_ERROR)(frame(HEADERS, PADDED, 1, b"\x02\x82"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(HEADERS, PADDED, 1, b""));
        conn(Reason::FRAME_SIZE_ERROR)(frame(HEADERS, flag::PRIORITY, 1, b"\0\0\0\0"));
        // Five octets once padding is gone are needed for the priority fields.
        conn(Reason::FRAME_SIZE_ERROR)(frame(
            HEADERS,
            PADDED | flag::PRIORITY,
            1,
            b"\x02\0\0\0\0\0\0",
        ));
        // §5.3.1: depending on itself, with or without the exclusive bit.
        stream_err(5, Reason::PROTOCOL_ERROR)(frame(
            HEADERS,
            flag::PRIORITY,
            5,
            b"\x00\x00\x00\x05\x10\x82",
        ));
        stream_err(5, Reason::PROTOCOL_ERROR)(frame(
            HEADERS,
            flag::PRIORITY,
            5,
            b"\x80\x00\x00\x05\x10\x82",
        ));
    }

    #[test]
    fn priority_is_validated_and_dropped() {
        assert_eq!(
            frame(PRIORITY, 0, 3, b"\x80\x00\x00\x01\x10").unwrap(),
            Frame::Priority { stream: 3 }
        );
        conn(Reason::PROTOCOL_ERROR)(frame(PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"));
        stream_err(3, Reason::FRAME_SIZE_ERROR)(frame(PRIORITY, 0, 3, b"\0\0\0\x01"));
        stream_err(3, Reason::FRAME_SIZE_ERROR)(frame(PRIORITY, 0, 3, b"\0\0\0\x01\x10\0"));
        stream_err(3, Reason::PROTOCOL_ERROR)(frame(PRIORITY, 0, 3, b"\x80\0\0\x03\x10"));
    }

    #[test]
    fn rst_stream_parses_any_code() {
        assert_eq!(
            frame(RST_STREAM, 0, 1, b"\x00\x00\x00\x08").unwrap(),
            Frame::RstStream {
                stream: 1,
                code: Reason::CANCEL,
            }
        );
        assert_eq!(
            frame(RST_STREAM, 0, 1, b"\xde\xad\xbe\xef").unwrap(),
            Frame::RstStream {
                stream: 1,
                code: Reason(0xdead_beef),
            }
        );
        conn(Reason::PROTOCOL_ERROR)(frame(RST_STREAM, 0, 0, b"\0\0\0\x08"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(RST_STREAM, 0, 1, b"\0\0\x08"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(RST_STREAM, 0, 1, b"\0\0\0\x08\0"));
    }

    #[test]
    fn settings_parse_every_known_parameter() {
        let payload = b"\x00\x01\x00\x00\x10\x00\
            \x00\x02\x00\x00\x00\x00\
            \x00\x03\x00\x00\x00\x64\
            \x00\x04\x7f\xff\xff\xff\
            \x00\x05\x00\xff\xff\xff\
            \x00\x06\x00\x01\x00\x00\
            \x00\x08\x00\x00\x00\x01";
        assert_eq!(
            frame(SETTINGS, 0, 0, payload).unwrap(),
            Frame::Settings {
                ack: false,
                settings: Settings {
                    header_table_size: Some(4096),
                    enable_push: Some(false),
                    max_concurrent_streams: Some(100),
                    initial_window_size: Some(MAX_WINDOW_SIZE),
                    max_frame_size: Some(MAX_MAX_FRAME_SIZE),
                    max_header_list_size: Some(65536),
                    enable_connect_protocol: Some(true),
                },
            }
        );
        assert_eq!(
            frame(SETTINGS, 0, 0, b"").unwrap(),
            Frame::Settings {
                ack: false,
                settings: Settings::default(),
            }
        );
    }

    #[test]
    fn settings_ignore_unknown_ids_and_keep_the_last_of_a_repeated_one() {
        let payload = b"\x00\x03\x00\x00\x00\x01\
            \x00\x07\xff\xff\xff\xff\
            \xab\xcd\x00\x00\x00\x09\
            \x00\x03\x00\x00\x00\x02";
        assert_eq!(
            frame(SETTINGS, 0, 0, payload).unwrap(),
            Frame::Settings {
                ack: false,
                settings: Settings {
                    max_concurrent_streams: Some(2),
                    ..Settings::default()
                },
            }
        );
    }

    #[test]
    fn settings_ack_parses_without_payload() {
        assert_eq!(
            frame(SETTINGS, ACK, 0, b"").unwrap(),
            Frame::Settings {
                ack: true,
                settings: Settings::default(),
            }
        );
    }

    #[test]
    fn settings_violations_are_connection_errors() {
        conn(Reason::FRAME_SIZE_ERROR)(frame(SETTINGS, ACK, 0, b"\x00\x03\x00\x00\x00\x01"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"));
        conn(Reason::PROTOCOL_ERROR)(frame(SETTINGS, 0, 1, b""));
        conn(Reason::PROTOCOL_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x02"));
        conn(Reason::FLOW_CONTROL_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"));
        conn(Reason::PROTOCOL_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x05\x00\x00\x3f\xff"));
        conn(Reason::PROTOCOL_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x05\x01\x00\x00\x00"));
        conn(Reason::PROTOCOL_ERROR)(frame(SETTINGS, 0, 0, b"\x00\x08\x00\x00\x00\x02"));
        // The least legal max frame size is taken.
        assert!(frame(SETTINGS, 0, 0, b"\x00\x05\x00\x00\x40\x00").is_ok());
    }

    #[test]
    fn push_promise_from_a_client_is_a_connection_protocol_error() {
        conn(Reason::PROTOCOL_ERROR)(frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\x02\x82"));
    }

    #[test]
    fn ping_parses_payload_and_ack() {
        assert_eq!(
            frame(PING, 0, 0, b"12345678").unwrap(),
            Frame::Ping {
                ack: false,
                payload: *b"12345678",
            }
        );
        assert_eq!(
            frame(PING, ACK, 0, b"abcdefgh").unwrap(),
            Frame::Ping {
                ack: true,
                payload: *b"abcdefgh",
            }
        );
        conn(Reason::FRAME_SIZE_ERROR)(frame(PING, 0, 0, b"1234567"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(PING, 0, 0, b"123456789"));
        conn(Reason::PROTOCOL_ERROR)(frame(PING, 0, 1, b"12345678"));
    }

    #[test]
    fn goaway_parses_last_stream_and_code_and_drops_debug_data() {
        assert_eq!(
            frame(GOAWAY, 0, 0, b"\x80\x00\x00\x07\x00\x00\x00\x0bslow down").unwrap(),
            Frame::GoAway {
                last_stream: 7,
                code: Reason::ENHANCE_YOUR_CALM,
            }
        );
        conn(Reason::FRAME_SIZE_ERROR)(frame(GOAWAY, 0, 0, b"\0\0\0\x07\0\0\0"));
        conn(Reason::PROTOCOL_ERROR)(frame(GOAWAY, 0, 1, b"\0\0\0\x07\0\0\0\0"));
    }

    #[test]
    fn window_update_on_a_stream_and_on_the_connection() {
        assert_eq!(
            frame(WINDOW_UPDATE, 0, 0, b"\x80\x00\x10\x00").unwrap(),
            Frame::WindowUpdate {
                stream: 0,
                increment: 4096,
            }
        );
        assert_eq!(
            frame(WINDOW_UPDATE, 0, 9, b"\x7f\xff\xff\xff").unwrap(),
            Frame::WindowUpdate {
                stream: 9,
                increment: MAX_WINDOW_SIZE,
            }
        );
    }

    #[test]
    fn window_update_of_zero_is_the_streams_error_or_the_connections() {
        stream_err(9, Reason::PROTOCOL_ERROR)(frame(WINDOW_UPDATE, 0, 9, b"\0\0\0\0"));
        // The reserved bit alone is an increment of 0.
        stream_err(9, Reason::PROTOCOL_ERROR)(frame(WINDOW_UPDATE, 0, 9, b"\x80\0\0\0"));
        conn(Reason::PROTOCOL_ERROR)(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(WINDOW_UPDATE, 0, 9, b"\0\0\x01"));
        conn(Reason::FRAME_SIZE_ERROR)(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\x01\0"));
    }

    #[test]
    fn continuation_parses_block_and_end_headers() {
        assert_eq!(
            frame(CONTINUATION, END_HEADERS | PADDED, 1, b"\x82\x86").unwrap(),
            Frame::Continuation {
                stream: 1,
                end_headers: true,
                block: Bytes::from_static(b"\x82\x86"),
            }
        );
        conn(Reason::PROTOCOL_ERROR)(frame(CONTINUATION, END_HEADERS, 0, b"\x82"));
    }

    #[test]
    fn unknown_frame_types_are_ignored() {
        assert_eq!(frame(0x0a, 0xff, 0, b"anything").unwrap(), Frame::Unknown);
        assert_eq!(frame(0xfa, 0, 7, b"").unwrap(), Frame::Unknown);
    }

    #[test]
    fn frames_longer_than_max_frame_size_are_connection_frame_size_errors() {
        let big = vec![0; DEFAULT_MAX_FRAME_SIZE as usize + 1];
        conn(Reason::FRAME_SIZE_ERROR)(frame(DATA, 0, 1, &big));
        conn(Reason::FRAME_SIZE_ERROR)(frame(0x0a, 0, 0, &big));
        assert!(parse_with(DATA, 0, 1, &big, DEFAULT_MAX_FRAME_SIZE + 1).is_ok());
        let h = Head {
            len: MAX_MAX_FRAME_SIZE,
            kind: DATA,
            flags: 0,
            stream: 1,
        };
        conn(Reason::FRAME_SIZE_ERROR)(parse(&h, Bytes::new(), DEFAULT_MAX_FRAME_SIZE));
    }

    #[test]
    fn a_payload_not_of_the_head_length_is_refused() {
        let h = Head {
            len: 4,
            kind: WINDOW_UPDATE,
            flags: 0,
            stream: 1,
        };
        conn(Reason::INTERNAL_ERROR)(parse(&h, Bytes::from_static(b"\0\0\x01"), 16_384));
    }

    #[test]
    fn errors_name_their_reason_and_stream() {
        assert_eq!(
            Error::Connection(Reason::PROTOCOL_ERROR, "data on stream 0").to_string(),
            "connection error PROTOCOL_ERROR: data on stream 0"
        );
        assert_eq!(
            Error::Stream(3, Reason(0x42), "window_update of 0").to_string(),
            "stream 3 error Reason(0x42): window_update of 0"
        );
    }

    #[test]
    fn written_control_frames_parse_back() {
        let settings = Settings {
            header_table_size: Some(0),
            enable_push: Some(false),
            max_concurrent_streams: Some(128),
            initial_window_size: Some(1 << 20),
            max_frame_size: Some(1 << 16),
            max_header_list_size: Some(16 << 10),
            enable_connect_protocol: Some(true),
        };
        let sparse = Settings {
            max_concurrent_streams: Some(1),
            ..Settings::default()
        };
        let mut out = Vec::new();
        write_settings(&mut out, &settings);
        write_settings(&mut out, &sparse);
        write_settings(&mut out, &Settings::default());
        write_settings_ack(&mut out);
        write_ping(&mut out, *b"pingpong");
        write_ping_ack(&mut out, *b"pongping");
        write_window_update(&mut out, 0, MAX_WINDOW_SIZE);
        write_window_update(&mut out, 5, 1);
        write_rst_stream(&mut out, 5, Reason::REFUSED_STREAM);
        write_goaway(&mut out, 7, Reason::NO_ERROR, b"bye");
        write_goaway(&mut out, 0, Reason::PROTOCOL_ERROR, b"");
        assert_eq!(
            parse_all(&out, DEFAULT_MAX_FRAME_SIZE),
            [
                Frame::Settings {
                    ack: false,
                    settings,
                },
                Frame::Settings {
                    ack: false,
                    settings: sparse,
                },
                Frame::Settings {
                    ack: false,
                    settings: Settings::default(),
                },
                Frame::Settings {
                    ack: true,
                    settings: Settings::default(),
                },
                Frame::Ping {
                    ack: false,
                    payload: *b"pingpong",
                },
                Frame::Ping {
                    ack: true,
                    payload: *b"pongping",
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: MAX_WINDOW_SIZE,
                },
                Frame::WindowUpdate {
                    stream: 5,
                    increment: 1,
                },
                Frame::RstStream {
                    stream: 5,
                    code: Reason::REFUSED_STREAM,
                },
                Frame::GoAway {
                    last_stream: 7,
                    code: Reason::NO_ERROR,
                },
                Frame::GoAway {
                    last_stream: 0,
                    code: Reason::PROTOCOL_ERROR,
                },
            ]
        );
        // Sparse settings carry only what is set: one parameter, six octets.
        assert_eq!(&out[51..54], b"\x00\x00\x06");
    }

    #[test]
    fn written_data_heads_parse_back() {
        let mut out = Vec::new();
        write_data_head(&mut out, 3, 5, false);
        out.extend_from_slice(b"hello");
        write_data_head(&mut out, 3, 0, true);
        assert_eq!(
            parse_all(&out, DEFAULT_MAX_FRAME_SIZE),
            [
                Frame::Data {
                    stream: 3,
                    end_stream: false,
                    data: Bytes::from_static(b"hello"),
                    flow_len: 5,
                },
                Frame::Data {
                    stream: 3,
                    end_stream: true,
                    data: Bytes::new(),
                    flow_len: 0,
                },
            ]
        );
    }

    #[test]
    fn write_head_unsets_the_reserved_bit() {
        let mut out = Vec::new();
        write_head(&mut out, 0x0a0b0c, HEADERS, 0x25, 0x8000_0003);
        assert_eq!(out, b"\x0a\x0b\x0c\x01\x25\x00\x00\x00\x03");
    }

    #[test]
    fn write_headers_fits_a_small_block_in_one_frame() {
        let mut out = Vec::new();
        write_headers(&mut out, 1, b"\x88", true, DEFAULT_MAX_FRAME_SIZE);
        write_headers(&mut out, 3, b"", false, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(
            parse_all(&out, DEFAULT_MAX_FRAME_SIZE),
            [
                Frame::Headers {
                    stream: 1,
                    end_stream: true,
                    end_headers: true,
                    block: Bytes::from_static(b"\x88"),
                },
                Frame::Headers {
                    stream: 3,
                    end_stream: false,
                    end_headers: true,
                    block: Bytes::new(),
                },
            ]
        );
    }

    #[test]
    fn write_headers_splits_a_large_block_into_continuations() {
        let block: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
        for (max, frames) in [(DEFAULT_MAX_FRAME_SIZE, 3), (20_000, 3), (1 << 20, 1)] {
            for end_stream in [true, false] {
                let mut out = Vec::new();
                write_headers(&mut out, 7, &block, end_stream, max);
                let parsed = parse_all(&out, max);
                assert_eq!(parsed.len(), frames);
                let mut joined = Vec::new();
                for (i, f) in parsed.iter().enumerate() {
                    let last = i + 1 == parsed.len();
                    let got = match f {
                        Frame::Headers {
                            stream: 7,
                            end_stream: es,
                            end_headers,
                            block,
                        } if i == 0 => {
                            assert_eq!(*es, end_stream);
                            assert_eq!(*end_headers, last);
                            block
                        }
                        Frame::Continuation {
                            stream: 7,
                            end_headers,
                            block,
                        } if i > 0 => {
                            assert_eq!(*end_headers, last);
                            block
                        }
                        other => panic!("frame {i}: {other:?}"),
                    };
                    assert!(got.len() <= max as usize);
                    joined.extend_from_slice(got);
                }
                assert_eq!(joined, block);
            }
        }
    }

    #[test]
    fn write_headers_holds_max_frame_size_to_its_legal_range() {
        let block = vec![0x82; 20_000];
        let mut out = Vec::new();
        write_headers(&mut out, 1, &block, false, 0);
        assert_eq!(parse_all(&out, DEFAULT_MAX_FRAME_SIZE).len(), 2);
    }

    #[test]
    fn parse_never_panics_on_random_frames() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ok = 0;
        for i in 0..20_000 {
            let r = next();
            // Mostly short payloads, of a known type, with the head's length.
            let len = (r % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let h = Head {
                len: if i % 16 == 0 {
                    (r >> 8) as u32 & 0xff_ffff
                } else {
                    len as u32
                },
                kind: (r >> 32) as u8 % 12,
                flags: (r >> 40) as u8,
                stream: if r >> 48 & 3 == 0 {
                    0
                } else {
                    (r >> 50) as u32 & 7
                },
            };
            let max = if i % 7 == 0 {
                16
            } else {
                DEFAULT_MAX_FRAME_SIZE
            };
            if parse(&h, Bytes::from(payload), max).is_ok() {
                ok += 1;
            }
        }
        // The loop reached past the error paths.
        assert!(ok > 1_000, "{ok}");
    }
}
