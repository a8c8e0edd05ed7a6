//! The rows of a decoded pgoutput change message: which row changes it holds, their column
//! values as text, and unchanged TOASTed values read back from the table by primary key, or,
//! when they cannot be, replaced by the source's placeholder.

use tokio_postgres::Client;

use super::pgoutput::{Datum, Message, OldTuple, Tuple};
use super::stream::{KnownRelation, SourceError};
use crate::debezium::types::{ColumnType, column_type};
use crate::event::ChangeColumn;
use crate::event::ChangeOp;

/// One row change of a message.
pub(super) struct RowChange {
    pub(super) relation: u32,
    pub(super) op: ChangeOp,
    pub(super) before: Option<Tuple>,
    pub(super) after: Option<Tuple>,
    /// `before` holds only the replica identity's columns (REPLICA IDENTITY DEFAULT or USING
    /// INDEX); otherwise it is the whole old row (FULL), which also fills unchanged TOASTed
    /// values of `after`.
    pub(super) before_key_only: bool,
}

impl RowChange {
    /// The whole old row, when the server sent one (REPLICA IDENTITY FULL).
    pub(super) fn old_full(&self) -> Option<&Tuple> {
        self.before.as_ref().filter(|_| !self.before_key_only)
    }
}

/// The row changes of `msg`, taking its tuples (nothing is copied but a deleted row's old
/// tuple for its tombstone).
pub(super) fn changes(msg: Message, tombstones: bool) -> Vec<RowChange> {
    let change = |relation, op, before: Option<OldTuple>, after: Option<Tuple>| {
        let (before, before_key_only) = match before {
            Some(OldTuple::Full(t)) => (Some(t), false),
            Some(OldTuple::Key(t)) => (Some(t), true),
            None => (None, false),
        };
        RowChange {
            relation,
            op,
            before,
            after,
            before_key_only,
        }
    };
    match msg {
        Message::Insert(i) => vec![change(i.relation, ChangeOp::Create, None, Some(i.new))],
        Message::Update(u) => vec![change(u.relation, ChangeOp::Update, u.old, Some(u.new))],
        Message::Delete(d) if tombstones => vec![
            change(d.relation, ChangeOp::Delete, Some(d.old.clone()), None),
            change(d.relation, ChangeOp::Tombstone, Some(d.old), None),
        ],
        Message::Delete(d) => vec![change(d.relation, ChangeOp::Delete, Some(d.old), None)],
        Message::Truncate(t) => t
            .relations
            .iter()
            .map(|r| change(*r, ChangeOp::Truncate, None, None))
            .collect(),
        _ => Vec::new(),
    }
}

