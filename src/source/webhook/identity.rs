//! What a verified webhook is: its body parsed, and the id, type and subject its provider gives
//! it (headers or body fields), so the router and consumers get the same names the provider's
//! documentation uses.

use std::sync::Arc;

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
    parse(body, content_type, None)
}

/// [`parse_body`], reading `fields` from a JSON body in the same pass that checks it (what a
/// source does: the body is read once).
pub fn parse_body_reading(
    body: &[u8],
    content_type: Option<&HeaderValue>,
    fields: &Arc<Fields>,
) -> Result<Body, BodyError> {
    parse(body, content_type, Some(fields))
}

fn parse(
    body: &[u8],
    content_type: Option<&HeaderValue>,
    fields: Option<&Arc<Fields>>,
) -> Result<Body, BodyError> {
    match media_type(content_type).as_deref() {
        None | Some("") | Some("application/json") => json(body, fields),
        Some(t) if t.ends_with("+json") => json(body, fields),
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

fn json(body: &[u8], fields: Option<&Arc<Fields>>) -> Result<Body, BodyError> {
    match fields {
        Some(f) => JsonDoc::parse_reading(body, f),
        None => JsonDoc::parse(body),
    }
    .map(Body::Json)
    .map_err(|e| BodyError::InvalidJson(format!("the body must be JSON: {e}")))
}

/// The body fields a source reads an event's identity from (its provider's, then its
/// `id_pointer` and `type_pointer`), with the pointers split into tokens once, when the source
/// is built.
#[derive(Debug, PartialEq)]
pub struct Fields {
    pointers: Vec<String>,
    tokens: Vec<Option<Vec<String>>>,
}

impl Fields {
    /// The fields [`identify`] reads from a JSON body for this provider and overrides.
    pub fn for_json(
        provider: &WebhookProvider,
        id_pointer: Option<&str>,
        type_pointer: Option<&str>,
    ) -> Arc<Fields> {
        let empty = Body::Json(JsonDoc {
            text: Box::default(),
            read: None,
        });
        let pointers: Vec<String> = wanted(provider, id_pointer, type_pointer, &empty)
            .into_iter()
            .map(str::to_string)
            .collect();
        let tokens = pointers.iter().map(|p| tokens(p)).collect();
        Arc::new(Fields { pointers, tokens })
    }

    fn is(&self, ps: &[&str]) -> bool {
        self.pointers
            .iter()
            .map(String::as_str)
            .eq(ps.iter().copied())
    }
}

/// The wants of `tokens` (pointers that are not pointers want nothing).
fn wants(tokens: &[Option<Vec<String>>]) -> Vec<Want<'_>> {
    tokens
        .iter()
        .enumerate()
        .filter_map(|(slot, t)| t.as_deref().map(|tokens| Want { tokens, slot }))
        .collect()
}

/// A JSON body checked to be well-formed, kept as text: the few fields a provider names are
/// read from it by pointer, without building a tree of the whole document (which cost more
/// than the signature check and the Avro encoding together on 1 KiB bodies).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDoc {
    text: Box<[u8]>,
    /// The source's identity fields, read while the text was checked.
    read: Option<(Arc<Fields>, Values)>,
}

/// Values read at a [`Fields`]' pointers, in order (`None`: no value there).
type Values = Box<[Option<Value>]>;

impl JsonDoc {
    /// Checks `body` is one JSON value (trailing whitespace only) and keeps it.
    pub fn parse(body: &[u8]) -> Result<JsonDoc, serde_json::Error> {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
        Ok(JsonDoc {
            text: body.into(),
            read: None,
        })
    }

    /// [`JsonDoc::parse`], reading the values at `fields` in the same pass: a source's body is
    /// checked and its identity read in one scan of the text.
    pub fn parse_reading(body: &[u8], fields: &Arc<Fields>) -> Result<JsonDoc, serde_json::Error> {
        let mut out = vec![None; fields.pointers.len()];
        let mut de = serde_json::Deserializer::from_slice(body);
        serde::de::DeserializeSeed::deserialize(
            At {
                wants: wants(&fields.tokens),
                out: &mut out,
            },
            &mut de,
        )?;
        de.end()?;
        Ok(JsonDoc {
            text: body.into(),
            read: Some((Arc::clone(fields), out.into())),
        })
    }

    /// A document from a value (tests, dry runs).
    pub fn from_value(v: &Value) -> JsonDoc {
        JsonDoc {
            text: v.to_string().into_bytes().into(),
            read: None,
        }
    }

    /// The value at JSON Pointer `p` (RFC 6901, as `serde_json::Value::pointer`), read in one
    /// pass that skips everything off the path.
    pub fn pointer(&self, p: &str) -> Option<Value> {
        self.pointers(&[p]).pop().flatten()
    }

    /// The values at several JSON Pointers, read together in one pass over the text: the
    /// provider's id, type and subject cost one scan of the body, not one each.
    pub fn pointers(&self, ps: &[&str]) -> Vec<Option<Value>> {
        if ps.len() > 64 {
            // A pass follows at most 64 pointers (a bit each).
            return ps.chunks(64).flat_map(|c| self.pointers(c)).collect();
        }
        if let Some((fields, values)) = &self.read
            && fields.is(ps)
        {
            return values.to_vec();
        }
        let tokens: Vec<Option<Vec<String>>> = ps.iter().map(|p| tokens(p)).collect();
        let mut out = vec![None; ps.len()];
        let mut de = serde_json::Deserializer::from_slice(&self.text);
        let _ = serde::de::DeserializeSeed::deserialize(
            At {
                wants: wants(&tokens),
                out: &mut out,
            },
            &mut de,
        );
        out
    }
}

