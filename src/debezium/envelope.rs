//! Debezium-compatible change envelopes: the Avro schemas and values product teams read.
//!
//! What Debezium's consumers check, and this module keeps: the value record is `Envelope` in
//! namespace `<source>.<schema>.<table>` (Kafka Connect SMTs act on names ending `.Envelope`);
//! `before` and `after` are the same `Value` record, nullable; `source` is the record
//! `io.debezium.connector.postgresql.Source` with `ts_ms`, `txId` and `lsn` as longs and
//! `snapshot` a string defaulting to "false"; `op` is a string (`c`, `u`, `d`, `r`, `t`, `m`).
//! NOT NULL columns are bare types, nullable ones `["null", T]` with default null. The key is
//! the record `Key` of the key columns. Column and table comments become `doc`.
//!
//! The fields Debezium 3.x added are here with its names, types, optionality and order, as the
//! Debezium 3.6.3 Postgres connector writes them (read off its JsonConverter schemas): in
//! `source`, after `db`: `sequence` (optional string, the JSON array `["<last commit LSN>",
//! "<LSN of the change>"]` of decimal strings, `null` for an unknown part), `ts_us` and `ts_ns`
//! (optional longs, the commit time), and after `lsn`: `xmin`, `origin` (optional string) and
//! `origin_lsn` (optional longs, always null here as in Debezium's default configuration); in
//! the envelope, after `source`: `transaction`, the optional record `event.block` (`id` string
//! `"<txId>:<LSN of the change>"`, `total_order` and `data_collection_order` longs, 1-based
//! positions in the transaction and among its changes of the same table), and after `ts_ms`:
//! `ts_us` and `ts_ns` (optional longs, the processing time). Every added field is optional with
//! default null, so the schemas stay BACKWARD compatible with the ones registered before. Our
//! `source.lsn` stays the commit LSN of the transaction (Debezium writes the change's own LSN
//! there; it is the second element of `sequence` here).

use apache_avro::types::Value;
use serde_json::{Value as Json, json};

use super::types::{ColumnType, TypeError};
use crate::avro::datum;
use crate::event::{Datum, Tuple};

/// One column of a captured table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableColumn {
    /// Column name as in Postgres.
    pub name: String,
    /// Its Avro type.
    pub ty: ColumnType,
    /// False for NOT NULL columns.
    pub nullable: bool,
    /// Part of the key.
    pub is_key: bool,
    /// `COMMENT ON COLUMN`, if any.
    pub doc: Option<String>,
}

/// A captured table's shape, from the Relation message and the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    /// The switchyard source name.
    pub source: String,
    /// Database name.
    pub database: String,
    /// Postgres schema.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// `COMMENT ON TABLE`, if any.
    pub doc: Option<String>,
    /// Columns in table order.
    pub columns: Vec<TableColumn>,
}

/// Where a change came from: the `source` block of the envelope, and its `transaction` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// Commit time, milliseconds since the epoch.
    pub ts_ms: i64,
    /// Commit time, microseconds since the epoch (`ts_us`; `ts_ns` is it × 1000: pgoutput's
    /// commit times have microsecond precision, as in Debezium).
    pub ts_us: i64,
    /// Transaction id.
    pub tx_id: Option<i64>,
    /// LSN of the change (commit LSN for streamed changes).
    pub lsn: Option<i64>,
    /// "false", "true", "last" (snapshot reads).
    pub snapshot: &'static str,
    /// Debezium's `sequence` (see [`sequence`]); `None` writes null.
    pub sequence: Option<String>,
    /// The envelope's `transaction` block; `None` writes null.
    pub transaction: Option<TransactionBlock>,
}

/// The envelope's `transaction` block: Debezium's `event.block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionBlock {
    /// `"<txId>:<LSN of the change>"`, as Debezium's Postgres connector writes it (the LSN part
    /// is the change's own, so it differs between the changes of one transaction there too).
    pub id: String,
    /// 1-based position of the change among its transaction's changes.
    pub total_order: i64,
    /// 1-based position among its transaction's changes of the same table.
    pub data_collection_order: i64,
}

