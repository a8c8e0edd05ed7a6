//! Who calls the admin API: a bearer token (or, for the console, the same token in a cookie)
//! checked against the configured digests in constant time, and the role it carries.
//!
//! Failures are answered 401 and audited while the caller's address is within its failure
//! budget ([`FAILURES_PER_MINUTE`]); beyond it, 429 without touching the store, so guessing
//! tokens is slow and cannot fill the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::admin::{AdminToken, Role};

/// The console keeps the token in this cookie (`HttpOnly`, `SameSite=Strict`).
pub(crate) const COOKIE: &str = "switchyard_admin";

/// Failed authentications per address and minute before it is answered 429.
pub(crate) const FAILURES_PER_MINUTE: u32 = 10;
/// Addresses whose failures are remembered at once (the oldest window is dropped beyond).
const MAX_ADDRESSES: usize = 4096;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// `token:<name>`.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The configured tokens.
pub(crate) struct Tokens {
    tokens: Vec<AdminToken>,
}

impl Tokens {
    /// From `[admin.tokens]`.
    pub(crate) fn new(tokens: Vec<AdminToken>) -> Tokens {
        Tokens { tokens }
    }

    /// The principal `presented` stands for, if any. Every configured digest is compared, in
    /// constant time, whatever matches: the time taken says nothing about which token is close.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&AdminToken> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found.map(|t| Principal {
            name: format!("token:{}", t.name),
            role: t.role,
        })
    }
}

/// The token a request presents: `Authorization: Bearer …`, else the console's cookie.
pub(crate) fn presented(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|t| !t.is_empty())
}

/// Failed authentications audited per minute from all addresses together (a flood from many
/// addresses cannot fill the audit trail either).
pub(crate) const FAILURES_PER_MINUTE_IN_ALL: u32 = 600;

/// Failed authentications per address (IPv6: per /64, which one sender holds), by the minute.
#[derive(Default)]
pub(crate) struct Failures {
    by_peer: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    all: Mutex<Option<(Instant, u32)>>,
}

/// The address a budget is kept for: IPv6 addresses by their /64.
fn budget_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Failures {
    /// True while `peer` is over its budget for this minute: it is refused before its token is
    /// even looked at, so guessing cannot go on at any speed.
    pub(crate) fn exhausted(&self, peer: IpAddr) -> bool {
        let map = self
            .by_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&budget_key(peer)).is_some_and(|(since, n)| {
            since.elapsed() < Duration::from_secs(60) && *n >= FAILURES_PER_MINUTE
        })
    }

    /// Counts a failure of `peer`; false once it (or all addresses together) is over its
    /// budget for this minute.
    pub(crate) fn charge(&self, peer: IpAddr) -> bool {
        let peer = budget_key(peer);
        {
            let mut all = self
                .all
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let (since, n) = all.get_or_insert((now, 0));
            if now.duration_since(*since) >= Duration::from_secs(60) {
                *since = now;
                *n = 0;
            }
            *n = n.saturating_add(1);
            if *n > FAILURES_PER_MINUTE_IN_ALL {
                return false;
            }
        }
        let mut map = self
            .by_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&peer) {
            map.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
            if map.len() >= MAX_ADDRESSES {
                // Under a flood from many addresses: refuse the newcomers, keep the store quiet.
                return false;
            }
        }
        let entry = map.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= FAILURES_PER_MINUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, secret: &str) -> AdminToken {
        AdminToken {
            name: name.into(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    #[test]
    fn a_token_authenticates_as_its_name_and_role_and_nothing_else_does() {
        let tokens = Tokens::new(vec![
            token("alice", Role::Operator, "sy_alice"),
            token("bob", Role::Viewer, "sy_bob"),
        ]);
        assert_eq!(
            tokens.authenticate("sy_alice"),
            Some(Principal {
                name: "token:alice".into(),
                role: Role::Operator
            })
        );
        assert_eq!(
            tokens.authenticate("sy_bob").map(|p| p.role),
            Some(Role::Viewer)
        );
        assert_eq!(tokens.authenticate("sy_alic"), None);
        assert_eq!(tokens.authenticate(""), None);
    }

    #[test]
    fn the_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Bearer  sy_x ".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("sy_x"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented(&h), None, "another scheme is not a token");
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; switchyard_admin=sy_y".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("sy_y"));
    }

    #[test]
    fn an_address_over_its_failure_budget_is_refused_for_the_minute() {
        let f = Failures::default();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FAILURES_PER_MINUTE {
            assert!(f.charge(peer));
        }
        assert!(!f.charge(peer));
        assert!(f.exhausted(peer));
        assert!(f.charge("10.0.0.2".parse().unwrap()), "per address");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..FAILURES_PER_MINUTE {
            assert!(f.charge(v6));
        }
        assert!(
            f.exhausted("2001:db8::ffff".parse().unwrap()),
            "an IPv6 sender's /64 shares one budget"
        );
    }
}
