//! Route transforms: drop, mask and rename fields of what a route writes. They are applied to
//! a copy of the event for that route only (other routes and the DLQ keep the original), before
//! the Avro record is built, so the schema follows: a dropped column is not in it, a masked one
//! is a string, a renamed one has its new name.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value as Json;

use crate::config::{MaskKind, Transform};
use crate::event::{ChangeColumn, ChangePayload, WebhookPayload};

/// Text of a redacted value.
pub(crate) const REDACTED: &str = "[redacted]";

type HmacSha256 = Hmac<sha2::Sha256>;

thread_local! {
    /// The HMAC state after the last key used on this thread (the key's two blocks already
    /// hashed): masks clone it rather than key a new one per value.
    static KEYED: RefCell<Option<(Vec<u8>, HmacSha256)>> = const { RefCell::new(None) };
}

fn hash(key: &[u8], value: &[u8]) -> String {
    let keyed = KEYED.with(|cell| {
        let mut cached = cell.borrow_mut();
        if let Some((k, m)) = cached.as_ref()
            && k == key
        {
            return Some(m.clone());
        }
        let m = <HmacSha256 as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
        *cached = Some((key.to_vec(), m.clone()));
        Some(m)
    });
    match keyed {
        Some(mut m) => {
            m.update(value);
            lower_hex(&m.finalize().into_bytes())
        }
        None => REDACTED.to_string(),
    }
}

/// Lowercase hex of `bytes` (as `hex::encode`, without a char at a time).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Prefix of a value hashed at rest (`[dlq] mask_payloads`): a route's `sha256` mask writes
/// what follows it as it is, so a replayed entry carries the same hash a direct delivery would
/// (not a hash of the hash).
pub(crate) const HASHED_AT_REST: &str = "switchyard:masked:sha256:";

fn masked(kind: MaskKind, key: &[u8], value: &str, at_rest: bool) -> String {
    match kind {
        MaskKind::Sha256 => match value.strip_prefix(HASHED_AT_REST) {
            Some(done) if !at_rest => done.to_string(),
            Some(_) => value.to_string(),
            None if at_rest => format!("{HASHED_AT_REST}{}", hash(key, value.as_bytes())),
            None => hash(key, value.as_bytes()),
        },
        MaskKind::Redact => REDACTED.to_string(),
    }
}

/// `event` with the masks (only: no drops, no renames) of `transforms` applied, hashes marked
/// [`HASHED_AT_REST`]: what `[dlq] mask_payloads = true` stores, and what the admin API shows
/// viewers.
pub(crate) fn mask_event(
    event: &crate::event::Event,
    transforms: &[Arc<Transform>],
    at_rest: bool,
) -> crate::event::Event {
    let mut out = event.clone();
    for t in transforms {
        if t.mask.is_empty() {
            continue;
        }
        let only = Transform {
            drop: Vec::new(),
            mask: t.mask.clone(),
            rename: Vec::new(),
            mask_key: t.mask_key.clone(),
        };
        out.payload = match &out.payload {
            crate::event::Payload::Webhook(w) => {
                crate::event::Payload::Webhook(webhook_with(w, &only, at_rest))
            }
            crate::event::Payload::Change(c) => crate::event::Payload::Change(change_with(
                c,
                &only,
                at_rest,
                &ColumnsCache::default(),
            )),
            other => other.clone(),
        };
    }
    out
}

/// A change as route `t` writes it (`cache`: the route's, see [`ColumnsCache`]).
pub fn change(c: &ChangePayload, t: &Transform, cache: &ColumnsCache) -> ChangePayload {
    change_with(c, t, false, cache)
}

fn change_with(
    c: &ChangePayload,
    t: &Transform,
    at_rest: bool,
    cache: &ColumnsCache,
) -> ChangePayload {
    let keep: Vec<bool> = c
        .columns
        .iter()
        .map(|col| !t.drop.contains(&col.name))
        .collect();
    let mask_of = |name: &str| t.mask.iter().find(|(f, _)| f == name).map(|(_, k)| *k);
    let rename = |name: &str| {
        t.rename
            .iter()
            .find(|(f, _)| f == name)
            .map_or_else(|| name.to_string(), |(_, to)| to.clone())
    };
    let columns = shared_columns(cache, &c.columns, t, || {
        c.columns
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(col, _)| {
                let mut col = col.clone();
                if mask_of(&col.name).is_some() {
                    // A masked value is text, whatever the column's type.
                    col.type_oid = 25;
                    col.type_modifier = -1;
                }
                col.name = rename(&col.name);
                col
            })
            .collect()
    });
    let row = |values: &Option<Vec<Option<String>>>| {
        values.as_ref().map(|vals| {
            c.columns
                .iter()
                .zip(vals)
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|((col, v), _)| match (mask_of(&col.name), v) {
                    (Some(kind), Some(text)) => Some(masked(kind, &t.mask_key.0, text, at_rest)),
                    _ => v.clone(),
                })
                .collect()
        })
    };
    ChangePayload {
        database: c.database.clone(),
        schema: c.schema.clone(),
        table: c.table.clone(),
        table_doc: c.table_doc.clone(),
        op: c.op,
        columns,
        before: row(&c.before),
        after: row(&c.after),
        commit_lsn: c.commit_lsn,
        tx_id: c.tx_id,
        commit_time_ms: c.commit_time_ms,
        unchanged_toast: c
            .unchanged_toast
            .iter()
            .filter(|n| !t.drop.contains(n))
            .map(|n| rename(n))
            .collect(),
        before_key_only: c.before_key_only,
        position: c.position,
    }
}

