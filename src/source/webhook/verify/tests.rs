use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::sign;
use super::*;

const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn verifier(provider: WebhookProvider, secrets: &[&str]) -> Verifier {
    let secrets = secrets
        .iter()
        .map(|s| match (&provider, s.strip_prefix("whsec_")) {
            (WebhookProvider::Standard, Some(b)) => Secret(BASE64.decode(b).expect("base64")),
            _ => Secret(s.as_bytes().to_vec()),
        })
        .collect();
    Verifier::new(provider, secrets, Duration::from_secs(300))
}

/// Signs `body` for `provider` with `secret` at `t`.
fn signed(provider: &WebhookProvider, secret: &str, t: i64, body: &[u8]) -> HeaderMap {
    match provider {
        WebhookProvider::Stripe => headers(&[("stripe-signature", sign::stripe(secret, t, body))]),
        WebhookProvider::Github => headers(&[("x-hub-signature-256", sign::github(secret, body))]),
        WebhookProvider::Shopify => {
            headers(&[("x-shopify-hmac-sha256", sign::shopify(secret, body))])
        }
        WebhookProvider::Slack => headers(&[
            ("x-slack-request-timestamp", t.to_string()),
            ("x-slack-signature", sign::slack(secret, t, body)),
        ]),
        WebhookProvider::Standard => headers(&[
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", t.to_string()),
            (
                "webhook-signature",
                sign::standard(secret, "msg_1", t, body),
            ),
        ]),
        WebhookProvider::Hmac(spec) => {
            let ts = t.to_string();
            let sig = match &spec.timestamp_header {
                Some(_) => sign::hmac(
                    spec.algorithm,
                    spec.encoding,
                    secret,
                    &[ts.as_bytes(), b".", body],
                ),
                None => sign::hmac(spec.algorithm, spec.encoding, secret, &[body]),
            };
            let mut h = headers(&[(spec.header.as_str(), format!("{}{sig}", spec.prefix))]);
            if let Some(th) = &spec.timestamp_header {
                h.insert(
                    HeaderName::from_bytes(th.as_bytes()).expect("name"),
                    HeaderValue::from_str(&ts).expect("value"),
                );
            }
            h
        }
        WebhookProvider::None { .. } => HeaderMap::new(),
    }
}

fn hmac_spec(timestamp: bool) -> WebhookProvider {
    WebhookProvider::Hmac(HmacSpec {
        header: "x-signature".into(),
        algorithm: HmacAlgorithm::Sha512,
        encoding: SignatureEncoding::Base64,
        prefix: "sha512=".into(),
        timestamp_header: timestamp.then(|| "x-timestamp".to_string()),
    })
}

fn signed_providers() -> Vec<(WebhookProvider, &'static str, &'static str)> {
    vec![
        (
            WebhookProvider::Stripe,
            "whsec_stripe_new",
            "whsec_stripe_old",
        ),
        (WebhookProvider::Github, "gh-new", "gh-old"),
        (WebhookProvider::Shopify, "shp-new", "shp-old"),
        (WebhookProvider::Slack, "slack-new", "slack-old"),
        (
            WebhookProvider::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2VjcmV0LW9sZC1rZXktMTIzNDU2Nzg=",
        ),
        (hmac_spec(false), "hmac-new", "hmac-old"),
        (hmac_spec(true), "hmac-new", "hmac-old"),
    ]
}

#[test]
fn each_provider_accepts_its_own_signature_and_either_secret_of_a_rotation() {
    for (p, new, old) in signed_providers() {
        let v = verifier(p.clone(), &[new, old]);
        for secret in [new, old] {
            assert_eq!(
                v.verify(&signed(&p, secret, NOW, BODY), BODY, NOW),
                Ok(()),
                "{} with {secret}",
                p.name()
            );
        }
    }
}

#[test]
fn wrong_secret_tampered_body_missing_header_and_stale_timestamps_are_refused() {
    for (p, new, _) in signed_providers() {
        let v = verifier(p.clone(), &[new]);
        let name = p.name();
        assert_eq!(
            v.verify(&signed(&p, "not-the-secret", NOW, BODY), BODY, NOW),
            Err(Rejection::Mismatch),
            "{name}: wrong secret"
        );
        let tampered = br#"{"id":"evt_1","type":"payment_intent.failed"}"#;
        assert_eq!(
            v.verify(&signed(&p, new, NOW, BODY), tampered, NOW),
            Err(Rejection::Mismatch),
            "{name}: tampered body"
        );
        assert!(
            matches!(
                v.verify(&HeaderMap::new(), BODY, NOW),
                Err(Rejection::MissingHeader(_))
            ),
            "{name}: no headers"
        );
        let has_timestamp = matches!(
            &p,
            WebhookProvider::Stripe | WebhookProvider::Slack | WebhookProvider::Standard
        ) || matches!(&p, WebhookProvider::Hmac(s) if s.timestamp_header.is_some());
        if has_timestamp {
            assert_eq!(
                v.verify(&signed(&p, new, NOW - 301, BODY), BODY, NOW),
                Err(Rejection::Stale(301)),
                "{name}: stale"
            );
            assert_eq!(
                v.verify(&signed(&p, new, NOW - 299, BODY), BODY, NOW),
                Ok(()),
                "{name}: within the tolerance"
            );
        }
    }
}