/// A JSON Pointer's reference tokens, unescaped; `None` when it is not a pointer.
fn tokens(p: &str) -> Option<Vec<String>> {
    if p.is_empty() {
        return Some(Vec::new());
    }
    Some(
        p.strip_prefix('/')?
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// An RFC 6901 array index: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
        return None;
    }
    token.parse().ok()
}

/// The value at `tokens` below `v` (a tree already built for a shorter pointer).
fn value_at<'v>(v: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens.iter().try_fold(v, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => a.get(index(t)?),
        _ => None,
    })
}

/// Reads an object key and answers which of the wants (a bit each, in order; the first 64)
/// go on through it.
struct Key<'a, 'p>(&'a [Want<'p>]);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_, '_> {
    type Value = u64;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<u64, E> {
        Ok(self
            .0
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, w)| w.tokens.first().is_some_and(|t| t == key))
            .fold(0, |m, (i, _)| m | 1 << i))
    }
}

/// One pointer still looked for: its remaining tokens, and where its value goes.
#[derive(Clone, Copy)]
struct Want<'p> {
    tokens: &'p [String],
    slot: usize,
}

/// Reads the values at several pointers' remaining tokens, skipping everything else.
struct At<'p, 'o> {
    wants: Vec<Want<'p>>,
    out: &'o mut [Option<Value>],
}

impl<'p> At<'p, '_> {
    /// The wants going on through `key`, with that token taken off; their earlier values are
    /// forgotten (the last of duplicate keys wins, as in a parsed tree).
    fn through(&mut self, matches: impl Fn(usize, &str) -> bool) -> Vec<Want<'p>> {
        let mut next = Vec::new();
        for (i, w) in self.wants.iter().enumerate() {
            if let Some((first, rest)) = w.tokens.split_first()
                && matches(i, first)
            {
                self.out[w.slot] = None;
                next.push(Want {
                    tokens: rest,
                    slot: w.slot,
                });
            }
        }
        next
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.wants.iter().any(|w| w.tokens.is_empty()) {
            // A pointer ends here: build this value once, and read longer pointers from it.
            let v: Value = serde::Deserialize::deserialize(d)?;
            for w in &self.wants {
                self.out[w.slot] = value_at(&v, w.tokens).cloned();
            }
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for At<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Keys are compared where they lie (no String per key); a bit per want that matches.
        while let Some(matched) = map.next_key_seed(Key(&self.wants))? {
            let wants = self.through(|i, _| i < 64 && matched & (1 << i) != 0);
            if wants.is_empty() {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                map.next_value_seed(At {
                    wants,
                    out: &mut *self.out,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let wants = self.through(|_, t| index(t) == Some(i));
            let more = if wants.is_empty() {
                seq.next_element::<serde::de::IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(At {
                    wants,
                    out: &mut *self.out,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
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

    /// The values at pointers `ps` as text (strings and numbers), read in one pass.
    fn texts(&self, ps: &[&str]) -> Vec<Option<String>> {
        match self {
            Body::Json(JsonDoc {
                read: Some((fields, values)),
                ..
            }) if fields.is(ps) => values.iter().map(|v| text(v.as_ref())).collect(),
            Body::Json(doc) if !ps.is_empty() => {
                doc.pointers(ps).iter().map(|v| text(v.as_ref())).collect()
            }
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
            // All at once (shared prefixes, a pointer inside another's value, repeats).
            let together = doc.pointers(&pointers);
            for (p, v) in pointers.iter().zip(&together) {
                assert_eq!(v.as_ref(), tree.pointer(p), "{d} at {p:?}, read together");
            }
            let reversed: Vec<&str> = pointers.iter().rev().copied().collect();
            let back = doc.pointers(&reversed);
            for (p, v) in reversed.iter().zip(&back) {
                assert_eq!(
                    v.as_ref(),
                    tree.pointer(p),
                    "{d} at {p:?}, read in reverse order"
                );
            }
        }
        let fields = Arc::new(Fields {
            pointers: pointers.iter().map(|p| p.to_string()).collect(),
            tokens: pointers.iter().map(|p| tokens(p)).collect(),
        });
        for d in docs {
            // Checked and read in one pass: the same values.
            let tree: Value = serde_json::from_str(d).expect("test document");
            let doc = JsonDoc::parse_reading(d.as_bytes(), &fields).expect("valid");
            for (p, v) in pointers.iter().zip(doc.pointers(&pointers)) {
                assert_eq!(
                    v.as_ref(),
                    tree.pointer(p),
                    "{d} at {p:?}, read while checked"
                );
            }
        }
        for bad in [
            "{",
            "{}x",
            "[1,]",
            "",
            "{\"a\":1,}",
            "{\"id\":\"x\",}",
            "{\"data\":{\"object\":{\"id\":1 2}}}",
            "{\"id\":\"\\q\"}",
            "[0,[1,2,[3]]] 4",
        ] {
            assert!(JsonDoc::parse(bad.as_bytes()).is_err(), "{bad}");
            assert!(
                JsonDoc::parse_reading(bad.as_bytes(), &fields).is_err(),
                "{bad}, read while checked"
            );
        }
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
                assert!(matches!(&once, Body::Json(d) if d.read.is_some()));
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
