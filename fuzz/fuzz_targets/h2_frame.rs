//! Any bytes as an HTTP/2 frame, a 9-octet head then its payload
//! (`tether::http::h2::frame`): parsing never panics, and a frame it takes, written back
//! with the server's writers, parses to the same frame. The payload's length replaces
//! the head's unless the head's first octet is 0xff, so most inputs reach each frame
//! type's own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::h2::frame::{self, Frame, DEFAULT_MAX_FRAME_SIZE, HEAD_LEN};

fn parse(raw: &[u8]) -> Result<Frame, frame::Error> {
    let Some((head, payload)) = raw.split_first_chunk::<HEAD_LEN>() else {
        panic!("written frame shorter than a head: {raw:?}");
    };
    frame::parse(
        &frame::head(head),
        payload.to_vec().into(),
        DEFAULT_MAX_FRAME_SIZE,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((raw, payload)) = data.split_first_chunk::<HEAD_LEN>() else {
        return;
    };
    let mut head = frame::head(raw);
    if raw[0] != 0xff {
        head.len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    }
    let Ok(parsed) = frame::parse(&head, payload.to_vec().into(), DEFAULT_MAX_FRAME_SIZE) else {
        return;
    };
    let mut out = Vec::new();
    let expected = match &parsed {
        Frame::Data {
            stream,
            end_stream,
            data,
            ..
        } => {
            frame::write_data_head(&mut out, *stream, data.len(), *end_stream);
            out.extend_from_slice(data);
            Frame::Data {
                stream: *stream,
                end_stream: *end_stream,
                data: data.clone(),
                flow_len: data.len() as u32,
            }
        }
        Frame::Headers {
            stream,
            end_stream,
            block,
            ..
        } => {
            frame::write_headers(
                &mut out,
                *stream,
                block,
                *end_stream,
                DEFAULT_MAX_FRAME_SIZE,
            );
            Frame::Headers {
                stream: *stream,
                end_stream: *end_stream,
                end_headers: true,
                block: block.clone(),
            }
        }
        Frame::RstStream { stream, code } => {
            frame::write_rst_stream(&mut out, *stream, *code);
            parsed.clone()
        }
        Frame::Settings { ack: true, .. } => {
            frame::write_settings_ack(&mut out);
            parsed.clone()
        }
        Frame::Settings { settings, .. } => {
            frame::write_settings(&mut out, settings);
            parsed.clone()
        }
        Frame::Ping { ack, payload } => {
            if *ack {
                frame::write_ping_ack(&mut out, *payload);
            } else {
                frame::write_ping(&mut out, *payload);
            }
            parsed.clone()
        }
        Frame::GoAway { last_stream, code } => {
            frame::write_goaway(&mut out, *last_stream, *code, b"debug");
            parsed.clone()
        }
        Frame::WindowUpdate { stream, increment } => {
            frame::write_window_update(&mut out, *stream, *increment);
            parsed.clone()
        }
        // Nothing the server writes.
        Frame::Priority { .. } | Frame::Continuation { .. } | Frame::Unknown => return,
    };
    assert_eq!(parse(&out), Ok(expected), "written from {parsed:?}");
});
