//! A per-source request rate limit: a token bucket refilled at the configured rate, holding at
//! most one second's worth (at least one request). A dozen lines do not justify a crate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One source's bucket.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `per_sec` requests per second.
    pub fn new(per_sec: f64) -> RateLimit {
        let burst = per_sec.max(1.0);
        RateLimit {
            per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one request's token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let Ok(mut s) = self.state.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let (tokens, last) = *s;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens >= 1.0 {
            *s = (tokens - 1.0, now);
            Ok(())
        } else {
            *s = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_rate_is_refused_with_a_wait() {
        let l = RateLimit::new(5.0);
        for _ in 0..5 {
            assert!(l.take().is_ok());
        }
        let wait = l.take().expect_err("the sixth request within a second");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
    }
}