impl TransactionBlock {
    /// The block of the change at `lsn` in transaction `tx_id`.
    pub fn new(tx_id: i64, lsn: u64, total_order: u64, data_collection_order: u64) -> Self {
        TransactionBlock {
            id: format!("{tx_id}:{lsn}"),
            total_order: i64::try_from(total_order).unwrap_or(i64::MAX),
            data_collection_order: i64::try_from(data_collection_order).unwrap_or(i64::MAX),
        }
    }
}

/// Debezium's `source.sequence`: the JSON array `["<last commit LSN>","<LSN of the change>"]`,
/// each LSN a decimal string, `null` when unknown (e.g. `[null,"26384736"]` before the stream
/// has read a commit), written as Jackson writes a list of strings (no spaces).
pub fn sequence(last_commit_lsn: Option<u64>, lsn: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(48);
    s.push('[');
    for (i, part) in [last_commit_lsn, lsn].into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match part {
            // Writing to a String cannot fail.
            Some(v) => {
                let _ = write!(s, "\"{v}\"");
            }
            None => s.push_str("null"),
        }
    }
    s.push(']');
    s
}

/// Why a row could not be turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The tuple has a different number of columns than the table.
    #[error("the row has {got} columns, the table {want}")]
    Arity {
        /// Columns in the tuple.
        got: usize,
        /// Columns in the table.
        want: usize,
    },
    /// An unchanged TOASTed value that the caller must fill in first.
    #[error("column `{0}` is an unchanged TOASTed value that was not filled in")]
    Unchanged(String),
    /// A NULL in a NOT NULL column.
    #[error("column `{0}` is NULL but NOT NULL")]
    NullInNotNull(String),
    /// A value did not parse.
    #[error("column `{column}`: {source}")]
    Type {
        /// The column.
        column: String,
        /// The problem.
        source: TypeError,
    },
    /// A value is not UTF-8 text.
    #[error("column `{0}` is not UTF-8 text")]
    NotText(String),
}

/// One column value as the envelope reads it: a pgoutput datum or a stored text value.
pub trait Cell {
    /// The value: `Ok(None)` for NULL, `Ok(Some(text))` for a text value, `Err(datum)` for a
    /// datum that is not text (unchanged TOAST or binary).
    fn text(&self) -> Result<Option<&[u8]>, &Datum>;
}

impl Cell for Datum {
    fn text(&self) -> Result<Option<&[u8]>, &Datum> {
        match self {
            Datum::Null => Ok(None),
            Datum::Text(b) => Ok(Some(b)),
            other => Err(other),
        }
    }
}

impl Cell for Option<String> {
    fn text(&self) -> Result<Option<&[u8]>, &Datum> {
        Ok(self.as_deref().map(str::as_bytes))
    }
}