#[test]
fn standard_webhooks_accepts_one_matching_signature_among_several() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let v = verifier(WebhookProvider::Standard, &[secret]);
    let good = sign::standard(secret, "msg_1", NOW, BODY);
    let mut h = signed(&WebhookProvider::Standard, secret, NOW, BODY);
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&format!("v1,Zm9vYmFy v2,abc {good}")).expect("value"),
    );
    assert_eq!(v.verify(&h, BODY, NOW), Ok(()));
}

#[test]
fn the_standard_webhooks_reference_vector_verifies() {
    // From the Standard Webhooks specification's example.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let v = verifier(WebhookProvider::Standard, &[secret]);
    let h = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
        ("webhook-timestamp", "1614265330".into()),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into(),
        ),
    ]);
    assert_eq!(v.verify(&h, body, 1_614_265_330), Ok(()));
}

#[test]
fn a_bearer_token_is_compared_exactly() {
    let v = Verifier::new(
        WebhookProvider::None {
            token: Some(Secret(b"s3cret".to_vec())),
        },
        Vec::new(),
        Duration::from_secs(300),
    );
    let with = |t: &str| headers(&[("authorization", t.to_string())]);
    assert_eq!(v.verify(&with("Bearer s3cret"), BODY, NOW), Ok(()));
    assert_eq!(
        v.verify(&with("Bearer s3cre"), BODY, NOW),
        Err(Rejection::Token)
    );
    assert_eq!(v.verify(&with("s3cret"), BODY, NOW), Err(Rejection::Token));
    assert_eq!(
        v.verify(&HeaderMap::new(), BODY, NOW),
        Err(Rejection::Token)
    );
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % max as u64) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Printable header text, often shaped like the real thing.
    fn header_text(&mut self) -> String {
        const SHAPES: &[&str] = &[
            "t=",
            ",v1=",
            "v0=",
            "sha256=",
            "v1,",
            " ",
            "=",
            ",",
            "1700000000",
            "zz",
            "+/==",
        ];
        let mut s = String::new();
        for _ in 0..(self.next() % 8) {
            if self.next().is_multiple_of(2) {
                s.push_str(SHAPES[(self.next() % SHAPES.len() as u64) as usize]);
            } else {
                s.push(char::from(b'!' + (self.next() % 94) as u8));
            }
        }
        s
    }
}

#[test]
fn random_bodies_and_headers_never_panic_and_are_never_accepted() {
    let names = [
        "stripe-signature",
        "x-hub-signature-256",
        "x-shopify-hmac-sha256",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-signature",
        "x-timestamp",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let providers = signed_providers();
    for round in 0..20_000 {
        let mut h = HeaderMap::new();
        for name in names {
            if !rng.next().is_multiple_of(3)
                && let Ok(v) = HeaderValue::from_str(&rng.header_text())
            {
                h.insert(name, v);
            }
        }
        let body = rng.bytes(256);
        let (p, secret, _) = &providers[round % providers.len()];
        let v = verifier(p.clone(), &[secret]);
        assert!(
            v.verify(&h, &body, NOW).is_err(),
            "round {round}: a random request passed {}",
            p.name()
        );
        let _ = super::super::identity::parse_body(&body, h.get("content-type"));
    }
}

/// `None` for text that is not a signature, `Some(None)` for one longer than any MAC,
/// `Some(Some(bytes))` otherwise.
fn sig_as_vec(sig: Option<Sig>) -> Option<Option<Vec<u8>>> {
    sig.map(|s| s.bytes().map(<[u8]>::to_vec))
}

#[test]
fn signatures_decode_into_fixed_buffers_exactly_as_the_crates_decode_them() {
    let mut rng = Rng(0x0dec_0de5_1234_5678);
    let mut texts: Vec<String> = vec![
        String::new(),
        "0".into(),
        "00".into(),
        "aB".into(),
        "zz".into(),
        "ab cd".into(),
        "AA==".into(),
        "AA=".into(),
        "+/==".into(),
        "-_==".into(),
    ];
    for len in [20, 32, 63, 64, 65, 96, 200] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        texts.push(hex::encode(&bytes));
        texts.push(hex::encode_upper(&bytes));
        texts.push(BASE64.encode(&bytes));
    }
    for _ in 0..5_000 {
        texts.push(rng.header_text());
        let n = (rng.next() % 140) as usize;
        texts.push(
            (0..n)
                .map(|_| char::from(b"0123456789abcdefABCDEFg"[(rng.next() % 23) as usize]))
                .collect(),
        );
    }
    for text in &texts {
        let want = |decoded: Option<Vec<u8>>| decoded.map(|d| (d.len() <= MAX_MAC).then_some(d));
        let hex_want = want(hex::decode(text).ok());
        assert_eq!(sig_as_vec(Sig::hex(text)), hex_want, "hex {text:?}");
        let b64_want = want(BASE64.decode(text).ok());
        assert_eq!(sig_as_vec(Sig::base64(text)), b64_want, "base64 {text:?}");
    }
}

#[test]
fn a_signature_longer_than_any_mac_is_a_mismatch_not_a_malformed_header() {
    let v = verifier(WebhookProvider::Github, &["s"]);
    let long = format!("sha256={}", "ab".repeat(MAX_MAC + 1));
    assert_eq!(
        v.verify(&headers(&[("x-hub-signature-256", long)]), BODY, NOW),
        Err(Rejection::Mismatch)
    );
}
