//! Avro binary encoding of change envelopes and webhook CloudEvents, by position.
//!
//! apache-avro's value writer looks every record field up by name, and to do so builds a hash
//! map of the record's fields for every record it writes: for a change envelope (the envelope,
//! `source`, `before`, `after`, the key) that was a fifth of the CDC path's CPU. Change values
//! are built by [`TableSchema`](crate::debezium::envelope::TableSchema) from the same
//! column list as their schema, so their fields are already in schema order, and union
//! branches are explicit: Avro's binary encoding of such a value needs no schema at all.
//!
//! This writer covers exactly the value kinds change envelopes and the webhook CloudEvent
//! record use (the CloudEvent is built field by field in its schema's order too, see
//! [`cloudevent::record`](super::cloudevent::record)). For anything else it returns `false`
//! and the caller uses apache-avro's writer, which remains the reference: the tests check that
//! both give the same bytes for every column type switchyard maps and for CloudEvents.

use apache_avro::types::Value;

/// Appends the Avro binary encoding of `value` to `out`, taking record fields in order.
/// Returns false (with `out` possibly partly written) for a value kind it does not cover.
pub(crate) fn write_ordered(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null => true,
        Value::Boolean(b) => {
            out.push(u8::from(*b));
            true
        }
        Value::Int(i) | Value::Date(i) => {
            zigzag(i64::from(*i), out);
            true
        }
        Value::Long(i) | Value::TimeMicros(i) | Value::TimestampMicros(i) => {
            zigzag(*i, out);
            true
        }
        Value::Float(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            true
        }
        Value::Double(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            true
        }
        Value::String(s) => {
            bytes(s.as_bytes(), out);
            true
        }
        Value::Bytes(b) => {
            bytes(b, out);
            true
        }
        // Change envelopes use bytes-backed decimals only (Debezium's `precise` mode).
        Value::Decimal(d) => match Vec::<u8>::try_from(d) {
            Ok(b) => {
                bytes(&b, out);
                true
            }
            Err(_) => false,
        },
        Value::Union(index, inner) => {
            zigzag(i64::from(*index), out);
            write_ordered(inner, out)
        }
        Value::Record(fields) => fields.iter().all(|(_, v)| write_ordered(v, out)),
        Value::Array(items) => {
            if !items.is_empty() {
                zigzag(items.len() as i64, out);
                if !items.iter().all(|v| write_ordered(v, out)) {
                    return false;
                }
            }
            out.push(0);
            true
        }
        // One block of entries (in the map's order: Avro maps are unordered), then the end.
        Value::Map(entries) => {
            if !entries.is_empty() {
                zigzag(entries.len() as i64, out);
                for (k, v) in entries {
                    bytes(k.as_bytes(), out);
                    if !write_ordered(v, out) {
                        return false;
                    }
                }
            }
            out.push(0);
            true
        }
        _ => false,
    }
}

