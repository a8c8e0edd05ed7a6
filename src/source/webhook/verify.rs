//! Signature schemes of webhook providers, each over the raw body bytes exactly as its provider
//! documents it. Every comparison is constant-time (`Mac::verify_slice`, `subtle`); every
//! active secret is tried, so a rotation accepts the old and the new one; schemes with a
//! timestamp reject deliveries older (or newer) than the source's tolerance.
//!
//! Received signatures are decoded into fixed buffers, one entry of a header at a time as it is
//! compared (nothing allocated per request, however many entries a header has), and nothing
//! parses the body: verification comes before parsing.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::config::{HmacAlgorithm, HmacSpec, Secret, SignatureEncoding, WebhookProvider};

/// Why a request was refused (401). The text names what was wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(String),
    /// A header is present but not in the scheme's format.
    #[error("malformed header {0}")]
    Malformed(String),
    /// The signed timestamp is outside the tolerance.
    #[error("the signature's timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    /// No active secret produces any of the signatures sent.
    #[error("no signature matches any active secret")]
    Mismatch,
    /// The bearer token is missing or wrong.
    #[error("missing or wrong bearer token")]
    Token,
}

impl Rejection {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::Malformed(_) => "malformed",
            Rejection::Stale(_) => "stale",
            Rejection::Mismatch => "mismatch",
            Rejection::Token => "token",
        }
    }
}

/// Verifies requests for one source.
#[derive(Debug, Clone)]
pub struct Verifier {
    provider: WebhookProvider,
    secrets: Vec<Secret>,
    tolerance_secs: i64,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    headers
        .get(name)
        .ok_or_else(|| Rejection::MissingHeader(name.to_string()))?
        .to_str()
        .map_err(|_| Rejection::Malformed(name.to_string()))
}

/// The longest MAC any supported algorithm produces (HMAC-SHA-512).
const MAX_MAC: usize = 64;

/// A MAC, or a received signature decoded into a fixed buffer (no allocation per request).
#[derive(Clone, Copy)]
struct Sig {
    buf: [u8; MAX_MAC],
    /// Above [`MAX_MAC`] for a signature longer than any MAC: it matches nothing, as a
    /// decoded signature of the wrong length.
    len: usize,
}

impl Sig {
    fn from(bytes: &[u8]) -> Sig {
        let mut buf = [0; MAX_MAC];
        if let Some(to) = buf.get_mut(..bytes.len()) {
            to.copy_from_slice(bytes);
        }
        Sig {
            buf,
            len: bytes.len(),
        }
    }

    /// Decodes hex text (either case); `None` if it is not hex.
    fn hex(text: &str) -> Option<Sig> {
        let text = text.as_bytes();
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let len = text.len() / 2;
        let mut buf = [0; MAX_MAC];
        match buf.get_mut(..len) {
            Some(out) => hex::decode_to_slice(text, out).ok()?,
            None if text.iter().all(u8::is_ascii_hexdigit) => {}
            None => return None,
        }
        Some(Sig { buf, len })
    }

    /// Decodes standard base64 (padded); `None` if it is not base64.
    fn base64(text: &str) -> Option<Sig> {
        // base64 wants room for its estimate of the length (66 bytes for a 64-byte value).
        let mut buf = [0; MAX_MAC + 32];
        match BASE64.decode_slice(text, &mut buf) {
            Ok(len) => Some(Sig::from(buf.get(..len)?)),
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                BASE64.decode(text).ok().map(|long| Sig::from(&long))
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => None,
        }
    }

    /// The bytes; `None` when longer than any MAC.
    fn bytes(&self) -> Option<&[u8]> {
        self.buf.get(..self.len)
    }

    /// True when `self` and `other` are the same bytes, compared in constant time (the lengths
    /// are public).
    fn same(&self, other: &Sig) -> bool {
        match (self.bytes(), other.bytes()) {
            (Some(a), Some(b)) => a.len() == b.len() && bool::from(a.ct_eq(b)),
            _ => false,
        }
    }
}

/// HMAC(`key`, concatenation of `parts`).
fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Option<Sig> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Sig> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
        for p in parts {
            m.update(p);
        }
        Some(Sig::from(&m.finalize().into_bytes()))
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

