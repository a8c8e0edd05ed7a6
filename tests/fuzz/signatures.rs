//! Signature headers (`source::webhook::verify`): Stripe's `t=…,v1=…` lists, Standard Webhooks'
//! space-separated `v1,<base64>` entries, GitHub's `sha256=<hex>`, Shopify's base64, Slack's
//! `v0=` with its timestamp, and the generic HMAC header. Properties: any header text is
//! answered (never a panic, never accepted unsigned); a valid signature is accepted wherever it
//! stands among odd separators, whitespace and many other entries; one changed byte of the body
//! or of the signature is refused; a request costs bounded heap however long its headers are.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use switchyard::config::{HmacAlgorithm, HmacSpec, Secret, SignatureEncoding, WebhookProvider};
use switchyard::source::webhook::verify::{Rejection, Verifier, sign};

use crate::{cases, within_heap};

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "s3cr3t-key";
/// The Standard Webhooks secret of [`SECRET`]'s bytes.
fn standard_secret() -> String {
    format!("whsec_{}", BASE64.encode(SECRET))
}

fn hmac(timestamp: bool, encoding: SignatureEncoding) -> WebhookProvider {
    WebhookProvider::Hmac(HmacSpec {
        header: "x-signature".into(),
        algorithm: HmacAlgorithm::Sha512,
        encoding,
        prefix: "sha512=".into(),
        timestamp_header: timestamp.then(|| "x-timestamp".into()),
    })
}

fn providers() -> Vec<WebhookProvider> {
    vec![
        WebhookProvider::Stripe,
        WebhookProvider::Github,
        WebhookProvider::Shopify,
        WebhookProvider::Slack,
        WebhookProvider::Standard,
        hmac(false, SignatureEncoding::Hex),
        hmac(true, SignatureEncoding::Base64),
    ]
}

/// The headers each provider reads.
fn header_names(p: &WebhookProvider) -> &'static [&'static str] {
    match p {
        WebhookProvider::Stripe => &["stripe-signature"],
        WebhookProvider::Github => &["x-hub-signature-256"],
        WebhookProvider::Shopify => &["x-shopify-hmac-sha256"],
        WebhookProvider::Slack => &["x-slack-request-timestamp", "x-slack-signature"],
        WebhookProvider::Standard => &["webhook-id", "webhook-timestamp", "webhook-signature"],
        WebhookProvider::Hmac(_) => &["x-signature", "x-timestamp"],
        WebhookProvider::None { .. } => &["authorization"],
    }
}

fn verifier(p: &WebhookProvider) -> Verifier {
    // Two active secrets, as during a rotation: both are tried.
    Verifier::new(
        p.clone(),
        vec![
            Secret(b"an-older-secret".to_vec()),
            Secret(SECRET.as_bytes().to_vec()),
        ],
        Duration::from_secs(300),
    )
}

/// The headers of a request of `body` signed for `p` at `t`.
fn signed(p: &WebhookProvider, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    match p {
        WebhookProvider::Stripe => vec![("stripe-signature", sign::stripe(SECRET, t, body))],
        WebhookProvider::Github => vec![("x-hub-signature-256", sign::github(SECRET, body))],
        WebhookProvider::Shopify => vec![("x-shopify-hmac-sha256", sign::shopify(SECRET, body))],
        WebhookProvider::Slack => vec![
            ("x-slack-request-timestamp", t.to_string()),
            ("x-slack-signature", sign::slack(SECRET, t, body)),
        ],
        WebhookProvider::Standard => vec![
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", t.to_string()),
            (
                "webhook-signature",
                sign::standard(&standard_secret(), "msg_1", t, body),
            ),
        ],
        WebhookProvider::Hmac(spec) => {
            let ts = t.to_string();
            let parts: Vec<&[u8]> = match spec.timestamp_header {
                Some(_) => vec![ts.as_bytes(), b".", body],
                None => vec![body],
            };
            let sig = sign::hmac(spec.algorithm, spec.encoding, SECRET, &parts);
            let mut h = vec![("x-signature", format!("{}{sig}", spec.prefix))];
            if spec.timestamp_header.is_some() {
                h.push(("x-timestamp", ts));
            }
            h
        }
        WebhookProvider::None { .. } => Vec::new(),
    }
}

fn header_map(pairs: &[(&str, Vec<u8>)]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        );
    }
    Some(h)
}

