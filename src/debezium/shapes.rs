//! What a change's shape makes, once per shape rather than per row: the table schema with its
//! column types, and the value and key schemas of its envelope.
//!
//! A [`ShapeCache`] belongs to one route: the route table holds it, a reload hands it to the
//! route of the same name (its entries are a function of their keys, so they cannot go stale,
//! and the same schema objects keep matching the encoder's registered ids by address), and it
//! goes when its route does. Nothing here is process-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::envelope::{TableColumn, TableSchema};
use super::types::column_type;
use crate::avro::AvroSchema;
use crate::event::{ChangeColumn, ChangePayload};

/// Shapes a cache keeps at most; past it, it starts again (shapes are few: tables × versions
/// × the key columns a route names).
pub(crate) const MAX_SHAPES: usize = 4096;

/// The table shape of a change; `key_columns`, when given, replace the primary key.
pub(crate) fn table_schema(source: &str, c: &ChangePayload, key_columns: &[String]) -> TableSchema {
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
                is_key: if key_columns.is_empty() {
                    col.is_key
                } else {
                    key_columns.contains(&col.name)
                },
                doc: col.doc.clone(),
            })
            .collect(),
    }
}

/// The value and key schemas of a table shape.
pub(crate) type Schemas = Arc<(AvroSchema, AvroSchema)>;

/// Everything about a change's shape that does not depend on its row: the table schema with
/// its column types, and the value and key schemas.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The table schema.
    pub table: TableSchema,
    /// Its value and key schemas.
    pub schemas: Schemas,
}

/// One cached shape. It holds the columns it was made for, so their address (the cache key)
/// cannot be reused by other columns while it is cached.
struct ShapeEntry {
    columns: Arc<[ChangeColumn]>,
    source: String,
    database: String,
    schema: String,
    table: String,
    doc: Option<String>,
    key_columns: Vec<String>,
    prepared: Arc<Prepared>,
}

/// The shapes one route has encoded, looked up two ways:
/// - by the address of the events' shared columns: every change of one relation version
///   shares them, so the lookup is a pointer hash and a few short compares, not a rebuild of
///   the table schema (its types and names) for every row;
/// - by structure, behind it: changes that do not share columns (read back from the DLQ) still
///   find the schemas built for their shape.
///
/// Each holds at most [`MAX_SHAPES`] entries.
#[derive(Default)]
pub struct ShapeCache {
    by_address: Mutex<(usize, HashMap<usize, Vec<ShapeEntry>>)>,
    by_shape: Mutex<HashMap<TableSchema, Schemas>>,
}

impl std::fmt::Debug for ShapeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShapeCache")
    }
}

/// A cache is not part of what a route is: any two compare equal.
impl PartialEq for ShapeCache {
    fn eq(&self, _: &ShapeCache) -> bool {
        true
    }
}

impl Eq for ShapeCache {}

impl ShapeCache {
    /// The prepared shape of change `c` of `source`, with `key_columns` (empty: the primary
    /// key).
    pub(crate) fn prepared(
        &self,
        source: &str,
        c: &ChangePayload,
        key_columns: &[String],
    ) -> Arc<Prepared> {
        let address = Arc::as_ptr(&c.columns).cast::<u8>() as usize;
        let matches = |e: &ShapeEntry| {
            Arc::ptr_eq(&e.columns, &c.columns)
                && e.key_columns == key_columns
                && e.source == source
                && e.table == c.table
                && e.schema == c.schema
                && e.database == c.database
                && e.doc == c.table_doc
        };
        if let Ok(cache) = self.by_address.lock()
            && let Some(e) = cache
                .1
                .get(&address)
                .and_then(|v| v.iter().find(|e| matches(e)))
        {
            return Arc::clone(&e.prepared);
        }
        let table = table_schema(source, c, key_columns);
        let prepared = Arc::new(Prepared {
            schemas: self.schemas(&table),
            table,
        });
        if let Ok(mut cache) = self.by_address.lock() {
            let (len, map) = &mut *cache;
            if *len >= MAX_SHAPES {
                map.clear();
                *len = 0;
            }
            *len += 1;
            map.entry(address).or_default().push(ShapeEntry {
                columns: Arc::clone(&c.columns),
                source: source.to_string(),
                database: c.database.clone(),
                schema: c.schema.clone(),
                table: c.table.clone(),
                doc: c.table_doc.clone(),
                key_columns: key_columns.to_vec(),
                prepared: Arc::clone(&prepared),
            });
        }
        prepared
    }

    /// The value and key schemas of `t`: built when a shape is first seen (a new table or a
    /// DDL change), not for every event.
    fn schemas(&self, t: &TableSchema) -> Schemas {
        let build = || {
            Arc::new((
                AvroSchema::from_json(&t.value_schema().to_string()),
                AvroSchema::from_json(&t.key_schema().to_string()),
            ))
        };
        let Ok(mut cache) = self.by_shape.lock() else {
            return build();
        };
        if let Some(s) = cache.get(t) {
            return Arc::clone(s);
        }
        if cache.len() >= MAX_SHAPES {
            cache.clear();
        }
        let s = build();
        cache.insert(t.clone(), Arc::clone(&s));
        s
    }

    /// Shapes held (by address; for tests and the cache's bound).
    pub fn len(&self) -> usize {
        self.by_address.lock().map_or(0, |c| c.0)
    }

    /// True when no shape is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
