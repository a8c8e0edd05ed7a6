//! Change events → Debezium envelope records (see `source::postgres::envelope`).

use apache_avro::types::Value;

use super::AvroSchema;
use crate::event::{ChangePayload, Event};
use crate::source::postgres::envelope::{RowError, SourceInfo, TableColumn, TableSchema};
use crate::source::postgres::pgoutput::{Datum, Tuple};
use crate::source::postgres::types::column_type;

/// The table shape of a change.
pub fn table_schema(source: &str, c: &ChangePayload) -> TableSchema {
    TableSchema {
        source: source.to_string(),
        database: c.database.clone(),
        schema: c.schema.clone(),
        table: c.table.clone(),
        doc: c.table_doc.clone(),
        columns: c
            .columns
            .iter()
            .map(|col| TableColumn {
                name: col.name.clone(),
                ty: column_type(col.type_oid, col.type_modifier),
                nullable: col.nullable,
                is_key: col.is_key,
                doc: col.doc.clone(),
            })
            .collect(),
    }
}

fn tuple(row: &[Option<String>]) -> Tuple {
    Tuple(
        row.iter()
            .map(|v| match v {
                Some(s) => Datum::Text(s.as_bytes().to_vec()),
                None => Datum::Null,
            })
            .collect(),
    )
}

/// Value schema, envelope, key schema and key of a change. A `tombstone` has no value; a
/// truncate (`t`) has no key.
pub fn parts(
    event: &Event,
    c: &ChangePayload,
) -> Result<(AvroSchema, Option<Value>, AvroSchema, Option<Value>), RowError> {
    let t = table_schema(&event.source, c);
    let before = match c.before.as_deref() {
        Some(r) if c.before_key_only => Some(t.key_only_row(&tuple(r))?),
        Some(r) => Some(t.row(&tuple(r))?),
        None => None,
    };
    let after = c.after.as_deref().map(|r| t.row(&tuple(r))).transpose()?;
    let key = match c.after.as_deref().or(c.before.as_deref()) {
        Some(row) => Some(t.key(&tuple(row))?),
        None => None,
    };
    let value_schema = AvroSchema::from_json(&t.value_schema().to_string());
    let key_schema = AvroSchema::from_json(&t.key_schema().to_string());
    if c.op == "tombstone" {
        return Ok((value_schema, None, key_schema, key));
    }
    let source = SourceInfo {
        ts_ms: c.commit_time_ms,
        tx_id: Some(i64::from(c.tx_id)),
        lsn: i64::try_from(c.commit_lsn).ok(),
        snapshot: "false",
    };
    let envelope = t.envelope(
        before,
        after,
        &c.op,
        &source,
        event.received_at_micros / 1000,
    );
    Ok((value_schema, Some(envelope), key_schema, key))
}
