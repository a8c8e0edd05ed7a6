//! What a verified webhook is: its body parsed, and the id, type and subject its provider gives
//! it (headers or body fields), so the router and consumers get the same names the provider's
//! documentation uses.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::config::WebhookProvider;
pub use crate::json::pointer::{Fields, JsonDoc};

/// A parsed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `application/json` (also `…+json`, or no content type).
    Json(JsonDoc),
    /// `application/x-www-form-urlencoded`; a `payload` field holding JSON (Slack interactivity,
    /// GitHub's form deliveries) is parsed too.
    Form {
        /// The fields.
        fields: Vec<(String, String)>,
        /// The `payload` field as JSON, if it is JSON.
        payload: Option<Value>,
    },
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not a content type the source takes (415).
    Unsupported(String),
    /// Not JSON (400).
    InvalidJson(String),
    /// Not a form (400).
    InvalidForm(String),
}

/// Media type without parameters, as sent (compare it ignoring ASCII case). A header value
/// `to_str` accepts is visible ASCII.
fn media_type(content_type: Option<&HeaderValue>) -> Option<&str> {
    let ct = content_type?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or("").trim())
}

const FORM: &str = "application/x-www-form-urlencoded";

/// True when the content type is form-encoded.
pub(crate) fn is_form(content_type: Option<&HeaderValue>) -> bool {
    media_type(content_type).is_some_and(|t| t.eq_ignore_ascii_case(FORM))
}

/// True for JSON media types: `application/json` and `…+json`, or none given.
fn is_json(t: Option<&str>) -> bool {
    match t {
        None | Some("") => true,
        Some(t) => {
            t.eq_ignore_ascii_case("application/json")
                || t.len() >= 5 && t.as_bytes()[t.len() - 5..].eq_ignore_ascii_case(b"+json")
        }
    }
}

/// Parses `body` by its content type. Form bodies are parsed for any caller; whether a source
/// takes them is [`accepts`]'s question.
pub fn parse_body(body: &[u8], content_type: Option<&HeaderValue>) -> Result<Body, BodyError> {
    parse_body_reading(body, content_type, &Arc::new(Fields::new(Vec::new())))
}

/// [`parse_body`], reading `fields` from a JSON body in the same pass that checks it (what a
/// source does: the body is read once).
pub fn parse_body_reading(
    body: &[u8],
    content_type: Option<&HeaderValue>,
    fields: &Arc<Fields>,
) -> Result<Body, BodyError> {
    match media_type(content_type) {
        t if is_json(t) => json(body, fields),
        Some(t) if t.eq_ignore_ascii_case(FORM) => {
            if std::str::from_utf8(body).is_err() {
                return Err(BodyError::InvalidForm("the form body is not UTF-8".into()));
            }
            let fields: Vec<(String, String)> = form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let payload = fields
                .iter()
                .find(|(k, _)| k == "payload")
                .and_then(|(_, v)| serde_json::from_str(v).ok());
            Ok(Body::Form { fields, payload })
        }
        Some(other) => Err(BodyError::Unsupported(other.to_ascii_lowercase())),
        None => json(body, fields),
    }
}

fn json(body: &[u8], fields: &Arc<Fields>) -> Result<Body, BodyError> {
    JsonDoc::parse_reading(body, fields)
        .map(Body::Json)
        .map_err(|e| BodyError::InvalidJson(format!("the body must be JSON: {e}")))
}

/// The fields of a source's identity, for a JSON body.
impl Fields {
    /// The fields [`identify`] reads from a JSON body for this provider and overrides.
    pub fn for_json(
        provider: &WebhookProvider,
        id_pointer: Option<&str>,
        type_pointer: Option<&str>,
    ) -> Arc<Fields> {
        let empty = Body::Json(JsonDoc::from_value(&Value::Null));
        let pointers = wanted(provider, id_pointer, type_pointer, &empty)
            .into_iter()
            .map(str::to_string)
            .collect();
        Arc::new(Fields::new(pointers))
    }
}

/// True when `provider` takes form-encoded bodies (Slack slash commands and interactivity;
/// GitHub's form content type).
pub(crate) fn accepts_form(provider: &WebhookProvider) -> bool {
    matches!(provider, WebhookProvider::Slack | WebhookProvider::Github)
}

