//! Scale-out, load bounds, weights, drains and timeouts, simulated over thousands of
//! sessions through the real exchange with tokio's paused clock.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::sim::{Hit, Sim};
use tether::affinity::{Outcome, SessionId};
use tokio::time::advance;

/// 3,000 sessions on pod-0..pod-2, each with the cookie it was given.
async fn three_thousand_sessions(sim: &Sim) -> Vec<Hit> {
    sim.pods(3);
    new_clients(sim, 3000).await
}

/// `n` requests from new clients, one after another.
async fn new_clients(sim: &Sim, n: usize) -> Vec<Hit> {
    let mut hits = Vec::with_capacity(n);
    for _ in 0..n {
        hits.push(sim.request(None).await);
    }
    hits
}

fn count<'a>(hits: impl IntoIterator<Item = &'a Hit>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for h in hits {
        *m.entry(h.endpoint.clone()).or_default() += 1;
    }
    m
}

#[tokio::test(start_paused = true)]
async fn persistent_moves_no_session_on_scale_out() {
    let sim = Sim::new("rebalance = \"persistent\"");
    let sessions = three_thousand_sessions(&sim).await;
    sim.pods(4);
    advance(Duration::from_secs(600)).await;
    for s in &sessions {
        let h = sim.request(Some(&s.cookie)).await;
        assert_eq!(h.endpoint, s.endpoint);
        assert_eq!(h.outcome, Outcome::Sticky);
    }
}

#[tokio::test(start_paused = true)]
async fn balanced_moves_a_quarter_of_sessions_all_to_the_new_endpoint() {
    let sim = Sim::new("rebalance = \"balanced\"");
    let sessions = three_thousand_sessions(&sim).await;
    advance(Duration::from_secs(5)).await;
    sim.pods(4);
    let mut moved = 0;
    for s in &sessions {
        let h = sim.request(Some(&s.cookie)).await;
        assert_eq!(h.session, s.session);
        if h.endpoint != s.endpoint {
            moved += 1;
            assert_eq!(h.endpoint, "pod-3", "a session moved between old endpoints");
            assert_eq!(h.outcome, Outcome::Rebalanced);
            assert_eq!(h.previous.as_deref(), Some(s.endpoint.as_str()));
            // Once moved, it stays.
            let again = sim.request(Some(&h.cookie)).await;
            assert_eq!(
                (again.endpoint.as_str(), again.outcome),
                ("pod-3", Outcome::Sticky)
            );
        } else {
            assert_eq!(h.outcome, Outcome::Sticky);
        }
    }
    let share = moved as f64 / 3000.0;
    assert!((0.22..=0.28).contains(&share), "moved {moved} of 3000");
}

#[tokio::test(start_paused = true)]
async fn gradual_moves_no_active_session_and_idle_ones_only_after_rebalance_idle_within_the_rate() {
    let sim = Sim::new("rebalance = \"gradual\"\nrebalance_idle = \"60s\"\nrebalance_rate = 20");
    let mut sessions = three_thousand_sessions(&sim).await;
    advance(Duration::from_secs(1)).await;
    sim.pods(4);

    // Active: every session sends a request every 10 s for two minutes. None moves.
    for _ in 0..12 {
        advance(Duration::from_secs(10)).await;
        for s in sessions.iter_mut() {
            let h = sim.request(Some(&s.cookie)).await;
            assert_eq!(h.endpoint, s.endpoint, "an active session moved");
            s.cookie = h.cookie;
        }
    }

    // Idle for rebalance_idle plus one refresh interval (15 s): eligible from now on.
    advance(Duration::from_secs(60 + 15)).await;
    // They come back spread over time, 100 a second; moves are capped at 20 per second
    // (plus one second of burst at the start).
    let mut moved_total = 0;
    let mut next = 0;
    let mut seconds = 0u64;
    while next < sessions.len() {
        let mut moved_now = 0;
        for s in sessions[next..(next + 100).min(sessions.len())].iter() {
            let h = sim.request(Some(&s.cookie)).await;
            if h.endpoint != s.endpoint {
                assert_eq!(h.endpoint, "pod-3");
                assert_eq!(h.outcome, Outcome::Rebalanced);
                moved_now += 1;
            }
        }
        assert!(
            moved_now <= 20 + if seconds == 0 { 20 } else { 0 },
            "{moved_now} moves in one second"
        );
        moved_total += moved_now;
        next += 100;
        seconds += 1;
        advance(Duration::from_secs(1)).await;
    }
    assert!(moved_total > 0, "idle sessions moved");
    assert!(
        moved_total as u64 <= 20 * (seconds + 1),
        "{moved_total} moves in {seconds} s"
    );
}