/// An Avro `long`/`int`: zigzag varint.
pub(crate) fn zigzag(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro `bytes` or `string`: length, then the bytes.
pub fn bytes(b: &[u8], out: &mut Vec<u8>) {
    zigzag(b.len() as i64, out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeColumn, ChangePayload, Event, EventId, Payload};

    fn column(name: &str, type_oid: u32, type_modifier: i32, is_key: bool) -> ChangeColumn {
        ChangeColumn {
            name: name.into(),
            type_oid,
            type_modifier,
            nullable: !is_key,
            is_key,
            doc: None,
        }
    }

    /// Every mapped type, with edge values, NULLs and unicode, through both writers.
    #[test]
    fn change_envelopes_encode_exactly_as_apache_avro_encodes_them() {
        let numeric_10_2 = ((10 << 16) | 2) + 4;
        let columns = vec![
            column("id", 20, -1, true),
            column("flag", 16, -1, false),
            column("small", 21, -1, false),
            column("medium", 23, -1, false),
            column("real_", 700, -1, false),
            column("double_", 701, -1, false),
            column("price", 1700, numeric_10_2, false),
            column("any_numeric", 1700, -1, false),
            column("name", 25, -1, false),
            column("Mixed-Case name", 1043, 20, false),
            column("raw", 17, -1, false),
            column("day", 1082, -1, false),
            column("at_time", 1083, -1, false),
            column("at", 1114, -1, false),
            column("at_tz", 1184, -1, false),
            column("uid", 2950, -1, false),
            column("doc", 3802, -1, false),
            column("ints", 1007, -1, false),
            column("texts", 1009, -1, false),
            column("span", 1186, -1, false),
        ];
        let rows: Vec<Vec<Option<&str>>> = vec![
            vec![
                Some("9223372036854775807"),
                Some("t"),
                Some("-32768"),
                Some("2147483647"),
                Some("1.5"),
                Some("-2.25e-300"),
                Some("-12345678.90"),
                Some("123456789012345678901234567890.000001"),
                Some("héllo ✓ 日本"),
                Some(""),
                Some("\\x00ff10"),
                Some("2024-02-29"),
                Some("23:59:59.999999"),
                Some("1970-01-01 00:00:00"),
                Some("2024-06-01 12:00:00.123456+02"),
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                Some("{\"a\": [1, 2, null]}"),
                Some("{1,NULL,-3}"),
                Some("{\"a b\",c,NULL}"),
                Some("1 year 2 mons 3 days 04:05:06.789"),
            ],
            vec![
                Some("-9223372036854775808"),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some("{}"),
                Some("{}"),
                None,
            ],
        ];
        for row in rows {
            let row: Vec<Option<String>> = row.iter().map(|v| v.map(str::to_string)).collect();
            // An old row of REPLICA IDENTITY DEFAULT: the key alone.
            let key_only: Vec<Option<String>> = row
                .iter()
                .zip(&columns)
                .map(|(v, c)| if c.is_key { v.clone() } else { None })
                .collect();
            for (op, before, after, before_key_only, position) in [
                ("c", None, Some(row.clone()), false, Default::default()),
                (
                    "u",
                    Some(row.clone()),
                    Some(row.clone()),
                    false,
                    Default::default(),
                ),
                ("d", Some(row.clone()), None, false, Default::default()),
                (
                    "u",
                    Some(key_only.clone()),
                    Some(row.clone()),
                    true,
                    crate::event::ChangePosition {
                        lsn: 0x1_0000_0100,
                        last_commit_lsn: Some(0xff),
                        commit_time_us: Some(1_700_000_000_000_001),
                        total_order: 3,
                        data_collection_order: 2,
                        incremental: false,
                    },
                ),
                ("d", Some(key_only.clone()), None, true, Default::default()),
                (
                    "tombstone",
                    Some(key_only.clone()),
                    None,
                    true,
                    Default::default(),
                ),
            ] {
                let c = ChangePayload {
                    database: "app".into(),
                    schema: "public".into(),
                    table: "everything".into(),
                    table_doc: Some("all the types".into()),
                    op: crate::event::ChangeOp::from_code(op).expect("an op code"),
                    columns: columns.clone().into(),
                    before,
                    after,
                    commit_lsn: 0x1_0000_0000,
                    tx_id: 4_000_000_000,
                    commit_time_ms: 1_700_000_000_000,
                    unchanged_toast: vec![],
                    before_key_only,
                    position,
                };
                let event = Event {
                    id: EventId::from_lsn(1, 0),
                    source: "db".into(),
                    event_type: op.into(),
                    received_at_micros: 1_700_000_000_000_123,
                    payload: Payload::Change(c.clone()),
                };
                let (value_schema, value, key_schema, key) =
                    crate::encode::change::parts(&event, &c, &[], &Default::default())
                        .expect("parts");
                // Written straight from the rows, without the tree: the same bytes.
                let written = crate::encode::change::written(&event, &c, &[], &Default::default())
                    .expect("written");
                for (schema, v, direct) in [
                    (value_schema, value, written.value),
                    (key_schema, key, written.key),
                ] {
                    let Some(v) = v else {
                        assert_eq!(direct, None, "{op}: no value, none written");
                        continue;
                    };
                    let reference = schema.encode_locally(v.clone()).expect("apache-avro");
                    let mut ours = Vec::new();
                    assert!(write_ordered(&v, &mut ours), "covered: {v:?}");
                    assert_eq!(ours, reference, "{op}: {v:?}");
                    let direct = direct.expect("written");
                    assert_eq!(
                        direct[..crate::encode::FRAME],
                        [0; crate::encode::FRAME],
                        "room for the header"
                    );
                    assert_eq!(
                        direct[crate::encode::FRAME..],
                        reference,
                        "{op} written directly: {v:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn zigzag_matches_the_avro_spec() {
        for (n, want) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            zigzag(n, &mut out);
            assert_eq!(out, want, "{n}");
        }
    }

    /// Webhook CloudEvents (with and without subject and headers) through both writers.
    #[test]
    fn cloudevents_encode_exactly_as_apache_avro_encodes_them() {
        use crate::encode::cloudevent;
        use crate::event::WebhookPayload;
        let schema = cloudevent::schema();
        let parsed = apache_avro::Schema::parse_str(schema.json()).expect("schema");
        for (subject, headers, content_type) in [
            (None, vec![], None),
            (
                Some("pi_1"),
                vec![("user-agent", "Stripe/1.0 (+https://stripe.com)")],
                Some("application/json; charset=utf-8"),
            ),
            (
                Some(""),
                vec![("x-a", "1"), ("x-b", "ünïcødé ✓"), ("x-c", "")],
                Some("application/x-www-form-urlencoded"),
            ),
        ] {
            let w = WebhookPayload {
                path: "/webhooks/stripe".into(),
                content_type: content_type.map(str::to_string),
                headers: Default::default(),
                body: r#"{"id":"evt_1","type":"charge.refunded","data":{"object":{"id":"ch_ü"}}}"#
                    .into(),
                subject: subject.map(str::to_string),
                selected_headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let event = Event {
                id: EventId::from_provider("evt_1"),
                source: "stripe".into(),
                event_type: "charge.refunded".into(),
                received_at_micros: -1_700_000_000_000_123,
                payload: Payload::Webhook(w.clone()),
            };
            let v = cloudevent::record(&event, &w);
            let mut ours = Vec::new();
            assert!(write_ordered(&v, &mut ours), "covered: {v:?}");
            // Written straight from the event: the same bytes as from the record (with two or
            // more headers, the same record: map entries have no order).
            let mut straight = Vec::new();
            cloudevent::write(&event, &w, &mut straight);
            if headers.len() <= 1 {
                assert_eq!(straight, ours, "{v:?}");
            }
            if headers.len() <= 1 {
                let reference = schema.encode_locally(v.clone()).expect("apache-avro");
                assert_eq!(ours, reference, "{v:?}");
            }
            // Map entries have no order: what a reader decodes is the same record, both ways.
            for bytes in [&straight, &ours] {
                let decoded = apache_avro::reader::datum::GenericDatumReader::builder(&parsed)
                    .build()
                    .and_then(|r| r.read_value(&mut bytes.as_slice()))
                    .expect("decodes");
                assert_eq!(decoded, v);
            }
        }
    }

    #[test]
    fn kinds_it_does_not_cover_are_left_to_apache_avro() {
        let mut out = Vec::new();
        assert!(!write_ordered(
            &Value::Record(vec![("e".into(), Value::Enum(0, "A".into()))]),
            &mut out
        ));
    }
}