fn as_bytes(pairs: Vec<(&'static str, String)>) -> Vec<(&'static str, Vec<u8>)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

/// Heap a verification may hold: the MACs of the secrets, and a copy of one signature entry
/// being decoded, never anything that grows with the number of entries.
fn heap_limit(headers: &HeaderMap) -> u64 {
    let longest = headers.values().map(|v| v.len()).max().unwrap_or(0);
    longest as u64 + (16 << 10)
}

fn verify(v: &Verifier, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Rejection> {
    let shown = || format!("verifying {headers:?}");
    let out = within_heap(heap_limit(headers), &shown, || v.verify(headers, body, now));
    if let Err(e) = &out {
        assert!(!e.to_string().is_empty() && !e.reason().is_empty());
        assert!(!e.to_string().contains(SECRET), "{e} shows the secret");
    }
    out
}

/// Header text a sender could put on the wire: printable ASCII with the separators the schemes
/// use, tabs, and bytes above ASCII (which `to_str` refuses).
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[ -~]{0,12}".prop_map(String::into_bytes),
        proptest::sample::select(vec![
            "t=",
            "v1=",
            "v0=",
            "v1,",
            "sha256=",
            "sha512=",
            ",",
            " ",
            "  ",
            "\t",
            "=",
            "==",
            "-",
            "+",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "deadbeef",
            "DEADBEEF",
            "0",
            "1700000000",
            "AAAA",
            "A===",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(0x80u8..=0xff, 1..3),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fn provider() -> impl Strategy<Value = WebhookProvider> {
    proptest::sample::select(providers())
}

/// Entries that are not a valid signature: other versions, junk, empty, long.
fn junk_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("v0=abc".to_string()),
        Just("v1=".to_string()),
        Just("v1=zz".to_string()),
        "v1=[0-9a-f]{64}",
        "v2=[0-9a-f]{0,16}",
        // Other keys (never `t`, which would be a second timestamp).
        "[a-z]{2,3}=[ -+\\--~]{0,10}",
        Just(format!("v1={}", "ab".repeat(200))),
    ]
}

fn standard_junk() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("v1,".to_string()),
        Just("v1,!!!".to_string()),
        "v1,[A-Za-z0-9+/]{43}=",
        "v1a,[A-Za-z0-9+/]{4,12}",
        "v2,[A-Za-z0-9+/]{4,12}",
        Just(format!("v1,{}", "A".repeat(400))),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any header text for any provider: refused with a reason, never a panic.
    #[test]
    fn any_header_text_is_refused_with_a_reason(
        p in provider(),
        values in proptest::collection::vec(header_text(), 3),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        let pairs: Vec<(&str, Vec<u8>)> =
            header_names(&p).iter().copied().zip(values).collect();
        if let Some(headers) = header_map(&pairs) {
            let result = verify(&verifier(&p), &headers, &body, now);
            prop_assert!(result.is_err(), "{:?} accepted {:?}", p, headers);
        }
    }

    /// A signed request is accepted, and refused once one byte of its body changes, or one
    /// character of its signature header.
    #[test]
    fn a_signature_covers_every_byte_of_the_body(
        p in provider(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
        t in NOW - 300..=NOW + 300,
    ) {
        let v = verifier(&p);
        let pairs = as_bytes(signed(&p, t, &body));
        let headers = header_map(&pairs).ok_or_else(|| TestCaseError::fail("headers"))?;
        prop_assert_eq!(verify(&v, &headers, &body, NOW), Ok(()));
        if !body.is_empty() {
            let mut tampered = body.clone();
            tampered[at.index(body.len())] ^= flip;
            prop_assert_eq!(verify(&v, &headers, &tampered, NOW), Err(Rejection::Mismatch));
        }
        // The signature header is the last one written; change one of its characters to
        // another of the same alphabet (hex stays hex, base64 stays base64).
        let mut forged = pairs.clone();
        if let Some((name, sig)) = forged.iter_mut().find(|(n, _)| {
            matches!(*n, "stripe-signature" | "x-hub-signature-256" | "x-shopify-hmac-sha256"
                | "x-slack-signature" | "webhook-signature" | "x-signature")
        }) {
            let name = *name;
            let i = sig.len() - 4 - at.index(8);
            sig[i] = if sig[i] == b'a' { b'b' } else { b'a' };
            let forged_headers = header_map(&forged).ok_or_else(|| TestCaseError::fail("headers"))?;
            let result = verify(&v, &forged_headers, &body, NOW);
            prop_assert!(result.is_err(), "{} with one character changed accepted", name);
        }
    }

    /// Stripe: the valid `v1` anywhere among other entries, with whitespace around entries,
    /// the timestamp first or last, and up to a few hundred entries.
    #[test]
    fn stripe_finds_its_signature_among_odd_entries(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        junk in proptest::collection::vec(junk_entry(), 0..300),
        at in any::<proptest::sample::Index>(),
        t_at in any::<proptest::sample::Index>(),
        pad in proptest::sample::select(vec!["", " ", "  ", "\t"]),
    ) {
        let header = sign::stripe(SECRET, NOW, &body);
        let (t, v1) = header.split_once(',').ok_or_else(|| TestCaseError::fail("t,v1"))?;
        let mut entries: Vec<String> = junk;
        entries.insert(at.index(entries.len() + 1), v1.to_string());
        entries.insert(t_at.index(entries.len() + 1), t.to_string());
        let value = entries
            .iter()
            .map(|e| format!("{pad}{e}{pad}"))
            .collect::<Vec<_>>()
            .join(",");
        let headers = header_map(&[("stripe-signature", value.into_bytes())])
            .ok_or_else(|| TestCaseError::fail("headers"))?;
        let v = verifier(&WebhookProvider::Stripe);
        prop_assert_eq!(verify(&v, &headers, &body, NOW), Ok(()));
        prop_assert_eq!(verify(&v, &headers, b"other body", NOW), Err(Rejection::Mismatch));
    }

    /// Standard Webhooks: one matching `v1,` entry among others, separated by spaces.
    #[test]
    fn standard_webhooks_finds_its_signature_among_odd_entries(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        junk in proptest::collection::vec(standard_junk(), 0..300),
        at in any::<proptest::sample::Index>(),
    ) {
        let mine = sign::standard(&standard_secret(), "msg_1", NOW, &body);
        let mut entries = junk;
        entries.insert(at.index(entries.len() + 1), mine);
        let headers = header_map(&[
            ("webhook-id", b"msg_1".to_vec()),
            ("webhook-timestamp", NOW.to_string().into_bytes()),
            ("webhook-signature", entries.join(" ").into_bytes()),
        ])
        .ok_or_else(|| TestCaseError::fail("headers"))?;
        let v = verifier(&WebhookProvider::Standard);
        prop_assert_eq!(verify(&v, &headers, &body, NOW), Ok(()));
        prop_assert_eq!(verify(&v, &headers, b"other body", NOW), Err(Rejection::Mismatch));
    }

    /// Timestamps of any size, sign and spelling: accepted only within the tolerance.
    #[test]
    fn timestamps_of_any_size_are_fresh_or_stale_never_a_panic(
        t in prop_oneof![any::<i64>(), NOW - 600..NOW + 600],
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        for p in [WebhookProvider::Stripe, WebhookProvider::Slack, WebhookProvider::Standard] {
            let pairs = as_bytes(signed(&p, t, b"{}"));
            let headers = header_map(&pairs).ok_or_else(|| TestCaseError::fail("headers"))?;
            let result = verify(&verifier(&p), &headers, b"{}", now);
            let fresh = (i128::from(now) - i128::from(t)).abs() <= 300;
            prop_assert_eq!(result.is_ok(), fresh, "{:?} at t={} now={}: {:?}", p, t, now, result);
        }
    }
}

/// Regression: a header of many thousand empty signature entries holds no more heap than one.
#[test]
fn many_signature_entries_cost_no_more_heap_than_one() {
    let many_v1 = format!("t={NOW},{}", "v1=,".repeat(20_000));
    let many_standard = "v1, ".repeat(20_000);
    for (p, pairs) in [
        (
            WebhookProvider::Stripe,
            vec![("stripe-signature", many_v1.into_bytes())],
        ),
        (
            WebhookProvider::Standard,
            vec![
                ("webhook-id", b"msg_1".to_vec()),
                ("webhook-timestamp", NOW.to_string().into_bytes()),
                ("webhook-signature", many_standard.into_bytes()),
            ],
        ),
    ] {
        let headers = header_map(&pairs).expect("headers");
        let v = verifier(&p);
        let shown = || format!("{p:?} with 20000 signature entries");
        let result = within_heap(16 << 10, &shown, || v.verify(&headers, b"{}", NOW));
        assert_eq!(result, Err(Rejection::Mismatch), "{p:?}");
    }
}