/// Text values of a tuple, taking its bytes (valid UTF-8, as the server sends text, is not
/// copied); an unchanged TOASTed value is taken from the old row when REPLICA IDENTITY FULL
/// sent one.
pub(super) fn text_row(t: Tuple, old: Option<&Tuple>) -> Vec<Option<String>> {
    let text = |b: Vec<u8>| {
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    };
    t.0.into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Datum::Text(b) | Datum::Binary(b) => Some(text(b)),
            Datum::Null => None,
            Datum::UnchangedToast => match old.and_then(|o| o.0.get(i)) {
                Some(Datum::Text(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
        })
        .collect()
}

/// Names of unchanged TOASTed columns that the old row cannot fill in.
pub(super) fn unfilled(t: &Tuple, old: Option<&Tuple>, columns: &[ChangeColumn]) -> Vec<String> {
    t.0.iter()
        .enumerate()
        .filter(|(i, d)| {
            matches!(d, Datum::UnchangedToast)
                && !matches!(old.and_then(|o| o.0.get(*i)), Some(Datum::Text(_)))
        })
        .filter_map(|(i, _)| columns.get(i).map(|c| c.name.clone()))
        .collect()
}

/// Fills unchanged TOASTed columns that no old row carried by reading them by the table's key
/// (its primary key, see `catalog::key_columns`).
///
/// Chosen over a per-key cache because it works for every row that still exists, not only rows
/// this process saw before; the price is that the value read may be newer than the change (a
/// later update of the same column). Returns the columns that still could not be read (the row
/// is gone, the table or column was dropped or renamed, the table has no key): the caller
/// gives them the placeholder ([`placeholders`]) and names them in the
/// `switchyard.unchanged_toast` header. A failure of the connection itself is an error: the
/// session restarts and reads the change again, rather than sending a placeholder for a value
/// that could have been read.
pub(super) async fn fill_toast(
    client: &Client,
    rel: &KnownRelation,
    row: &mut [Option<String>],
    missing: Vec<String>,
) -> Result<Vec<String>, SourceError> {
    let quote_ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let quote_literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut conditions = Vec::new();
    for (i, c) in rel.columns.iter().enumerate() {
        if c.is_key {
            match row.get(i).and_then(Clone::clone) {
                Some(v) => {
                    conditions.push(format!("{} = {}", quote_ident(&c.name), quote_literal(&v)))
                }
                None => return Ok(missing),
            }
        }
    }
    if conditions.is_empty() {
        return Ok(missing);
    }
    let select: Vec<String> = missing
        .iter()
        .map(|c| format!("{}::text", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {}",
        select.join(", "),
        quote_ident(&rel.schema),
        quote_ident(&rel.table),
        conditions.join(" AND ")
    );
    let messages = match client.simple_query(&sql).await {
        Ok(m) => m,
        Err(e) if cannot_be_read(&e) => return Ok(missing),
        Err(e) => return Err(super::stream::sql(e)),
    };
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            for (j, name) in missing.iter().enumerate() {
                if let Some(i) = rel.columns.iter().position(|c| &c.name == name)
                    && let Some(slot) = row.get_mut(i)
                {
                    *slot = r.get(j).map(str::to_string);
                }
            }
            return Ok(Vec::new());
        }
    }
    Ok(missing)
}

/// The read-back failed because of what the table is now (dropped, renamed, a column gone or
/// retyped, a key value that no longer compares): reading again would fail again.
fn cannot_be_read(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    matches!(code, "42P01" | "42703" | "3F000" | "42883" | "42804") || code.starts_with("22")
}

/// Gives each column of `unfilled` (unchanged TOASTed values that could not be read) the
/// placeholder `placeholder`, as text its column type parses (Debezium's
/// `unavailable.value.placeholder`):
///
/// - string columns (text, varchar, json/jsonb, xml, enums and other types sent as strings):
///   the placeholder as UTF-8 text (invalid sequences replaced);
/// - bytea: the placeholder's bytes;
/// - arrays of strings: an array of one element, the placeholder;
/// - every other type (arrays of numbers, numeric(p,s), …), which cannot hold it: null when the
///   column is nullable, else the type's zero value (0, `{}`, the epoch), as for the columns of
///   a key-only old row.
///
/// Never leaves a NOT NULL column null, so the change always encodes.
pub(super) fn placeholders(
    columns: &[ChangeColumn],
    row: &mut [Option<String>],
    unfilled: &[String],
    placeholder: &[u8],
) {
    for (i, c) in columns.iter().enumerate() {
        if !unfilled.contains(&c.name) {
            continue;
        }
        if let Some(slot) = row.get_mut(i) {
            *slot = placeholder_text(
                &column_type(c.type_oid, c.type_modifier),
                c.nullable,
                placeholder,
            );
        }
    }
}

