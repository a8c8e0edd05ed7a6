//! A per-source request rate limit: a token bucket refilled at the configured rate, holding at
//! most one second's worth (at least one request). A dozen lines do not justify a crate.
//!
//! Verify, then charge: the source's bucket is charged only by requests whose signature
//! verified, so forgeries cannot spend a provider's rate limit. Failed checks are charged to
//! the sender's address instead ([`PeerFailures`], one per source): a bounded map of small
//! buckets, one per address (an IPv6 sender by its /64), and one shared bucket for the
//! addresses past the map's bound.

use std::collections::HashMap;
use std::net::IpAddr;
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

/// Failed signature checks a sender may make per second, and at once.
pub(crate) const FAILURES_PER_SEC: f64 = 10.0;
/// See [`FAILURES_PER_SEC`].
pub(crate) const FAILURES_BURST: f64 = 20.0;
/// Addresses with a bucket of their own; beyond it they share one.
pub(crate) const MAX_PEERS: usize = 4096;

/// Failed signature checks per sender address (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct PeerFailures {
    peers: Mutex<Peers>,
}

#[derive(Debug, Default)]
struct Peers {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// The bucket of the addresses past [`MAX_PEERS`] (and of an unknown address).
    shared: Option<(f64, Instant)>,
}

impl PeerFailures {
    /// Charges one failed check to `peer`: false when its budget is spent.
    pub(crate) fn take(&self, peer: Option<IpAddr>) -> bool {
        self.take_at(peer, Instant::now())
    }

    fn take_at(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Ok(mut p) = self.peers.lock() else {
            return false;
        };
        let p = &mut *p;
        let key = peer.map(network);
        if let Some(key) = key
            && !p.buckets.contains_key(&key)
            && p.buckets.len() >= MAX_PEERS
        {
            // Forget the senders whose bucket has refilled (quiet for two seconds or more).
            p.buckets
                .retain(|_, (tokens, last)| refill(*tokens, *last, now) < FAILURES_BURST);
        }
        let bucket = match key {
            Some(key) if p.buckets.len() < MAX_PEERS || p.buckets.contains_key(&key) => {
                p.buckets.entry(key).or_insert((FAILURES_BURST, now))
            }
            _ => p.shared.get_or_insert((FAILURES_BURST, now)),
        };
        let tokens = refill(bucket.0, bucket.1, now);
        let ok = tokens >= 1.0;
        *bucket = (if ok { tokens - 1.0 } else { tokens }, now);
        ok
    }

    /// Addresses with a bucket of their own now.
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.peers.lock().map(|p| p.buckets.len()).unwrap_or(0)
    }
}

fn refill(tokens: f64, last: Instant, now: Instant) -> f64 {
    (tokens + now.duration_since(last).as_secs_f64() * FAILURES_PER_SEC).min(FAILURES_BURST)
}

/// The address a sender is known by: an IPv4 address, an IPv6 /64 (one host has a whole /64).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_past_its_failure_budget_is_refused_and_others_are_not() {
        let f = PeerFailures::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..FAILURES_BURST as usize {
            assert!(f.take_at(Some(a), now));
        }
        assert!(!f.take_at(Some(a), now), "past the burst");
        assert!(f.take_at(Some(b), now), "another sender has its own budget");
        // One host's IPv6 addresses share their /64.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        for _ in 0..FAILURES_BURST as usize {
            assert!(f.take_at(Some(v6a), now));
        }
        assert!(!f.take_at(Some(v6b), now));
    }

    #[test]
    fn the_map_of_senders_is_bounded() {
        let f = PeerFailures::default();
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 1000) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // Each sender spends its whole burst at once, so none is forgotten.
            for _ in 0..FAILURES_BURST as usize {
                f.take_at(Some(ip), now);
            }
        }
        assert_eq!(f.peers(), MAX_PEERS);
        // The senders past the bound share one bucket, spent by now.
        let late = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000));
        assert!(!f.take_at(Some(late), now));
        // Once the first senders have been quiet long enough to refill, a new sender takes the
        // place of one of them.
        let later = now + Duration::from_secs(3);
        assert!(f.take_at(Some(late), later));
        assert!(f.peers() <= MAX_PEERS);
    }

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
