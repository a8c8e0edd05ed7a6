//! Which dead letters an action applies to, as `switchyard dlq` and the admin API both take it:
//! one meaning of `--route`, `--since`, … for the CLI, the API and the console.

use std::time::{Duration, UNIX_EPOCH};

use super::{Selector, Status};
use crate::event::now_micros;

/// The error classes a dead letter can have.
pub(crate) const CLASSES: &[&str] = &[
    "decode",
    "verify",
    "schema",
    "encode",
    "oversize",
    "unroutable",
    "produce",
    "retries_exhausted",
    "unavailable",
];

/// `s` if it is an error class.
pub(crate) fn parse_class(s: &str) -> Result<String, String> {
    if CLASSES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown class `{s}`; the classes are {}",
            CLASSES.join(", ")
        ))
    }
}

/// A rate of entries per second: `50/s` or `50`.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("`{s}` is not a rate; write e.g. 50/s")),
    }
}

/// A point in time (micros since the epoch): a duration ago (`1h`, `2d`) or a time
/// (`2026-11-21T10:00:00Z`).
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let now = now_micros();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("`{s}` is neither a duration (1h, 2d) nor a time (2026-11-21T10:00:00Z)")
    })?;
    let micros = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_micros();
    i64::try_from(micros).map_err(|e| e.to_string())
}

/// Micros since the epoch as RFC 3339 (seconds).
pub(crate) fn format_time(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The entries replay and discard act on. At least one of `ids`, `route`, `class` or `all`
/// must be given (nothing is "everything" by accident).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    /// These ids.
    pub ids: Vec<i64>,
    /// Every entry of this route.
    pub route: Option<String>,
    /// Every entry of this error class.
    pub class: Option<String>,
    /// Every pending entry.
    pub all: bool,
    /// Only this source.
    pub source: Option<String>,
    /// Failed at or after (micros).
    pub since: Option<i64>,
    /// Failed before (micros).
    pub until: Option<i64>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl Selection {
    /// Why it selects nothing on purpose, if it does not name what it acts on.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.ids.is_empty() && self.route.is_none() && self.class.is_none() && !self.all {
            return Err(
                "say which entries: ids, a route, a class, or all (with source, since, until and limit to narrow it)".into(),
            );
        }
        if let Some(c) = &self.class {
            parse_class(c)?;
        }
        Ok(())
    }

    /// The store's selector: pending entries matching this.
    pub(crate) fn selector(&self) -> Selector {
        Selector {
            ids: self.ids.clone(),
            route: self.route.clone(),
            source: self.source.clone(),
            class: self.class.clone(),
            statuses: vec![Status::Pending],
            since: self.since,
            until: self.until,
            limit: self.limit,
            after_id: None,
        }
    }

    /// As the CLI's flags, for the audit log.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.ids.is_empty() {
            let ids: Vec<String> = self.ids.iter().map(i64::to_string).collect();
            parts.push(format!("--id {}", ids.join(" ")));
        }
        for (flag, v) in [
            ("--route", &self.route),
            ("--class", &self.class),
            ("--source", &self.source),
        ] {
            if let Some(v) = v {
                parts.push(format!("{flag} {v}"));
            }
        }
        if self.all {
            parts.push("--all".into());
        }
        for (flag, v) in [("--since", self.since), ("--until", self.until)] {
            if let Some(t) = v {
                parts.push(format!("{flag} {}", format_time(t)));
            }
        }
        if let Some(l) = self.limit {
            parts.push(format!("--limit {l}"));
        }
        parts.join(" ")
    }
}