impl Verifier {
    /// A verifier for `provider` with the active `secrets`.
    pub fn new(
        provider: WebhookProvider,
        secrets: Vec<Secret>,
        tolerance: std::time::Duration,
    ) -> Verifier {
        Verifier {
            provider,
            secrets,
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        }
    }

    fn fresh(&self, timestamp: i64, now: i64) -> Result<(), Rejection> {
        let skew = now.saturating_sub(timestamp);
        if skew.saturating_abs() > self.tolerance_secs {
            return Err(Rejection::Stale(skew));
        }
        Ok(())
    }

    /// True when some active secret signs `parts` to one of `signatures` (one MAC per secret,
    /// compared with each signature in constant time; the signatures are decoded again for each
    /// secret rather than collected, so a header of many entries costs time, not memory).
    fn any_matches<I: Iterator<Item = Sig>>(
        &self,
        algorithm: HmacAlgorithm,
        parts: &[&[u8]],
        signatures: impl Fn() -> I,
    ) -> Result<(), Rejection> {
        let ok = self.secrets.iter().any(|s| {
            mac(algorithm, &s.0, parts)
                .is_some_and(|expected| signatures().any(|sig| sig.same(&expected)))
        });
        if ok { Ok(()) } else { Err(Rejection::Mismatch) }
    }

    /// Checks one request; `now` is Unix seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Rejection> {
        use HmacAlgorithm::Sha256;
        match &self.provider {
            WebhookProvider::None { token: None } => Ok(()),
            WebhookProvider::None { token: Some(token) } => {
                let given = header(headers, "authorization").map_err(|_| Rejection::Token)?;
                let given = given.strip_prefix("Bearer ").ok_or(Rejection::Token)?;
                if given.as_bytes().ct_eq(&token.0).into() {
                    Ok(())
                } else {
                    Err(Rejection::Token)
                }
            }
            WebhookProvider::Stripe => {
                // Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]
                let value = header(headers, "stripe-signature")?;
                let entries = || {
                    value
                        .split(',')
                        .filter_map(|item| item.trim().split_once('='))
                };
                let signatures =
                    || entries().filter_map(|(k, s)| if k == "v1" { Sig::hex(s) } else { None });
                // The last `t` counts, as it always has.
                let t = entries()
                    .filter_map(|(k, t)| (k == "t").then_some(t))
                    .next_back()
                    .ok_or_else(|| Rejection::Malformed("stripe-signature".into()))?;
                let ts: i64 = t
                    .parse()
                    .map_err(|_| Rejection::Malformed("stripe-signature".into()))?;
                if signatures().next().is_none() {
                    return Err(Rejection::Malformed("stripe-signature".into()));
                }
                self.fresh(ts, now)?;
                self.any_matches(Sha256, &[t.as_bytes(), b".", body], signatures)
            }
            WebhookProvider::Github => {
                let value = header(headers, "x-hub-signature-256")?;
                let sig = value
                    .strip_prefix("sha256=")
                    .and_then(Sig::hex)
                    .ok_or_else(|| Rejection::Malformed("x-hub-signature-256".into()))?;
                self.any_matches(Sha256, &[body], || std::iter::once(sig))
            }
            WebhookProvider::Shopify => {
                let value = header(headers, "x-shopify-hmac-sha256")?;
                let sig = Sig::base64(value.trim())
                    .ok_or_else(|| Rejection::Malformed("x-shopify-hmac-sha256".into()))?;
                self.any_matches(Sha256, &[body], || std::iter::once(sig))
            }
            WebhookProvider::Slack => {
                let t = header(headers, "x-slack-request-timestamp")?;
                let ts: i64 = t
                    .trim()
                    .parse()
                    .map_err(|_| Rejection::Malformed("x-slack-request-timestamp".into()))?;
                let value = header(headers, "x-slack-signature")?;
                let sig = value
                    .strip_prefix("v0=")
                    .and_then(Sig::hex)
                    .ok_or_else(|| Rejection::Malformed("x-slack-signature".into()))?;
                self.fresh(ts, now)?;
                self.any_matches(Sha256, &[b"v0:", t.as_bytes(), b":", body], || {
                    std::iter::once(sig)
                })
            }
            WebhookProvider::Standard => {
                let id = header(headers, "webhook-id")?;
                let t = header(headers, "webhook-timestamp")?;
                let ts: i64 = t
                    .trim()
                    .parse()
                    .map_err(|_| Rejection::Malformed("webhook-timestamp".into()))?;
                let value = header(headers, "webhook-signature")?;
                // Space-separated `v1,<base64>` entries; other versions are skipped.
                let signatures = || {
                    value
                        .split(' ')
                        .filter_map(|e| e.strip_prefix("v1,"))
                        .filter_map(Sig::base64)
                };
                if signatures().next().is_none() {
                    return Err(Rejection::Malformed("webhook-signature".into()));
                }
                self.fresh(ts, now)?;
                self.any_matches(
                    Sha256,
                    &[id.as_bytes(), b".", t.as_bytes(), b".", body],
                    signatures,
                )
            }
            WebhookProvider::Hmac(spec) => self.verify_hmac(spec, headers, body, now),
        }
    }

    fn verify_hmac(
        &self,
        spec: &HmacSpec,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejection> {
        let value = header(headers, &spec.header)?;
        let encoded = value
            .trim()
            .strip_prefix(spec.prefix.as_str())
            .ok_or_else(|| Rejection::Malformed(spec.header.clone()))?;
        let sig = match spec.encoding {
            SignatureEncoding::Hex => Sig::hex(encoded),
            SignatureEncoding::Base64 => Sig::base64(encoded),
        }
        .ok_or_else(|| Rejection::Malformed(spec.header.clone()))?;
        match &spec.timestamp_header {
            None => self.any_matches(spec.algorithm, &[body], || std::iter::once(sig)),
            Some(th) => {
                let t = header(headers, th)?;
                let ts: i64 = t
                    .trim()
                    .parse()
                    .map_err(|_| Rejection::Malformed(th.clone()))?;
                self.fresh(ts, now)?;
                self.any_matches(spec.algorithm, &[t.trim().as_bytes(), b".", body], || {
                    std::iter::once(sig)
                })
            }
        }
    }
}

