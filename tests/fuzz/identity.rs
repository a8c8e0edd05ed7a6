//! What a verified webhook is (`source::webhook::identity`): the body parsed by its content
//! type (JSON, a form, a form whose `payload` is JSON) and the id, type and subject read from
//! headers and body fields. Any content type, body and headers are answered without a panic;
//! an identity field is never empty, and an `id_pointer` reads what serde_json reads there.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;
use switchyard::config::{HmacAlgorithm, HmacSpec, SignatureEncoding, WebhookProvider};
use switchyard::source::webhook::identity::{
    Body, BodyError, Fields, identify, parse_body, parse_body_reading, slack_challenge,
};

use crate::json::json_text;
use crate::{cases, within_heap};

fn providers() -> Vec<WebhookProvider> {
    vec![
        WebhookProvider::None { token: None },
        WebhookProvider::Stripe,
        WebhookProvider::Github,
        WebhookProvider::Shopify,
        WebhookProvider::Slack,
        WebhookProvider::Standard,
        WebhookProvider::Hmac(HmacSpec {
            header: "x-signature".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: String::new(),
            timestamp_header: None,
        }),
    ]
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        proptest::sample::select(vec![
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json",
            "application/x-www-form-urlencoded",
            "APPLICATION/X-WWW-FORM-URLENCODED ; charset=x",
            "text/plain",
            "+json",
            "json",
            "",
            ";",
            " ; application/json",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[ -~]{0,24}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..24),
    ])
}

/// A form body: fields with percent escapes (valid, truncated, not UTF-8), `+`, and sometimes
/// a `payload` of JSON.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        "[a-z_]{1,10}=[a-zA-Z0-9+%._-]{0,12}",
        Just(
            "payload=%7B%22type%22%3A%22block_actions%22%2C%22trigger_id%22%3A%2212.34%22%7D"
                .to_string()
        ),
        Just("trigger_id=123.456".to_string()),
        Just("command=%2Fdeploy".to_string()),
        Just("team_id=T1".to_string()),
        Just("x=%ff%fe".to_string()),
        Just("x=%e".to_string()),
        Just("=&&=".to_string()),
    ];
    proptest::collection::vec(field, 0..6).prop_map(|f| f.join("&").into_bytes())
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let name = proptest::sample::select(vec![
        "webhook-id",
        "x-github-delivery",
        "x-github-event",
        "x-shopify-webhook-id",
        "x-shopify-topic",
        "x-shopify-shop-domain",
        "ce-type",
        "ce-subject",
        "x-event-type",
    ]);
    let value = prop_oneof![
        "[ -~]{0,16}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec((name, value), 0..6)
}

fn header_map(pairs: &[(&str, Vec<u8>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            h.insert(k, v);
        }
    }
    h
}

fn pointer() -> impl Strategy<Value = Option<&'static str>> {
    proptest::option::of(proptest::sample::select(vec![
        "/id",
        "/type",
        "/data/object/id",
        "/0",
        "/a~1b",
        "/é",
        "",
        "/x/1/id",
    ]))
}

/// Parses and identifies, with the answers checked for what every caller relies on.
fn identify_checked(
    provider: &WebhookProvider,
    id_pointer: Option<&str>,
    type_pointer: Option<&str>,
    ct: Option<&[u8]>,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(), TestCaseError> {
    let ct = ct.and_then(|c| HeaderValue::from_bytes(c).ok());
    let fields = Fields::for_json(provider, id_pointer, type_pointer);
    let shown = || format!("{ct:?} {:?}", String::from_utf8_lossy(body));
    let parsed = within_heap(64 * body.len() as u64 + (64 << 10), &shown, || {
        parse_body_reading(body, ct.as_ref(), &fields)
    });
    // Reading fields along the way can only refuse more (what serde_json refuses where it
    // reads: a lone surrogate, a number out of range), never take more.
    if parsed.is_ok() {
        prop_assert!(parse_body(body, ct.as_ref()).is_ok(), "{}", shown());
    }
    let body_parsed = match parsed {
        Ok(b) => b,
        Err(BodyError::Unsupported(t)) => {
            prop_assert!(!t.is_empty() || ct.is_some());
            return Ok(());
        }
        Err(BodyError::InvalidJson(m) | BodyError::InvalidForm(m)) => {
            prop_assert!(!m.is_empty());
            return Ok(());
        }
    };
    let id = identify(provider, id_pointer, type_pointer, headers, &body_parsed);
    for field in [&id.id, &id.event_type, &id.subject].into_iter().flatten() {
        prop_assert!(
            !field.is_empty(),
            "an empty identity field from {}",
            shown()
        );
    }
    let _ = slack_challenge(&body_parsed);
    // An id pointer into a JSON body reads what serde_json reads there (a string that is not
    // empty, or a number), else the provider's own id.
    if let (Some(p), Body::Json(_)) = (id_pointer, &body_parsed)
        && let Ok(tree) = serde_json::from_slice::<Value>(body)
    {
        match tree.pointer(p) {
            Some(Value::String(s)) if !s.is_empty() => {
                prop_assert_eq!(id.id.as_deref(), Some(s.as_str()))
            }
            Some(Value::Number(n)) => prop_assert_eq!(id.id, Some(n.to_string())),
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn any_body_and_headers_are_answered_and_identified(
        provider in proptest::sample::select(providers()),
        id_pointer in pointer(),
        type_pointer in pointer(),
        ct in content_type(),
        body in prop_oneof![
            json_text().prop_map(String::into_bytes),
            form_body(),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
        headers in headers(),
    ) {
        identify_checked(&provider, id_pointer, type_pointer, ct.as_deref(), &body, &header_map(&headers))?;
    }

    /// Form bodies under the form content type: parsed whenever UTF-8, refused otherwise.
    #[test]
    fn form_bodies_are_parsed_when_utf8(
        body in prop_oneof![form_body(), proptest::collection::vec(any::<u8>(), 0..64)],
    ) {
        let ct = HeaderValue::from_static("application/x-www-form-urlencoded");
        let parsed = parse_body_reading(&body, Some(&ct), &Arc::new(Fields::new(Vec::new())));
        match (std::str::from_utf8(&body), parsed) {
            (Ok(_), Ok(Body::Form { fields, .. })) => {
                prop_assert_eq!(fields.len(), form_urlencoded::parse(&body).count());
            }
            (Err(_), Err(BodyError::InvalidForm(_))) => {}
            (utf8, other) => prop_assert!(false, "{:?} gave {:?}", utf8.is_ok(), other),
        }
    }
}