/// A transformed column list made once per (columns, transform) and shared, like the source's
/// own columns, so the encoder's per-shape cache finds it by pointer.
struct ColumnsEntry {
    /// Pins the input's address (the key) while cached.
    input: Arc<[ChangeColumn]>,
    transform: Transform,
    output: Arc<[ChangeColumn]>,
}

/// Entries kept at most before the cache starts again (inputs × transforms are few).
const MAX_SHARED: usize = 4096;

/// The transformed column lists of one route, by the address of the input columns: owned by
/// the route (in its route table), so a reload, which builds a new table, starts afresh.
#[derive(Default)]
#[allow(clippy::type_complexity)]
pub struct ColumnsCache(Mutex<(usize, HashMap<usize, Vec<ColumnsEntry>>)>);

impl std::fmt::Debug for ColumnsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ColumnsCache")
    }
}

/// A cache is not part of what a route is: any two compare equal.
impl PartialEq for ColumnsCache {
    fn eq(&self, _: &ColumnsCache) -> bool {
        true
    }
}

impl Eq for ColumnsCache {}

fn shared_columns(
    cache: &ColumnsCache,
    input: &Arc<[ChangeColumn]>,
    t: &Transform,
    build: impl FnOnce() -> Vec<ChangeColumn>,
) -> Arc<[ChangeColumn]> {
    let address = Arc::as_ptr(input).cast::<u8>() as usize;
    let Ok(mut cache) = cache.0.lock() else {
        return build().into();
    };
    let (len, map) = &mut *cache;
    if let Some(e) = map.get(&address).and_then(|v| {
        v.iter()
            .find(|e| Arc::ptr_eq(&e.input, input) && e.transform == *t)
    }) {
        return Arc::clone(&e.output);
    }
    if *len >= MAX_SHARED {
        map.clear();
        *len = 0;
    }
    let output: Arc<[ChangeColumn]> = build().into();
    map.entry(address).or_default().push(ColumnsEntry {
        input: Arc::clone(input),
        transform: t.clone(),
        output: Arc::clone(&output),
    });
    *len += 1;
    output
}

/// Route key columns named as the route wrote them (after renames).
pub(crate) fn key_columns(key: &[String], t: &Transform) -> Vec<String> {
    key.iter()
        .map(|k| {
            t.rename
                .iter()
                .find(|(f, _)| f == k)
                .map_or_else(|| k.clone(), |(_, to)| to.clone())
        })
        .collect()
}

/// Splits a field into (parent pointer, last key): `name` is top-level, `/a/b` a JSON Pointer.
fn locate<'a>(
    doc: &'a mut Json,
    field: &str,
) -> Option<(&'a mut serde_json::Map<String, Json>, String)> {
    let (parent, last) = match field.strip_prefix('/') {
        None => ("", field.to_string()),
        Some(_) => {
            let i = field.rfind('/')?;
            (
                &field[..i],
                field[i + 1..].replace("~1", "/").replace("~0", "~"),
            )
        }
    };
    let target = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent)?
    };
    Some((target.as_object_mut()?, last))
}

/// A webhook as route `t` writes it: fields of the JSON body dropped, masked, renamed. A body
/// that is not a JSON object is left as it is.
pub fn webhook(w: &WebhookPayload, t: &Transform) -> WebhookPayload {
    webhook_with(w, t, false)
}

