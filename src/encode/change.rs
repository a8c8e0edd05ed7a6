//! Change events → Debezium envelope records (see `source::postgres::envelope`).

use std::sync::LazyLock;

use apache_avro::types::Value;

use super::AvroSchema;
use crate::debezium::envelope::{self, RowError, SourceInfo, TransactionBlock};
use crate::debezium::shapes::ShapeCache;
use crate::event::{ChangePayload, Event, MessagePayload};

/// Value schema, value, key schema and key of a logical decoding message.
pub(crate) fn message_parts(
    event: &Event,
    m: &MessagePayload,
) -> (AvroSchema, Option<Value>, AvroSchema, Option<Value>) {
    static SCHEMAS: LazyLock<(AvroSchema, AvroSchema)> = LazyLock::new(|| {
        (
            AvroSchema::from_json(&envelope::message_value_schema().to_string()),
            AvroSchema::from_json(&envelope::message_key_schema().to_string()),
        )
    });
    let source = SourceInfo {
        ts_ms: m.ts_ms,
        ts_us: m.ts_ms.saturating_mul(1000),
        tx_id: m.tx_id.map(i64::from),
        lsn: i64::try_from(m.lsn).ok(),
        snapshot: "false",
        sequence: Some(envelope::sequence(None, Some(m.lsn))),
        transaction: None,
    };
    let value = envelope::message_value(
        &event.source,
        &m.database,
        &m.prefix,
        &m.content,
        source,
        event.received_at_micros / 1000,
    );
    (
        SCHEMAS.0.clone(),
        Some(value),
        SCHEMAS.1.clone(),
        Some(envelope::message_key(&m.prefix)),
    )
}

/// The `source` and `transaction` blocks of a change. Where the source did not say (see
/// [`crate::event::ChangePosition`]), the change's LSN is its commit LSN, the commit time in
/// microseconds its milliseconds × 1000, and there is no transaction block. Snapshot reads have
/// none either (as in Debezium).
pub(crate) fn source_info(c: &ChangePayload) -> SourceInfo {
    let p = &c.position;
    let lsn = if p.lsn == 0 { c.commit_lsn } else { p.lsn };
    let tx_id = i64::from(c.tx_id);
    let read = c.op == crate::event::ChangeOp::Read;
    SourceInfo {
        ts_ms: c.commit_time_ms,
        ts_us: p
            .commit_time_us
            .unwrap_or_else(|| c.commit_time_ms.saturating_mul(1000)),
        tx_id: Some(tx_id),
        lsn: i64::try_from(c.commit_lsn).ok(),
        snapshot: match (read, p.incremental) {
            (true, true) => "incremental",
            (true, false) => "true",
            _ => "false",
        },
        sequence: Some(envelope::sequence(p.last_commit_lsn, Some(lsn))),
        transaction: (!read && p.total_order > 0)
            .then(|| TransactionBlock::new(tx_id, lsn, p.total_order, p.data_collection_order)),
    }
}

/// Value schema, envelope, key schema and key of a change. A `tombstone` has no value; a
/// truncate (`t`) has no key. `shapes`: the route's (see [`ShapeCache`]).
pub(crate) fn parts(
    event: &Event,
    c: &ChangePayload,
    key_columns: &[String],
    shapes: &ShapeCache,
) -> Result<(AvroSchema, Option<Value>, AvroSchema, Option<Value>), RowError> {
    let shape = shapes.prepared(&event.source, c, key_columns);
    let t = &shape.table;
    let before = match c.before.as_deref() {
        Some(r) if c.before_key_only => Some(t.key_only_row(r)?),
        Some(r) => Some(t.row_of(r)?),
        None => None,
    };
    let after = c.after.as_deref().map(|r| t.row_of(r)).transpose()?;
    let key = match c.after.as_deref().or(c.before.as_deref()) {
        Some(row) => Some(t.key_of(row)?),
        None => None,
    };
    let (value_schema, key_schema) = (shape.schemas.0.clone(), shape.schemas.1.clone());
    if c.op == crate::event::ChangeOp::Tombstone {
        return Ok((value_schema, None, key_schema, key));
    }
    let envelope = t.envelope(
        before,
        after,
        c.op.code(),
        source_info(c),
        event.received_at_micros,
    );
    Ok((value_schema, Some(envelope), key_schema, key))
}

