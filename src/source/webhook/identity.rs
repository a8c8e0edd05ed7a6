//! What a verified webhook is: its body parsed, and the id, type and subject its provider gives
//! it (headers or body fields), so the router and consumers get the same names the provider's
//! documentation uses.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::config::WebhookProvider;

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

/// Media type without parameters, lowercase.
fn media_type(content_type: Option<&HeaderValue>) -> Option<String> {
    let ct = content_type?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// True when the content type is form-encoded.
pub fn is_form(content_type: Option<&HeaderValue>) -> bool {
    media_type(content_type).as_deref() == Some("application/x-www-form-urlencoded")
}

/// Parses `body` by its content type. Form bodies are parsed for any caller; whether a source
/// takes them is [`accepts`]'s question.
pub fn parse_body(body: &[u8], content_type: Option<&HeaderValue>) -> Result<Body, BodyError> {
    match media_type(content_type).as_deref() {
        None | Some("") | Some("application/json") => json(body),
        Some(t) if t.ends_with("+json") => json(body),
        Some("application/x-www-form-urlencoded") => {
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
        Some(other) => Err(BodyError::Unsupported(other.to_string())),
    }
}

fn json(body: &[u8]) -> Result<Body, BodyError> {
    JsonDoc::parse(body)
        .map(Body::Json)
        .map_err(|e| BodyError::InvalidJson(format!("the body must be JSON: {e}")))
}

/// A JSON body checked to be well-formed, kept as text: the few fields a provider names are
/// read from it by pointer, without building a tree of the whole document (which cost more
/// than the signature check and the Avro encoding together on 1 KiB bodies).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDoc(Box<[u8]>);

impl JsonDoc {
    /// Checks `body` is one JSON value (trailing whitespace only) and keeps it.
    pub fn parse(body: &[u8]) -> Result<JsonDoc, serde_json::Error> {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
        Ok(JsonDoc(body.into()))
    }

    /// A document from a value (tests, dry runs).
    pub fn from_value(v: &Value) -> JsonDoc {
        JsonDoc(v.to_string().into_bytes().into())
    }

    /// The value at JSON Pointer `p` (RFC 6901, as `serde_json::Value::pointer`), read in one
    /// pass that skips everything off the path.
    pub fn pointer(&self, p: &str) -> Option<Value> {
        let tokens: Vec<String> = if p.is_empty() {
            Vec::new()
        } else {
            p.strip_prefix('/')?
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect()
        };
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        serde::de::DeserializeSeed::deserialize(At(&tokens), &mut de)
            .ok()
            .flatten()
    }
}

/// Reads the value at a pointer's remaining tokens, skipping the rest.
struct At<'p>(&'p [String]);

impl<'de> serde::de::DeserializeSeed<'de> for At<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        if self.0.is_empty() {
            return serde::Deserialize::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for At<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (first, rest) = (&self.0[0], &self.0[1..]);
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == first.as_str() {
                // The last of duplicate keys wins, as in a parsed tree.
                found = map.next_value_seed(At(rest))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (first, rest) = (&self.0[0], &self.0[1..]);
        // RFC 6901 array indexes: digits, no leading zero.
        let index = (first == "0" || !first.starts_with('0'))
            .then(|| first.parse::<usize>().ok())
            .flatten();
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(At(rest))? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// True when `provider` takes form-encoded bodies (Slack slash commands and interactivity;
/// GitHub's form content type).
pub fn accepts_form(provider: &WebhookProvider) -> bool {
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

    fn pointer(&self, p: &str) -> Option<String> {
        text(self.at(p).as_ref())
    }
}

/// Slack's `url_verification` handshake: the challenge to echo back.
pub fn slack_challenge(body: &Body) -> Option<String> {
    (body.at("/type")?.as_str()? == "url_verification")
        .then(|| body.at("/challenge")?.as_str().map(str::to_string))
        .flatten()
}

/// The event's identity per `provider`; `id_pointer` / `type_pointer` override the body fields.
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
    let mut out = match provider {
        WebhookProvider::Stripe => Identity {
            id: body.pointer("/id"),
            event_type: body.pointer("/type"),
            subject: body.pointer("/data/object/id"),
        },
        WebhookProvider::Github => Identity {
            id: header("x-github-delivery"),
            event_type: header("x-github-event").map(|e| match body.pointer("/action") {
                Some(action) => format!("{e}.{action}"),
                None => e,
            }),
            subject: body.pointer("/repository/full_name"),
        },
        WebhookProvider::Shopify => Identity {
            id: header("x-shopify-webhook-id"),
            event_type: header("x-shopify-topic"),
            subject: header("x-shopify-shop-domain"),
        },
        WebhookProvider::Slack => match body {
            Body::Json(_) => Identity {
                id: body.pointer("/event_id"),
                event_type: body
                    .pointer("/event/type")
                    .or_else(|| body.pointer("/type")),
                subject: body.pointer("/team_id"),
            },
            Body::Form {
                payload: Some(_), ..
            } => Identity {
                id: body
                    .pointer("/trigger_id")
                    .or_else(|| body.pointer("/action_ts")),
                event_type: body.pointer("/type"),
                subject: body.pointer("/team/id"),
            },
            Body::Form { payload: None, .. } => Identity {
                id: body.field("trigger_id"),
                event_type: body.field("command").map(|_| "slash_command".to_string()),
                subject: body.field("team_id"),
            },
        },
        WebhookProvider::Standard => Identity {
            id: header("webhook-id"),
            event_type: body.pointer("/type"),
            subject: None,
        },
        WebhookProvider::Hmac(_) => Identity::default(),
        WebhookProvider::None { .. } => Identity {
            id: header("webhook-id"),
            event_type: header("ce-type").or_else(|| header("x-event-type")),
            subject: header("ce-subject"),
        },
    };
    if let Some(p) = id_pointer {
        out.id = body.pointer(p).or(out.id);
    }
    if let Some(p) = type_pointer {
        out.event_type = body.pointer(p).or(out.event_type);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
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
    fn pointers_read_from_the_text_agree_with_a_parsed_tree() {
        let docs = [
            r#"{"id":"evt_1","type":"a.b","data":{"object":{"id":"ch_9","n":[1,{"x":"y"}]}}}"#,
            r#"{"a/b":{"m~n":1},"é":"accent","\u00e9x":2,"k":null,"t":true,"f":-1.5e3}"#,
            r#"[0,[1,2,[3]],{"0":"zero"}]"#,
            r#"{"dup":1,"dup":{"v":2}}"#,
            r#""just a string""#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"s":"\"quoted\" \n"}"#,
        ];
        let pointers = [
            "",
            "/id",
            "/type",
            "/data/object/id",
            "/data/object/n/1/x",
            "/data/object/n/2",
            "/a~1b/m~0n",
            "/é",
            "/éx",
            "/k",
            "/t",
            "/f",
            "/0",
            "/1/2/0",
            "/2/0",
            "/01",
            "/-",
            "/dup/v",
            "/dup",
            "/big",
            "/neg",
            "/s",
            "/missing",
            "/id/x",
            "no-slash",
        ];
        for d in docs {
            let tree: Value = serde_json::from_str(d).expect("test document");
            let doc = JsonDoc::parse(d.as_bytes()).expect("valid");
            for p in pointers {
                assert_eq!(doc.pointer(p), tree.pointer(p).cloned(), "{d} at {p:?}");
            }
        }
        for bad in ["{", "{}x", "[1,]", "", "{\"a\":1,}"] {
            assert!(JsonDoc::parse(bad.as_bytes()).is_err(), "{bad}");
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