/// An Avro name: letters, digits and `_`, not starting with a digit (Debezium's rule).
pub(crate) fn avro_name(name: &str) -> String {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        return name.to_string();
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl TableSchema {
    /// `<source>.<schema>.<table>`, each part an Avro name.
    pub fn namespace(&self) -> String {
        format!(
            "{}.{}.{}",
            avro_name(&self.source),
            avro_name(&self.schema),
            avro_name(&self.table)
        )
    }

    fn field(col: &TableColumn, force_required: bool) -> Json {
        let ty = col.ty.avro_schema();
        let mut f = if col.nullable && !force_required {
            json!({"name": avro_name(&col.name), "type": ["null", ty], "default": null})
        } else {
            json!({"name": avro_name(&col.name), "type": ty})
        };
        if let Some(doc) = &col.doc {
            f["doc"] = json!(doc);
        }
        f
    }

    fn row_schema(&self) -> Json {
        let mut r = json!({
            "type": "record",
            "name": "Value",
            "namespace": self.namespace(),
            "fields": self.columns.iter().map(|c| Self::field(c, false)).collect::<Vec<_>>(),
            "connect.name": format!("{}.Value", self.namespace()),
        });
        if let Some(doc) = &self.doc {
            r["doc"] = json!(doc);
        }
        r
    }

    /// The value schema: the `Envelope` record.
    pub fn value_schema(&self) -> Json {
        let ns = self.namespace();
        json!({
            "type": "record",
            "name": "Envelope",
            "namespace": ns,
            "connect.name": format!("{ns}.Envelope"),
            "fields": [
                {"name": "before", "type": ["null", self.row_schema()], "default": null},
                {"name": "after", "type": ["null", format!("{ns}.Value")], "default": null},
                {"name": "source", "type": source_schema()},
                {"name": "transaction", "type": ["null", transaction_schema()], "default": null},
                {"name": "op", "type": "string"},
                {"name": "ts_ms", "type": ["null", "long"], "default": null},
                {"name": "ts_us", "type": ["null", "long"], "default": null},
                {"name": "ts_ns", "type": ["null", "long"], "default": null}
            ]
        })
    }

    /// The key schema: the `Key` record of the key columns.
    pub fn key_schema(&self) -> Json {
        json!({
            "type": "record",
            "name": "Key",
            "namespace": self.namespace(),
            "connect.name": format!("{}.Key", self.namespace()),
            "fields": self.columns.iter().filter(|c| c.is_key).map(|c| Self::field(c, true)).collect::<Vec<_>>(),
        })
    }

    fn cell(col: &TableColumn, datum: &impl Cell, required: bool) -> Result<Value, RowError> {
        let parsed = match datum.text() {
            Ok(None) => None,
            Err(Datum::UnchangedToast) => return Err(RowError::Unchanged(col.name.clone())),
            Ok(Some(bytes)) => {
                let text =
                    std::str::from_utf8(bytes).map_err(|_| RowError::NotText(col.name.clone()))?;
                Some(col.ty.parse(text).map_err(|source| RowError::Type {
                    column: col.name.clone(),
                    source,
                })?)
            }
            Err(_) => return Err(RowError::NotText(col.name.clone())),
        };
        match (parsed, col.nullable && !required) {
            (Some(v), true) => Ok(Value::Union(1, Box::new(v))),
            (Some(v), false) => Ok(v),
            (None, true) => Ok(Value::Union(0, Box::new(Value::Null))),
            (None, false) => Err(RowError::NullInNotNull(col.name.clone())),
        }
    }

    /// A record of the columns `pick` selects, each value made by `cell`.
    fn record<C: Cell>(
        &self,
        cells: &[C],
        pick: impl Fn(&TableColumn) -> bool,
        cell: impl Fn(&TableColumn, &C) -> Result<Value, RowError>,
    ) -> Result<Value, RowError> {
        if cells.len() != self.columns.len() {
            return Err(RowError::Arity {
                got: cells.len(),
                want: self.columns.len(),
            });
        }
        let fields = self
            .columns
            .iter()
            .zip(cells)
            .filter(|(c, _)| pick(c))
            .map(|(c, d)| Ok((avro_name(&c.name), cell(c, d)?)))
            .collect::<Result<Vec<_>, RowError>>()?;
        Ok(Value::Record(fields))
    }

    /// The `Value` record of a row.
    pub fn row(&self, tuple: &Tuple) -> Result<Value, RowError> {
        self.row_of(&tuple.0)
    }

    /// The `Value` record of a row given as cells (datums or stored text values).
    pub(crate) fn row_of<C: Cell>(&self, cells: &[C]) -> Result<Value, RowError> {
        self.record(cells, |_| true, |c, d| Self::cell(c, d, false))
    }

    /// The `Value` record of a key-only old row: non-key NOT NULL columns get their type's zero
    /// value (their real value is not in the WAL), nullable ones null.
    pub(crate) fn key_only_row<C: Cell>(&self, cells: &[C]) -> Result<Value, RowError> {
        self.record(
            cells,
            |_| true,
            |c, d| match (c.is_key, c.nullable, d.text()) {
                (false, false, Ok(None)) => Ok(c.ty.zero()),
                _ => Self::cell(c, d, false),
            },
        )
    }

    /// The `Key` record of a row (or of an old key tuple).
    pub fn key(&self, tuple: &Tuple) -> Result<Value, RowError> {
        self.key_of(&tuple.0)
    }

    /// The `Key` record of a row given as cells.
    pub(crate) fn key_of<C: Cell>(&self, cells: &[C]) -> Result<Value, RowError> {
        self.record(cells, |c| c.is_key, |c, d| Self::cell(c, d, true))
    }

    /// The envelope value for one change; `processed_us` is the processing time (microseconds
    /// since the epoch) for `ts_ms`, `ts_us` and `ts_ns`.
    pub fn envelope(
        &self,
        before: Option<Value>,
        after: Option<Value>,
        op: &str,
        mut source: SourceInfo,
        processed_us: i64,
    ) -> Value {
        Value::Record(vec![
            ("before".into(), opt(before)),
            ("after".into(), opt(after)),
            (
                "source".into(),
                source_value(
                    &self.source,
                    &self.database,
                    &self.schema,
                    &self.table,
                    &mut source,
                ),
            ),
            ("transaction".into(), transaction_value(source.transaction)),
            ("op".into(), Value::String(op.into())),
            (
                "ts_ms".into(),
                opt_long(Some(processed_us.div_euclid(1000))),
            ),
            ("ts_us".into(), opt_long(Some(processed_us))),
            (
                "ts_ns".into(),
                opt_long(Some(processed_us.saturating_mul(1000))),
            ),
        ])
    }
}

/// Avro binary straight from a change's cells, without a `Value` tree: the same bytes as the
/// tree methods above written by [`datum::write_ordered`] (checked by the tests), at a fraction
/// of the allocations (no record vectors, field names or union boxes per row). An `Err`
/// means only that this writer cannot say: the caller builds the tree instead, which gives the
/// canonical error (or handles a value kind this writer does not).
impl TableSchema {
    fn write_cell(
        col: &TableColumn,
        cell: &impl Cell,
        required: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        let union = col.nullable && !required;
        let bytes = match cell.text() {
            Ok(Some(bytes)) => bytes,
            Ok(None) if union => {
                datum::zigzag(0, out);
                return Ok(());
            }
            Ok(None) => return Err(RowError::NullInNotNull(col.name.clone())),
            Err(_) => return Err(RowError::NotText(col.name.clone())),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| RowError::NotText(col.name.clone()))?;
        if union {
            datum::zigzag(1, out);
        }
        if let ColumnType::String { .. } = col.ty {
            datum::bytes(text.as_bytes(), out);
            return Ok(());
        }
        let value = col.ty.parse(text).map_err(|source| RowError::Type {
            column: col.name.clone(),
            source,
        })?;
        if datum::write_ordered(&value, out) {
            Ok(())
        } else {
            Err(RowError::NotText(col.name.clone()))
        }
    }

    fn write_record<C: Cell>(
        &self,
        cells: &[C],
        pick: impl Fn(&TableColumn) -> bool,
        cell: impl Fn(&TableColumn, &C, &mut Vec<u8>) -> Result<(), RowError>,
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        if cells.len() != self.columns.len() {
            return Err(RowError::Arity {
                got: cells.len(),
                want: self.columns.len(),
            });
        }
        for (c, d) in self.columns.iter().zip(cells) {
            if pick(c) {
                cell(c, d, out)?;
            }
        }
        Ok(())
    }

    /// [`TableSchema::row_of`], written.
    pub(crate) fn write_row<C: Cell>(
        &self,
        cells: &[C],
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        self.write_record(
            cells,
            |_| true,
            |c, d, o| Self::write_cell(c, d, false, o),
            out,
        )
    }

    /// [`TableSchema::key_only_row`], written.
    pub(crate) fn write_key_only_row<C: Cell>(
        &self,
        cells: &[C],
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        self.write_record(
            cells,
            |_| true,
            |c, d, o| match (c.is_key, c.nullable, d.text()) {
                (false, false, Ok(None)) => {
                    if datum::write_ordered(&c.ty.zero(), o) {
                        Ok(())
                    } else {
                        Err(RowError::NotText(c.name.clone()))
                    }
                }
                _ => Self::write_cell(c, d, false, o),
            },
            out,
        )
    }

    /// [`TableSchema::key_of`], written.
    pub(crate) fn write_key<C: Cell>(
        &self,
        cells: &[C],
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        self.write_record(
            cells,
            |c| c.is_key,
            |c, d, o| Self::write_cell(c, d, true, o),
            out,
        )
    }

    /// [`TableSchema::envelope`], written: `before` with whether it holds only the key.
    pub(crate) fn write_envelope<C: Cell>(
        &self,
        before: Option<(&[C], bool)>,
        after: Option<&[C]>,
        op: &str,
        source: SourceInfo,
        processed_us: i64,
        out: &mut Vec<u8>,
    ) -> Result<(), RowError> {
        match before {
            None => datum::zigzag(0, out),
            Some((cells, key_only)) => {
                datum::zigzag(1, out);
                if key_only {
                    self.write_key_only_row(cells, out)?;
                } else {
                    self.write_row(cells, out)?;
                }
            }
        }
        match after {
            None => datum::zigzag(0, out),
            Some(cells) => {
                datum::zigzag(1, out);
                self.write_row(cells, out)?;
            }
        }
        let some_long = |v: Option<i64>, out: &mut Vec<u8>| match v {
            Some(v) => {
                datum::zigzag(1, out);
                datum::zigzag(v, out);
            }
            None => datum::zigzag(0, out),
        };
        // `source`, as [`source_value`].
        datum::bytes(env!("CARGO_PKG_VERSION").as_bytes(), out);
        datum::bytes(b"postgresql", out);
        datum::bytes(self.source.as_bytes(), out);
        datum::zigzag(source.ts_ms, out);
        datum::bytes(source.snapshot.as_bytes(), out);
        datum::bytes(self.database.as_bytes(), out);
        match &source.sequence {
            Some(seq) => {
                datum::zigzag(1, out);
                datum::bytes(seq.as_bytes(), out);
            }
            None => datum::zigzag(0, out),
        }
        some_long(Some(source.ts_us), out);
        some_long(Some(source.ts_us.saturating_mul(1000)), out);
        datum::bytes(self.schema.as_bytes(), out);
        datum::bytes(self.table.as_bytes(), out);
        some_long(source.tx_id, out);
        some_long(source.lsn, out);
        some_long(None, out); // xmin
        datum::zigzag(0, out); // origin
        some_long(None, out); // origin_lsn
        // `transaction`, as [`transaction_value`].
        match &source.transaction {
            Some(t) => {
                datum::zigzag(1, out);
                datum::bytes(t.id.as_bytes(), out);
                datum::zigzag(t.total_order, out);
                datum::zigzag(t.data_collection_order, out);
            }
            None => datum::zigzag(0, out),
        }
        datum::bytes(op.as_bytes(), out);
        some_long(Some(processed_us.div_euclid(1000)), out);
        some_long(Some(processed_us), out);
        some_long(Some(processed_us.saturating_mul(1000)), out);
        Ok(())
    }
}

/// The value schema of logical decoding messages: Debezium's
/// `io.debezium.connector.postgresql.MessageValue` (`op` "m", `source`, and `message` with the
/// prefix and the content as bytes).
pub(crate) fn message_value_schema() -> Json {
    json!({
        "type": "record",
        "name": "MessageValue",
        "namespace": "io.debezium.connector.postgresql",
        "connect.name": "io.debezium.connector.postgresql.MessageValue",
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null},
            {"name": "source", "type": source_schema()},
            {"name": "transaction", "type": ["null", transaction_schema()], "default": null},
            {"name": "message", "type": {
                "type": "record",
                "name": "Message",
                "connect.name": "io.debezium.connector.postgresql.Message",
                "fields": [
                    {"name": "prefix", "type": "string"},
                    {"name": "content", "type": "bytes"}
                ]
            }}
        ]
    })
}