/// The id, type and subject of an event, where its provider gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The provider's event or delivery id.
    pub id: Option<String>,
    /// The provider's event type.
    pub event_type: Option<String>,
    /// What the event is about (CloudEvents `subject`).
    pub subject: Option<String>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Body {
    /// A JSON body of `v` (tests, dry runs).
    pub fn json(v: &Value) -> Body {
        Body::Json(JsonDoc::from_value(v))
    }

    /// The value at JSON Pointer `p` of the JSON document: the body, or a form's `payload`.
    pub fn at(&self, p: &str) -> Option<Value> {
        match self {
            Body::Json(doc) => doc.pointer(p),
            Body::Form { payload, .. } => payload.as_ref()?.pointer(p).cloned(),
        }
    }

    fn field(&self, name: &str) -> Option<String> {
        match self {
            Body::Form { fields, .. } => fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty()),
            Body::Json(_) => None,
        }
    }

    /// The values at pointers `ps` as text (strings and numbers), read in one pass.
    fn texts(&self, ps: &[&str]) -> Vec<Option<String>> {
        match self {
            // Read while the body was checked (a source's fields), else read now.
            Body::Json(doc) if !ps.is_empty() => match doc.read_for(ps) {
                Some(values) => values.iter().map(|v| text(v.as_ref())).collect(),
                None => doc.pointers(ps).iter().map(|v| text(v.as_ref())).collect(),
            },
            _ => ps.iter().map(|p| text(self.at(p).as_ref())).collect(),
        }
    }
}

/// Slack's `url_verification` handshake: the challenge to echo back.
pub fn slack_challenge(body: &Body) -> Option<String> {
    (body.at("/type")?.as_str()? == "url_verification")
        .then(|| body.at("/challenge")?.as_str().map(str::to_string))
        .flatten()
}

/// The body fields [`identify`] reads, in its order: the provider's, then the overrides.
fn wanted<'a>(
    provider: &WebhookProvider,
    id_pointer: Option<&'a str>,
    type_pointer: Option<&'a str>,
    body: &Body,
) -> Vec<&'a str> {
    let fields: &[&'static str] = match (provider, body) {
        (WebhookProvider::Stripe, _) => &["/id", "/type", "/data/object/id"],
        (WebhookProvider::Github, _) => &["/action", "/repository/full_name"],
        (WebhookProvider::Slack, Body::Json(_)) => {
            &["/event_id", "/event/type", "/type", "/team_id"]
        }
        (
            WebhookProvider::Slack,
            Body::Form {
                payload: Some(_), ..
            },
        ) => &["/trigger_id", "/action_ts", "/type", "/team/id"],
        (WebhookProvider::Standard, _) => &["/type"],
        _ => &[],
    };
    let mut wanted: Vec<&'a str> = fields.to_vec();
    wanted.extend(id_pointer);
    wanted.extend(type_pointer);
    wanted
}

/// The event's identity per `provider`; `id_pointer` / `type_pointer` override the body fields.
/// Every body field it needs is read in one pass.
pub fn identify(
    provider: &WebhookProvider,
    id_pointer: Option<&str>,
    type_pointer: Option<&str>,
    headers: &HeaderMap,
    body: &Body,
) -> Identity {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let wanted = wanted(provider, id_pointer, type_pointer, body);
    let mut values = body.texts(&wanted).into_iter();
    let mut next = || values.next().flatten();
    let mut out = match provider {
        WebhookProvider::Stripe => Identity {
            id: next(),
            event_type: next(),
            subject: next(),
        },
        WebhookProvider::Github => {
            let action = next();
            Identity {
                id: header("x-github-delivery"),
                event_type: header("x-github-event").map(|e| match action {
                    Some(action) => format!("{e}.{action}"),
                    None => e,
                }),
                subject: next(),
            }
        }
        WebhookProvider::Shopify => Identity {
            id: header("x-shopify-webhook-id"),
            event_type: header("x-shopify-topic"),
            subject: header("x-shopify-shop-domain"),
        },
        WebhookProvider::Slack => match body {
            Body::Json(_)
            | Body::Form {
                payload: Some(_), ..
            } => {
                let (first, second, third, subject) = (next(), next(), next(), next());
                match body {
                    // Events API: `event_id`; `event.type`, else the envelope's `type`.
                    Body::Json(_) => Identity {
                        id: first,
                        event_type: second.or(third),
                        subject,
                    },
                    // Interactivity: `trigger_id`, else `action_ts`; `type`.
                    _ => Identity {
                        id: first.or(second),
                        event_type: third,
                        subject,
                    },
                }
            }
            Body::Form { payload: None, .. } => Identity {
                id: body.field("trigger_id"),
                event_type: body.field("command").map(|_| "slash_command".to_string()),
                subject: body.field("team_id"),
            },
        },
        WebhookProvider::Standard => Identity {
            id: header("webhook-id"),
            event_type: next(),
            subject: None,
        },
        WebhookProvider::Hmac(_) => Identity::default(),
        WebhookProvider::None { .. } => Identity {
            id: header("webhook-id"),
            event_type: header("ce-type").or_else(|| header("x-event-type")),
            subject: header("ce-subject"),
        },
    };
    if id_pointer.is_some() {
        out.id = next().or(out.id);
    }
    if type_pointer.is_some() {
        out.event_type = next().or(out.event_type);
    }
    out
}

