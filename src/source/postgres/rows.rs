//! The rows of a decoded pgoutput change message: which row changes it holds, their column
//! values as text, and unchanged TOASTed values read back from the table by primary key.

use tokio_postgres::Client;

use super::pgoutput::{Datum, Message, OldTuple, Tuple};
use super::stream::KnownRelation;
use crate::event::ChangeColumn;

/// One row change of a message.
pub(super) struct RowChange {
    pub(super) relation: u32,
    pub(super) op: &'static str,
    pub(super) before: Option<Tuple>,
    pub(super) after: Option<Tuple>,
    pub(super) old_full: Option<Tuple>,
    pub(super) before_key_only: bool,
}

pub(super) fn changes(msg: &Message, tombstones: bool) -> Vec<RowChange> {
    let change = |relation, op, before: Option<&OldTuple>, after: Option<&Tuple>| {
        let (before, old_full, before_key_only) = match before {
            Some(OldTuple::Full(t)) => (Some(t.clone()), Some(t.clone()), false),
            Some(OldTuple::Key(t)) => (Some(t.clone()), None, true),
            None => (None, None, false),
        };
        RowChange {
            relation,
            op,
            before,
            after: after.cloned(),
            old_full,
            before_key_only,
        }
    };
    match msg {
        Message::Insert(i) => vec![change(i.relation, "c", None, Some(&i.new))],
        Message::Update(u) => vec![change(u.relation, "u", u.old.as_ref(), Some(&u.new))],
        Message::Delete(d) => {
            let mut out = vec![change(d.relation, "d", Some(&d.old), None)];
            if tombstones {
                out.push(change(d.relation, "tombstone", Some(&d.old), None));
            }
            out
        }
        Message::Truncate(t) => t
            .relations
            .iter()
            .map(|r| change(*r, "t", None, None))
            .collect(),
        _ => Vec::new(),
    }
}

/// Text values of a tuple; an unchanged TOASTed value is taken from the old row when REPLICA
/// IDENTITY FULL sent one.
pub(super) fn text_row(t: &Tuple, old: Option<&Tuple>) -> Vec<Option<String>> {
    t.0.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Datum::Text(b) | Datum::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
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

/// Fills unchanged TOASTed columns that no old row carried by reading them by primary key.
///
/// Chosen over a per-key cache because it works for every row that still exists, not only rows
/// this process saw before; the price is that the value read may be newer than the change (a
/// later update of the same column). Returns the columns that still could not be read (the row
/// is gone): they are sent as null and named in the `switchyard.unchanged_toast` header.
pub(super) async fn fill_toast(
    client: &Client,
    rel: &KnownRelation,
    row: &mut [Option<String>],
    missing: Vec<String>,
) -> Vec<String> {
    let quote_ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let quote_literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut conditions = Vec::new();
    for (i, c) in rel.columns.iter().enumerate() {
        if c.is_key {
            match row.get(i).and_then(Clone::clone) {
                Some(v) => {
                    conditions.push(format!("{} = {}", quote_ident(&c.name), quote_literal(&v)))
                }
                None => return missing,
            }
        }
    }
    if conditions.is_empty() {
        return missing;
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
    let Ok(messages) = client.simple_query(&sql).await else {
        return missing;
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
            return Vec::new();
        }
    }
    missing
}