#[tokio::test(start_paused = true)]
async fn after_scale_out_new_sessions_go_to_the_new_endpoint_until_it_is_within_the_bound() {
    let sim = Sim::new("rebalance = \"persistent\"\nload_factor = 0.25");
    three_thousand_sessions(&sim).await;
    sim.pods(4);
    let before: HashMap<String, u64> = sim.live().into_iter().collect();
    let mut to_new = 0;
    for i in 0..150 {
        let live: HashMap<String, u64> = sim.live().into_iter().collect();
        let total: u64 = live.values().sum();
        let capacity = (1.25 * (total + 1) as f64 / 4.0).ceil() as u64;
        let old_all_over = (0..3).all(|p| live[&format!("pod-{p}")] + 1 > capacity);
        let h = sim.request(None).await;
        assert!(
            live[&h.endpoint] < capacity,
            "request {i} landed on {} over the bound: {live:?}",
            h.endpoint
        );
        if old_all_over {
            assert_eq!(h.endpoint, "pod-3", "request {i}: {live:?}");
        }
        if h.endpoint == "pod-3" {
            to_new += 1;
        }
    }
    // The old endpoints hold ~1000 each against a mean of ~790 right after the scale-out,
    // so the bound sends the new endpoint far more than its ring share (~37 of 150).
    // Session ids are random: 100 here failed about one run in 60 (seen in CI-like
    // reruns), when an old endpoint started just under the bound; 75 still needs the
    // bound to divert, which a plain ring never does.
    assert!(
        to_new >= 75,
        "only {to_new} of the first 150 new sessions reached the new endpoint"
    );
    new_clients(&sim, 3000).await;
    let live = sim.live();
    let total: u64 = live.iter().map(|(_, n)| n).sum();
    let mean = total as f64 / 4.0;
    for (pod, n) in &live {
        assert!(
            *n as f64 <= 1.25 * mean + 1.0,
            "{pod} has {n}, mean {mean}: {live:?}"
        );
    }
    // Of the 3,150 new sessions the new endpoint took the most: its ring share plus
    // everything the bound diverted from the old ones.
    let gained = |pod: &str| {
        live.iter().find(|(p, _)| p == pod).unwrap().1 - before.get(pod).copied().unwrap_or(0)
    };
    // Without the bound every endpoint would gain about its ring share (~790); a margin
    // of 50 failed about one run in 100 (random ids), more than any margin showed.
    for old in ["pod-0", "pod-1", "pod-2"] {
        assert!(
            gained("pod-3") > gained(old),
            "{old}: before {before:?}, after {live:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn skewed_arrivals_never_push_an_endpoint_past_the_bound() {
    let sim = Sim::new("load_factor = 0.25");
    sim.pods(4);
    // Arrivals skewed by ring luck: sessions whose ring owner is pod-0 arrive three times
    // as often as their share. An id's ring owner is where it lands on an unloaded twin.
    let twin = Sim::new("load_factor = 100");
    twin.pods(4);
    let owned_by_0 = |id: SessionId| {
        let snapshot = twin.backend.snapshot();
        let owner = tether::affinity::new_session(&snapshot, id, twin.backend.clock().now());
        owner.candidates(&snapshot).as_slice()[0] == 0
    };
    let mut placed = Vec::new();
    for i in 0..4000 {
        // Half of all arrivals belong to pod-0 (fair share: a quarter): 3× in relative terms
        // against each of the other three.
        let to_0 = i % 2 == 0;
        placed.push(sim.new_session_where(|id| owned_by_0(id) == to_0).await);
        let live = sim.live();
        let total: u64 = live.iter().map(|(_, n)| n).sum();
        let mean = total as f64 / 4.0;
        for (pod, n) in &live {
            assert!(
                *n as f64 <= 1.25 * mean + 1.0,
                "after {i}: {pod} has {n}, mean {mean}"
            );
        }
    }
    let c = count(&placed);
    assert!(c["pod-0"] < 1300, "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn weighted_endpoints_share_new_sessions_three_to_one() {
    let sim = Sim::new("");
    sim.weighted(&[3, 1]);
    let hits = new_clients(&sim, 4000).await;
    let c = count(&hits);
    let heavy = c["pod-0"] as f64 / 4000.0;
    let light = c["pod-1"] as f64 / 4000.0;
    assert!((0.72..=0.78).contains(&heavy), "{c:?}");
    assert!((0.22..=0.28).contains(&light), "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn a_drained_endpoint_keeps_its_sessions_until_drain_timeout_then_they_fail_over() {
    let sim = Sim::new("drain_timeout = \"5m\"");
    sim.pods(3);
    let sessions = new_clients(&sim, 300).await;
    assert!(sim.backend.set_drained("pod-1", true));
    let on_drained: Vec<&Hit> = sessions.iter().filter(|h| h.endpoint == "pod-1").collect();
    assert!(!on_drained.is_empty());

    for _ in 0..200 {
        assert_ne!(
            sim.request(None).await.endpoint,
            "pod-1",
            "a new session on a drained endpoint"
        );
    }
    advance(Duration::from_secs(299)).await;
    for s in &on_drained {
        let h = sim.request(Some(&s.cookie)).await;
        assert_eq!((h.endpoint.as_str(), h.outcome), ("pod-1", Outcome::Sticky));
    }
    advance(Duration::from_secs(2)).await;
    for s in &on_drained {
        let h = sim.request(Some(&s.cookie)).await;
        assert_ne!(h.endpoint, "pod-1");
        assert_eq!(h.outcome, Outcome::Failover);
        assert_eq!(h.previous.as_deref(), Some("pod-1"));
        assert_eq!(h.session, s.session);
    }
    // Undrain: new sessions reach it again.
    assert!(sim.backend.set_drained("pod-1", false));
    let back = new_clients(&sim, 300)
        .await
        .iter()
        .filter(|h| h.endpoint == "pod-1")
        .count();
    assert!(back > 50, "{back}");
    assert!(
        !sim.backend.set_drained("pod-9", true),
        "unknown endpoints are refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_idle_timeout_starts_over() {
    let sim = Sim::new("idle_timeout = \"10m\"\nrebalance_idle = \"60s\"");
    sim.pods(3);
    let first = sim.request(None).await;
    // Active every 5 minutes for 30 minutes: the session lives on.
    let mut cookie = first.cookie.clone();
    for _ in 0..6 {
        advance(Duration::from_secs(300)).await;
        let h = sim.request(Some(&cookie)).await;
        assert_eq!(h.session, first.session);
        cookie = h.cookie;
    }
    // Idle for 11 minutes (beyond 10m + one refresh interval): a new session.
    advance(Duration::from_secs(660)).await;
    let h = sim.request(Some(&cookie)).await;
    assert_eq!(h.outcome, Outcome::New);
    assert_ne!(h.session, first.session);
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_absolute_timeout_starts_over_however_active() {
    let sim = Sim::new("absolute_timeout = \"1h\"");
    sim.pods(3);
    let first = sim.request(None).await;
    let mut cookie = first.cookie.clone();
    let mut renewed_at = None;
    for minute in 1..=70 {
        advance(Duration::from_secs(60)).await;
        let h = sim.request(Some(&cookie)).await;
        if h.session != first.session {
            renewed_at = Some(minute);
            assert_eq!(h.outcome, Outcome::New);
            break;
        }
        cookie = h.cookie;
    }
    assert_eq!(
        renewed_at,
        Some(61),
        "the session ends right after one hour"
    );
}