/// The key schema of logical decoding messages: `MessageKey` with the prefix.
pub(crate) fn message_key_schema() -> Json {
    json!({
        "type": "record",
        "name": "MessageKey",
        "namespace": "io.debezium.connector.postgresql",
        "connect.name": "io.debezium.connector.postgresql.MessageKey",
        "fields": [{"name": "prefix", "type": ["null", "string"], "default": null}]
    })
}

/// The value of one logical decoding message. `schema` and `table` of the source block are
/// empty: a message belongs to no table.
pub(crate) fn message_value(
    source_name: &str,
    database: &str,
    prefix: &str,
    content: &[u8],
    mut source: SourceInfo,
    processed_ms: i64,
) -> Value {
    Value::Record(vec![
        ("op".into(), Value::String("m".into())),
        ("ts_ms".into(), opt_long(Some(processed_ms))),
        (
            "source".into(),
            source_value(source_name, database, "", "", &mut source),
        ),
        ("transaction".into(), transaction_value(source.transaction)),
        (
            "message".into(),
            Value::Record(vec![
                ("prefix".into(), Value::String(prefix.into())),
                ("content".into(), Value::Bytes(content.to_vec())),
            ]),
        ),
    ])
}

/// The key of one logical decoding message.
pub(crate) fn message_key(prefix: &str) -> Value {
    Value::Record(vec![(
        "prefix".into(),
        Value::Union(1, Box::new(Value::String(prefix.into()))),
    )])
}