/// A change's key and value as Avro binary, written straight from its rows (see
/// [`TableSchema::write_envelope`](envelope::TableSchema::write_envelope)), with their schemas.
/// Each datum starts after [`super::FRAME`] bytes left for the Confluent header
/// ([`super::Encoder::frame_in_place`]).
pub(crate) struct Written {
    /// Value schema.
    pub value_schema: AvroSchema,
    /// The envelope; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Key schema.
    pub key_schema: AvroSchema,
    /// The key; `None` for a change without a row (truncate).
    pub key: Option<Vec<u8>>,
}

/// [`parts`], written without a `Value` tree: the same bytes. `None` when a row does not fit
/// its schema or holds a value kind the direct writer does not cover: [`parts`] then says why
/// (or builds it).
pub(crate) fn written(
    event: &Event,
    c: &ChangePayload,
    key_columns: &[String],
    shapes: &ShapeCache,
) -> Option<Written> {
    let shape = shapes.prepared(&event.source, c, key_columns);
    let t = &shape.table;
    let key = match c.after.as_deref().or(c.before.as_deref()) {
        Some(row) => {
            let mut out = vec![0; super::FRAME];
            out.reserve(16);
            t.write_key(row, &mut out).ok()?;
            Some(out)
        }
        None => None,
    };
    let value = if c.op == crate::event::ChangeOp::Tombstone {
        None
    } else {
        let mut out = Vec::with_capacity(256);
        out.resize(super::FRAME, 0);
        t.write_envelope(
            c.before.as_deref().map(|r| (r, c.before_key_only)),
            c.after.as_deref(),
            c.op.code(),
            source_info(c),
            event.received_at_micros,
            &mut out,
        )
        .ok()?;
        Some(out)
    };
    Some(Written {
        value_schema: shape.schemas.0.clone(),
        value,
        key_schema: shape.schemas.1.clone(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeColumn, EventId, Payload};

    fn event() -> (Event, ChangePayload) {
        let col = |name: &str, oid: u32, is_key: bool| ChangeColumn {
            name: name.into(),
            type_oid: oid,
            type_modifier: -1,
            nullable: !is_key,
            is_key,
            doc: None,
        };
        let c = ChangePayload {
            database: "app".into(),
            schema: "public".into(),
            table: "users".into(),
            table_doc: None,
            op: crate::event::ChangeOp::Create,
            columns: vec![col("id", 20, true), col("email", 25, false)].into(),
            before: None,
            after: Some(vec![Some("7".into()), Some("a@example.com".into())]),
            commit_lsn: 42,
            tx_id: 9,
            commit_time_ms: 1,
            unchanged_toast: vec![],
            before_key_only: false,
            position: Default::default(),
        };
        let e = Event {
            id: EventId::from_lsn(42, 0),
            source: "db".into(),
            event_type: "c".into(),
            received_at_micros: 5_000,
            payload: Payload::Change(c.clone()),
        };
        (e, c)
    }

    #[test]
    fn the_key_is_the_primary_key_unless_the_route_names_columns() {
        let (e, c) = event();
        let (_, value, key_schema, key) =
            parts(&e, &c, &[], &ShapeCache::default()).expect("parts");
        assert_eq!(
            key,
            Some(Value::Record(vec![("id".into(), Value::Long(7))]))
        );
        assert!(value.is_some());
        assert!(key_schema.json().contains("\"id\""));
        let (_, _, key_schema, key) =
            parts(&e, &c, &["email".to_string()], &ShapeCache::default()).expect("parts");
        assert_eq!(
            key,
            Some(Value::Record(vec![(
                "email".into(),
                Value::String("a@example.com".into())
            )]))
        );
        assert!(key_schema.json().contains("\"email\"") && !key_schema.json().contains("\"id\""));
    }

    fn field<'v>(fields: &'v [(String, Value)], name: &str) -> &'v Value {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no field {name}"))
    }

    fn source_and_transaction(value: &Value) -> (Vec<(String, Value)>, Value) {
        let Value::Record(top) = value else {
            panic!("a record: {value:?}")
        };
        let Value::Record(source) = field(top, "source") else {
            panic!("source is a record")
        };
        (source.clone(), field(top, "transaction").clone())
    }

    #[test]
    fn the_position_fills_sequence_commit_micros_and_the_transaction_block() {
        let (mut e, mut c) = event();
        c.commit_lsn = 26_664_576;
        c.commit_time_ms = 1_796_634_023_628;
        c.position = crate::event::ChangePosition {
            lsn: 26_664_440,
            last_commit_lsn: Some(26_664_384),
            commit_time_us: Some(1_796_634_023_628_750),
            total_order: 4,
            data_collection_order: 2,
            incremental: false,
        };
        e.payload = Payload::Change(c.clone());
        let (schema, value, _, _) = parts(&e, &c, &[], &ShapeCache::default()).expect("parts");
        let value = value.expect("a value");
        let (source, transaction) = source_and_transaction(&value);
        let some = |v: Value| Value::Union(1, Box::new(v));
        assert_eq!(
            field(&source, "sequence"),
            &some(Value::String(r#"["26664384","26664440"]"#.into()))
        );
        assert_eq!(field(&source, "ts_ms"), &Value::Long(1_796_634_023_628));
        assert_eq!(
            field(&source, "ts_us"),
            &some(Value::Long(1_796_634_023_628_750))
        );
        assert_eq!(
            field(&source, "ts_ns"),
            &some(Value::Long(1_796_634_023_628_750_000))
        );
        assert_eq!(
            field(&source, "lsn"),
            &some(Value::Long(26_664_576)),
            "source.lsn stays the commit LSN"
        );
        assert_eq!(
            transaction,
            some(Value::Record(vec![
                ("id".into(), Value::String("9:26664440".into())),
                ("total_order".into(), Value::Long(4)),
                ("data_collection_order".into(), Value::Long(2)),
            ]))
        );
        // The positional writer gives apache-avro's bytes for the new fields too.
        let reference = schema.encode_locally(value.clone()).expect("apache-avro");
        let mut ours = Vec::new();
        assert!(crate::avro::datum::write_ordered(&value, &mut ours));
        assert_eq!(ours, reference);
    }

    #[test]
    fn without_a_position_the_commit_stands_in_and_there_is_no_transaction_block() {
        let (e, c) = event();
        let (_, value, _, _) = parts(&e, &c, &[], &ShapeCache::default()).expect("parts");
        let (source, transaction) = source_and_transaction(&value.expect("a value"));
        let some = |v: Value| Value::Union(1, Box::new(v));
        assert_eq!(
            field(&source, "sequence"),
            &some(Value::String(r#"[null,"42"]"#.into()))
        );
        assert_eq!(field(&source, "ts_us"), &some(Value::Long(1_000)));
        assert_eq!(transaction, Value::Union(0, Box::new(Value::Null)));

        // Snapshot reads: no transaction block even with a position (as Debezium).
        let (mut e, mut c) = event();
        c.op = crate::event::ChangeOp::Read;
        c.position.total_order = 1;
        c.position.data_collection_order = 1;
        e.payload = Payload::Change(c.clone());
        let (_, value, _, _) = parts(&e, &c, &[], &ShapeCache::default()).expect("parts");
        let (source, transaction) = source_and_transaction(&value.expect("a value"));
        assert_eq!(field(&source, "snapshot"), &Value::String("true".into()));
        assert_eq!(transaction, Value::Union(0, Box::new(Value::Null)));
    }

    #[test]
    fn changes_stored_before_the_position_existed_read_back_with_none() {
        let (_, c) = event();
        let mut json = serde_json::to_value(&c).expect("serialize");
        json.as_object_mut().expect("object").remove("position");
        let back: ChangePayload = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back.position, crate::event::ChangePosition::default());
        let partial: crate::event::ChangePosition =
            serde_json::from_str(r#"{"lsn": 5}"#).expect("partial");
        assert_eq!(partial.lsn, 5);
        assert_eq!(partial.total_order, 0);
    }

    #[test]
    fn a_tombstone_has_a_key_and_no_value() {
        let (e, mut c) = event();
        c.op = crate::event::ChangeOp::Tombstone;
        c.before = c.after.take();
        let (_, value, _, key) = parts(&e, &c, &[], &ShapeCache::default()).expect("parts");
        assert!(value.is_none());
        assert!(key.is_some());
    }
}