/// Signatures as the providers compute them, for tests and the benchmark's load generator.
pub mod sign {
    use super::*;

    fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        super::mac(algorithm, key, parts)
            .and_then(|m| m.bytes().map(<[u8]>::to_vec))
            .unwrap_or_default()
    }

    /// `Stripe-Signature` for `body` at `t`.
    pub fn stripe(secret: &str, t: i64, body: &[u8]) -> String {
        let t = t.to_string();
        let sig = mac(
            HmacAlgorithm::Sha256,
            secret.as_bytes(),
            &[t.as_bytes(), b".", body],
        );
        format!("t={t},v1={}", hex::encode(sig))
    }

    /// `X-Hub-Signature-256`.
    pub fn github(secret: &str, body: &[u8]) -> String {
        format!(
            "sha256={}",
            hex::encode(mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[body]))
        )
    }

    /// `X-Shopify-Hmac-Sha256`.
    pub fn shopify(secret: &str, body: &[u8]) -> String {
        BASE64.encode(mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[body]))
    }

    /// `X-Slack-Signature` for timestamp `t`.
    pub fn slack(secret: &str, t: i64, body: &[u8]) -> String {
        let t = t.to_string();
        let sig = mac(
            HmacAlgorithm::Sha256,
            secret.as_bytes(),
            &[b"v0:", t.as_bytes(), b":", body],
        );
        format!("v0={}", hex::encode(sig))
    }

    /// `webhook-signature` (one `v1,` entry) for a `whsec_` secret.
    pub fn standard(secret: &str, id: &str, t: i64, body: &[u8]) -> String {
        let key = BASE64
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap_or_default();
        let t = t.to_string();
        let sig = mac(
            HmacAlgorithm::Sha256,
            &key,
            &[id.as_bytes(), b".", t.as_bytes(), b".", body],
        );
        format!("v1,{}", BASE64.encode(sig))
    }

    /// A generic HMAC signature.
    pub fn hmac(
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        secret: &str,
        parts: &[&[u8]],
    ) -> String {
        let sig = mac(algorithm, secret.as_bytes(), parts);
        match encoding {
            SignatureEncoding::Hex => hex::encode(sig),
            SignatureEncoding::Base64 => BASE64.encode(sig),
        }
    }
}

#[cfg(test)]
mod tests;