/// `io.debezium.connector.postgresql.Source`
fn source_schema() -> Json {
    json!({
        "type": "record",
        "name": "Source",
        "namespace": "io.debezium.connector.postgresql",
        "connect.name": "io.debezium.connector.postgresql.Source",
        "fields": [
            {"name": "version", "type": "string"},
            {"name": "connector", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "ts_ms", "type": "long"},
            {"name": "snapshot", "type": "string", "default": "false"},
            {"name": "db", "type": "string"},
            {"name": "sequence", "type": ["null", "string"], "default": null},
            {"name": "ts_us", "type": ["null", "long"], "default": null},
            {"name": "ts_ns", "type": ["null", "long"], "default": null},
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            {"name": "txId", "type": ["null", "long"], "default": null},
            {"name": "lsn", "type": ["null", "long"], "default": null},
            {"name": "xmin", "type": ["null", "long"], "default": null},
            {"name": "origin", "type": ["null", "string"], "default": null},
            {"name": "origin_lsn", "type": ["null", "long"], "default": null}
        ]
    })
}

/// Debezium's transaction block, `event.block`.
fn transaction_schema() -> Json {
    json!({
        "type": "record",
        "name": "block",
        "namespace": "event",
        "connect.name": "event.block",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "total_order", "type": "long"},
            {"name": "data_collection_order", "type": "long"}
        ]
    })
}

