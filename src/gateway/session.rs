//! GEP-1619 rules shared by everything that turns `sessionPersistence` into tether's
//! affinity settings, or tether's settings into `sessionPersistence`: the Gateway API
//! duration format and the cookie `Path` a rule's match implies.

use std::time::Duration;

use super::api::{HTTPRouteMatch, PathMatchType};

/// Largest number in one component of a Gateway API duration: the CRD's pattern is
/// `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
const MAX_COMPONENT: u64 = 99_999;

/// Formats whole seconds as a Gateway API duration (`48h`, `1h30m`, `90s` → `1m30s`).
///
/// `None` when it cannot be written: more than 99999 hours (about 11 years). Seconds
/// are not written as one number because `172800s` has six digits, which the CRD's
/// pattern rejects.
pub fn format_duration(secs: u64) -> Option<String> {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > MAX_COMPONENT {
        return None;
    }
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    Some(out)
}

/// Parses a Gateway API duration (`1h30m`, `500ms`): one to four components of up to
/// five digits, each `h`, `m`, `s` or `ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut components = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        components += 1;
    }
    (1..=4).contains(&components).then_some(total)
}

/// The cookie `Path` GEP-1619 gives a rule's session for one of its matches: `/` for a
/// match of every path, the path itself for `PathPrefix` and `Exact`, and the longest
/// non-regex prefix (up to its last `/`) for a regular expression.
pub fn cookie_path(m: Option<&HTTPRouteMatch>) -> String {
    let Some(path) = m.and_then(|m| m.path.as_ref()) else {
        return "/".into();
    };
    let value = path.value.as_deref().unwrap_or("/");
    match path.kind.unwrap_or(PathMatchType::PathPrefix) {
        PathMatchType::PathPrefix | PathMatchType::Exact => {
            // `/foo/` and `/foo` match the same requests as prefixes; the cookie path
            // without the slash covers both `/foo` and `/foo/…`.
            let trimmed = value.trim_end_matches('/');
            if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            }
        }
        PathMatchType::RegularExpression => {
            let literal: String = value
                .chars()
                .take_while(|c| !r".*+?()[]{}|^$\".contains(*c))
                .collect();
            match literal.rfind('/') {
                Some(0) | None => "/".into(),
                Some(i) => literal[..i].into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::HTTPPathMatch;

    fn path(kind: PathMatchType, value: &str) -> HTTPRouteMatch {
        HTTPRouteMatch {
            path: Some(HTTPPathMatch {
                kind: Some(kind),
                value: Some(value.into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn durations_fit_the_crd_pattern_of_five_digits_per_component() {
        assert_eq!(format_duration(172_800).as_deref(), Some("48h"));
        assert_eq!(format_duration(5400).as_deref(), Some("1h30m"));
        assert_eq!(format_duration(90).as_deref(), Some("1m30s"));
        assert_eq!(format_duration(0).as_deref(), Some("0s"));
        assert_eq!(format_duration(100_000 * 3600), None);
        for secs in [1, 59, 61, 3599, 3601, 86_399, 172_800, 99_999 * 3600 + 3599] {
            let text = format_duration(secs).unwrap();
            assert_eq!(
                parse_duration(&text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("172800s"), None);
        assert_eq!(parse_duration("1h1h1h1h1h"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn cookie_path_follows_the_rules_match_as_gep_1619_says() {
        assert_eq!(cookie_path(None), "/");
        assert_eq!(
            cookie_path(Some(&path(PathMatchType::PathPrefix, "/"))),
            "/"
        );
        assert_eq!(
            cookie_path(Some(&path(PathMatchType::PathPrefix, "/api/"))),
            "/api"
        );
        assert_eq!(
            cookie_path(Some(&path(PathMatchType::Exact, "/a/b"))),
            "/a/b"
        );
        assert_eq!(
            cookie_path(Some(&path(
                PathMatchType::RegularExpression,
                "/p1/p2/.*/p3"
            ))),
            "/p1/p2"
        );
        assert_eq!(
            cookie_path(Some(&path(PathMatchType::RegularExpression, "^/x"))),
            "/"
        );
    }
}