/// The key, beside the delivery id, under which a request of `provider` is deduplicated when
/// that id (and the event type) come from headers the signature does not cover (GitHub,
/// Shopify): a SHA-256 of the verified body, `sha256:<hex>`, so a captured delivery re-sent
/// with a fresh id or another event type is a duplicate. Shopify sends one resource's body
/// under several topics at once (an order paid at checkout: `orders/create` and `orders/paid`
/// with the same bytes), so its digest also covers the topic (`sha256:<topic>:<hex>`): a
/// capture can still be re-sent once under each other topic. `None` for providers that sign
/// their ids (Stripe, Slack, Standard Webhooks: the id is in the signed body or signed
/// content; `hmac`: the id is read from the body, or is the body's digest already) and for
/// `none`, which signs nothing.
pub(crate) fn replay_digest(
    provider: &WebhookProvider,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<String> {
    use sha2::{Digest, Sha256};
    match provider {
        WebhookProvider::Github => Some(format!("sha256:{}", hex::encode(Sha256::digest(body)))),
        WebhookProvider::Shopify => {
            let topic = headers
                .get("x-shopify-topic")
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            let mut h = Sha256::new();
            h.update(topic);
            h.update([0]);
            h.update(body);
            // The topic is bounded by the request's header size; shown for diagnosis.
            Some(format!(
                "sha256:{}:{}",
                String::from_utf8_lossy(topic),
                hex::encode(h.finalize())
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_digests_cover_the_body_and_for_shopify_the_topic() {
        let gh = |delivery: &'static str, event: &'static str| {
            h(&[("x-github-delivery", delivery), ("x-github-event", event)])
        };
        let a = replay_digest(&WebhookProvider::Github, &gh("d-1", "push"), b"{\"a\":1}");
        // A fresh delivery id and another event type: the same digest.
        assert_eq!(
            a,
            replay_digest(&WebhookProvider::Github, &gh("d-2", "issues"), b"{\"a\":1}")
        );
        assert_ne!(
            a,
            replay_digest(&WebhookProvider::Github, &gh("d-1", "push"), b"{\"a\":2}")
        );
        // The digest of a GitHub body is its content id (one key when the delivery has no id).
        assert_eq!(
            a.as_deref(),
            Some(crate::event::EventId::from_content(b"{\"a\":1}").as_str())
        );
        let shop = |topic: &'static str| h(&[("x-shopify-topic", topic)]);
        let create = replay_digest(&WebhookProvider::Shopify, &shop("orders/create"), b"{}");
        let paid = replay_digest(&WebhookProvider::Shopify, &shop("orders/paid"), b"{}");
        assert!(create.is_some() && paid.is_some());
        assert_ne!(create, paid);
        assert_eq!(
            create,
            replay_digest(&WebhookProvider::Shopify, &shop("orders/create"), b"{}")
        );
        for signed in [
            WebhookProvider::Stripe,
            WebhookProvider::Slack,
            WebhookProvider::Standard,
            WebhookProvider::None { token: None },
        ] {
            assert_eq!(replay_digest(&signed, &HeaderMap::new(), b"{}"), None);
        }
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn media_types_are_told_apart_ignoring_case_and_parameters() {
        let fields = Arc::new(Fields::new(Vec::new()));
        for ct in [
            None,
            Some(""),
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/cloudevents+json"),
            Some("application/vnd.x+JSON"),
        ] {
            let v = ct.map(|c| HeaderValue::from_str(c).expect("header"));
            assert!(!is_form(v.as_ref()), "{ct:?}");
            let parsed = parse_body_reading(b"{}", v.as_ref(), &fields);
            assert!(matches!(parsed, Ok(Body::Json(_))), "{ct:?}: {parsed:?}");
        }
        let form = HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=utf-8");
        assert!(is_form(Some(&form)));
        let parsed = parse_body_reading(b"a=1", Some(&form), &fields);
        assert!(matches!(parsed, Ok(Body::Form { .. })), "{parsed:?}");
        let xml = HeaderValue::from_static("Text/XML");
        assert_eq!(
            parse_body_reading(b"<a/>", Some(&xml), &fields),
            Err(BodyError::Unsupported("text/xml".into()))
        );
    }

    #[test]
    fn providers_name_ids_types_and_subjects_as_documented() {
        let stripe = Body::json(&serde_json::json!({
            "id": "evt_1", "type": "charge.refunded", "data": {"object": {"id": "ch_9"}}
        }));
        assert_eq!(
            identify(
                &WebhookProvider::Stripe,
                None,
                None,
                &HeaderMap::new(),
                &stripe
            ),
            Identity {
                id: Some("evt_1".into()),
                event_type: Some("charge.refunded".into()),
                subject: Some("ch_9".into())
            }
        );
        let gh = Body::json(
            &serde_json::json!({"action": "opened", "repository": {"full_name": "o/r"}}),
        );
        let headers = h(&[
            ("x-github-delivery", "d-1"),
            ("x-github-event", "pull_request"),
        ]);
        let id = identify(&WebhookProvider::Github, None, None, &headers, &gh);
        assert_eq!(id.event_type.as_deref(), Some("pull_request.opened"));
        assert_eq!(id.id.as_deref(), Some("d-1"));
        assert_eq!(id.subject.as_deref(), Some("o/r"));
        let slack = parse_body(
            b"command=%2Fdeploy&text=prod&trigger_id=13345.7&team_id=T1",
            Some(&HeaderValue::from_static(
                "application/x-www-form-urlencoded",
            )),
        )
        .expect("form");
        let id = identify(
            &WebhookProvider::Slack,
            None,
            None,
            &HeaderMap::new(),
            &slack,
        );
        assert_eq!(id.id.as_deref(), Some("13345.7"));
        assert_eq!(id.event_type.as_deref(), Some("slash_command"));
        let hmac = Body::json(&serde_json::json!({"meta": {"uid": 42, "kind": "order.paid"}}));
        let spec = WebhookProvider::None { token: None };
        let id = identify(
            &spec,
            Some("/meta/uid"),
            Some("/meta/kind"),
            &HeaderMap::new(),
            &hmac,
        );
        assert_eq!(
            (id.id.as_deref(), id.event_type.as_deref()),
            (Some("42"), Some("order.paid"))
        );
    }

    #[test]
    fn identities_read_while_the_body_is_checked_match_a_second_pass() {
        let body = br#"{"id":"evt_1","type":"t.x","event_id":"Ev9","event":{"type":"message"},
            "team_id":"T1","action":"opened","repository":{"full_name":"o/r"},
            "data":{"object":{"id":"ch_9"}},"meta":{"uid":7,"kind":"k"}}"#;
        let headers = h(&[
            ("x-github-delivery", "d-1"),
            ("x-github-event", "pull_request"),
            ("webhook-id", "msg_1"),
        ]);
        let json = HeaderValue::from_static("application/json");
        let providers = [
            WebhookProvider::Stripe,
            WebhookProvider::Github,
            WebhookProvider::Slack,
            WebhookProvider::Standard,
            WebhookProvider::None { token: None },
        ];
        for provider in &providers {
            for (idp, typ) in [(None, None), (Some("/meta/uid"), Some("/meta/kind"))] {
                let fields = Fields::for_json(provider, idp, typ);
                let once = parse_body_reading(body, Some(&json), &fields).expect("json");
                let twice = parse_body(body, Some(&json)).expect("json");
                let want = wanted(provider, idp, typ, &once);
                assert!(matches!(&once, Body::Json(d) if d.read_for(&want).is_some()));
                let a = identify(provider, idp, typ, &headers, &once);
                assert_eq!(a, identify(provider, idp, typ, &headers, &twice));
                assert!(a.id.is_some(), "{a:?}");
            }
        }
    }

    #[test]
    fn content_types_are_parsed_or_refused() {
        let json = Some(HeaderValue::from_static("application/json; charset=utf-8"));
        assert!(matches!(
            parse_body(b"{}", json.as_ref()),
            Ok(Body::Json(_))
        ));
        assert!(matches!(
            parse_body(b"{", json.as_ref()),
            Err(BodyError::InvalidJson(_))
        ));
        let xml = HeaderValue::from_static("application/xml");
        assert_eq!(
            parse_body(b"<a/>", Some(&xml)),
            Err(BodyError::Unsupported("application/xml".into()))
        );
        let cloudevent = HeaderValue::from_static("application/cloudevents+json");
        assert!(parse_body(b"[]", Some(&cloudevent)).is_ok());
        let challenge =
            Body::json(&serde_json::json!({"type": "url_verification", "challenge": "abc"}));
        assert_eq!(slack_challenge(&challenge).as_deref(), Some("abc"));
    }
}