fn opt(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn opt_long(v: Option<i64>) -> Value {
    opt(v.map(Value::Long))
}

/// The `source` record, fields in [`source_schema`]'s order.
/// Takes the sequence out of `s`.
fn source_value(
    name: &str,
    database: &str,
    schema: &str,
    table: &str,
    s: &mut SourceInfo,
) -> Value {
    Value::Record(vec![
        (
            "version".into(),
            Value::String(env!("CARGO_PKG_VERSION").into()),
        ),
        ("connector".into(), Value::String("postgresql".into())),
        ("name".into(), Value::String(name.into())),
        ("ts_ms".into(), Value::Long(s.ts_ms)),
        ("snapshot".into(), Value::String(s.snapshot.into())),
        ("db".into(), Value::String(database.into())),
        ("sequence".into(), opt(s.sequence.take().map(Value::String))),
        ("ts_us".into(), opt_long(Some(s.ts_us))),
        ("ts_ns".into(), opt_long(Some(s.ts_us.saturating_mul(1000)))),
        ("schema".into(), Value::String(schema.into())),
        ("table".into(), Value::String(table.into())),
        ("txId".into(), opt_long(s.tx_id)),
        ("lsn".into(), opt_long(s.lsn)),
        ("xmin".into(), opt_long(None)),
        ("origin".into(), opt(None)),
        ("origin_lsn".into(), opt_long(None)),
    ])
}

/// The envelope's `transaction` field.
fn transaction_value(block: Option<TransactionBlock>) -> Value {
    opt(block.map(|t| {
        Value::Record(vec![
            ("id".into(), Value::String(t.id)),
            ("total_order".into(), Value::Long(t.total_order)),
            (
                "data_collection_order".into(),
                Value::Long(t.data_collection_order),
            ),
        ])
    }))
}

#[cfg(test)]
mod tests;
