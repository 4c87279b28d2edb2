//! tether's HTTP/2 server against RFC 9113 as an outside client reads it: raw frames
//! from python-h2's own frame and HPACK codecs (tests/data/h2edge.py), not tether's.
//! Malformed requests, connection errors, flow-control and frame-size limits, header
//! blocks split over CONTINUATION, a head past the limit (431), and the guards against
//! rapid resets and empty DATA floods. (h2spec, the usual tool, is neither a Debian
//! package nor buildable here without Go.)

mod support;

use support::transport::{Front, Transport};
use support::*;

/// Whether python3 has python-h2's codecs; a skip (or a failure under
/// `TETHER_REQUIRE_TOOLS`, as in CI) when not.
fn python_h2() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import hyperframe, hpack"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TETHER_REQUIRE_TOOLS").is_none(),
            "no python3 with hyperframe and hpack: apt-get install python3-h2"
        );
        eprintln!("SKIPPED: no python3-h2 (apt-get install python3-h2)");
    }
    found
}

#[tokio::test]
async fn an_outside_http2_client_gets_the_answers_rfc_9113_prescribes() {
    if !python_h2() {
        return;
    }
    let pod = TestBackend::echo("pod-a").await;
    for transport in [Transport::H2c] {
        let front = Front::start(transport, &config(&[&pod], &[], "")).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/h2edge.py");
        let out = tokio::process::Command::new("python3")
            .arg(script)
            .arg("127.0.0.1")
            .arg(front.proxy.proxy_addr.port().to_string())
            .output()
            .await
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{transport:?}:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains(" passed"), "{report}");
        front.proxy.shutdown().await;
    }
}