fn webhook_with(w: &WebhookPayload, t: &Transform, at_rest: bool) -> WebhookPayload {
    let Ok(mut doc) = serde_json::from_str::<Json>(&w.body) else {
        return w.clone();
    };
    for field in &t.drop {
        if let Some((obj, key)) = locate(&mut doc, field) {
            obj.remove(&key);
        }
    }
    for (field, kind) in &t.mask {
        if let Some((obj, key)) = locate(&mut doc, field)
            && let Some(v) = obj.get_mut(&key)
            && !v.is_null()
        {
            let text = match &*v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            *v = Json::String(masked(*kind, &t.mask_key.0, &text, at_rest));
        }
    }
    for (from, to) in &t.rename {
        if let Some((obj, key)) = locate(&mut doc, from)
            && let Some(v) = obj.remove(&key)
        {
            obj.insert(to.clone(), v);
        }
    }
    WebhookPayload {
        body: doc.to_string(),
        ..w.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn t() -> Transform {
        Transform {
            drop: vec!["internal_notes".into(), "/meta/trace".into()],
            mask: vec![
                ("email".into(), MaskKind::Sha256),
                ("phone".into(), MaskKind::Redact),
            ],
            rename: vec![("cust_id".into(), "customer_id".into())],
            mask_key: Secret(b"k".to_vec()),
        }
    }

    #[test]
    fn a_payload_masked_at_rest_is_written_by_the_route_as_a_direct_delivery_would_be() {
        let body = r#"{"email":"ann@example.com","phone":"555","cust_id":7,"internal_notes":"x"}"#;
        let w = WebhookPayload {
            path: "/w".into(),
            content_type: None,
            headers: Vec::new().into(),
            body: body.into(),
            subject: None,
            selected_headers: Vec::new(),
        };
        let event = crate::event::Event {
            id: crate::event::EventId::from_provider("e1"),
            source: "s".into(),
            event_type: "t".into(),
            received_at_micros: 0,
            payload: crate::event::Payload::Webhook(w.clone()),
        };
        let route = Arc::new(t());
        let stored = mask_event(&event, std::slice::from_ref(&route), true);
        let crate::event::Payload::Webhook(at_rest) = &stored.payload else {
            panic!("webhook");
        };
        assert!(!at_rest.body.contains("ann@example.com") && !at_rest.body.contains("555"));
        assert!(at_rest.body.contains(HASHED_AT_REST), "{}", at_rest.body);
        assert!(
            at_rest.body.contains("internal_notes"),
            "at rest only masks: {}",
            at_rest.body
        );
        // Replayed through the route: the same record as the event delivered directly.
        assert_eq!(webhook(at_rest, &route).body, webhook(&w, &route).body);
        // Masking twice at rest changes nothing more.
        assert_eq!(mask_event(&stored, &[route], true), stored);
    }

    fn col(name: &str, oid: u32) -> ChangeColumn {
        ChangeColumn {
            name: name.into(),
            type_oid: oid,
            type_modifier: -1,
            nullable: true,
            is_key: name == "id",
            doc: None,
        }
    }

    #[test]
    fn change_columns_are_dropped_masked_and_renamed_with_the_schema() {
        let c = ChangePayload {
            database: "app".into(),
            schema: "public".into(),
            table: "customers".into(),
            table_doc: None,
            op: crate::event::ChangeOp::Update,
            columns: vec![
                col("id", 20),
                col("email", 25),
                col("phone", 20),
                col("internal_notes", 25),
                col("cust_id", 23),
            ]
            .into(),
            before: Some(vec![
                Some("1".into()),
                Some("a@x.io".into()),
                None,
                Some("vip".into()),
                Some("9".into()),
            ]),
            after: Some(vec![
                Some("1".into()),
                Some("ü@x.io".into()),
                Some("5551234".into()),
                Some("vip".into()),
                Some("9".into()),
            ]),
            commit_lsn: 1,
            tx_id: 1,
            commit_time_ms: 0,
            unchanged_toast: vec!["internal_notes".into(), "cust_id".into()],
            before_key_only: false,
            position: Default::default(),
        };
        let out = change(&c, &t(), &ColumnsCache::default());
        let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "email", "phone", "customer_id"]);
        assert_eq!(out.columns[2].type_oid, 25, "a masked bigint is text");
        let after = out.after.expect("after");
        assert_eq!(after[0].as_deref(), Some("1"));
        assert_eq!(
            after[1].as_deref(),
            Some(hash(b"k", "ü@x.io".as_bytes()).as_str())
        );
        assert_eq!(after[2].as_deref(), Some(REDACTED));
        assert_eq!(after[3].as_deref(), Some("9"));
        assert_eq!(out.before.expect("before")[2], None, "NULL stays NULL");
        assert_eq!(out.unchanged_toast, ["customer_id"]);
        assert_eq!(key_columns(&["cust_id".into()], &t()), ["customer_id"]);
        assert_eq!(
            hash(b"k", b"x"),
            hex::encode(
                <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(b"k")
                    .map(|mut m| {
                        m.update(b"x");
                        m.finalize().into_bytes()
                    })
                    .expect("any key length")
            ),
            "the cached keyed state hashes as a fresh one"
        );
        // Equal values hash equally (consumers can still join on them).
        assert_eq!(hash(b"k", b"a"), hash(b"k", b"a"));
        assert_ne!(hash(b"k", b"a"), hash(b"other", b"a"));
    }

    #[test]
    fn webhook_bodies_are_transformed_by_name_and_pointer() {
        let w = WebhookPayload {
            path: "/".into(),
            content_type: None,
            headers: Default::default(),
            body: r#"{"email":"a@x.io","phone":5551234,"cust_id":9,"internal_notes":"x","meta":{"trace":"t","keep":1}}"#.into(),
            subject: None,
            selected_headers: vec![],
        };
        let out: Json = serde_json::from_str(&webhook(&w, &t()).body).expect("json");
        assert_eq!(out["email"], hash(b"k", b"a@x.io"));
        assert_eq!(out["phone"], REDACTED);
        assert_eq!(out["customer_id"], 9);
        assert!(out.get("cust_id").is_none() && out.get("internal_notes").is_none());
        assert_eq!(out["meta"], serde_json::json!({"keep": 1}));
        let not_json = WebhookPayload {
            body: "a=b".into(),
            ..w
        };
        assert_eq!(webhook(&not_json, &t()).body, "a=b");
    }
}