/// The pgoutput text value that stands for an unavailable value of type `ty` (see
/// [`placeholders`]); `None` is SQL NULL.
fn placeholder_text(ty: &ColumnType, nullable: bool, placeholder: &[u8]) -> Option<String> {
    let text = || String::from_utf8_lossy(placeholder).into_owned();
    match ty {
        ColumnType::String { .. } => Some(text()),
        ColumnType::Bytes => Some(format!("\\x{}", hex::encode(placeholder))),
        ColumnType::Array(elem) if matches!(**elem, ColumnType::String { .. }) => Some(format!(
            "{{\"{}\"}}",
            text().replace('\\', "\\\\").replace('"', "\\\"")
        )),
        _ if nullable => None,
        ColumnType::Array(_) => Some("{}".into()),
        ColumnType::Int | ColumnType::Long | ColumnType::Float | ColumnType::Double => {
            Some("0".into())
        }
        ColumnType::Decimal { .. } => Some("0".into()),
        ColumnType::Boolean => Some("f".into()),
        ColumnType::Date => Some("1970-01-01".into()),
        ColumnType::TimeMicros => Some("00:00:00".into()),
        ColumnType::TimestampMicros => Some("1970-01-01 00:00:00".into()),
        ColumnType::ZonedTimestamp => Some("1970-01-01 00:00:00+00".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_oid: u32, type_modifier: i32, nullable: bool) -> ChangeColumn {
        ChangeColumn {
            name: name.into(),
            type_oid,
            type_modifier,
            nullable,
            is_key: name == "id",
            doc: None,
        }
    }

    #[test]
    fn every_type_gets_a_placeholder_it_parses_and_not_null_columns_are_never_null() {
        let numeric = (10 << 16 | 2) + 4;
        let columns = [
            col("id", 23, -1, false),
            col("body", 25, -1, false),
            col("doc", 3802, -1, true),
            col("blob", 17, -1, false),
            col("tags", 1009, -1, false),
            col("scores", 1007, -1, false),
            col("maybe_scores", 1007, -1, true),
            col("amount", 1700, numeric, false),
            col("kept", 25, -1, true),
        ];
        let mut row: Vec<Option<String>> = vec![Some("7".into()); columns.len()];
        let unfilled: Vec<String> = columns[1..8].iter().map(|c| c.name.clone()).collect();
        placeholders(&columns, &mut row, &unfilled, b"__x\"y");
        assert_eq!(row[0].as_deref(), Some("7"), "other columns are left alone");
        assert_eq!(row[8].as_deref(), Some("7"), "other columns are left alone");
        assert_eq!(row[1].as_deref(), Some("__x\"y"));
        assert_eq!(row[2].as_deref(), Some("__x\"y"));
        assert_eq!(row[3].as_deref(), Some("\\x5f5f782279"));
        assert_eq!(row[4].as_deref(), Some("{\"__x\\\"y\"}"));
        assert_eq!(row[5].as_deref(), Some("{}"));
        assert_eq!(
            row[6], None,
            "a nullable column that cannot hold it is null"
        );
        assert_eq!(row[7].as_deref(), Some("0"));
        // Each value parses as its column's type.
        for (c, v) in columns.iter().zip(&row) {
            if let Some(text) = v {
                let parsed = column_type(c.type_oid, c.type_modifier)
                    .parse(text)
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name));
                if c.name == "blob" {
                    assert_eq!(parsed, apache_avro::types::Value::Bytes(b"__x\"y".to_vec()));
                }
                if c.name == "tags" {
                    assert_eq!(
                        parsed,
                        apache_avro::types::Value::Array(vec![apache_avro::types::Value::Union(
                            1,
                            Box::new(apache_avro::types::Value::String("__x\"y".into()))
                        )])
                    );
                }
            }
        }
    }

    #[test]
    fn zero_values_of_types_that_cannot_hold_the_placeholder_parse() {
        for oid in [21, 23, 20, 700, 701, 16, 1082, 1083, 1114, 1184, 1016, 1000] {
            let ty = column_type(oid, -1);
            let text = placeholder_text(&ty, false, b"p").expect("not null");
            ty.parse(&text)
                .unwrap_or_else(|e| panic!("oid {oid}: {text:?}: {e}"));
            assert_eq!(placeholder_text(&ty, true, b"p"), None, "oid {oid}");
        }
    }
}
