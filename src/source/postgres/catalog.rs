//! Read-only catalog queries shared by the source and the CLI: which tables a source streams,
//! and each table's shape as the stream sees it (the columns pgoutput sends, with the same key
//! flags and nullability), so `switchyard check --registry` and `switchyard lineage --live`
//! build exactly the schemas and table lists the running source would.
//!
//! Nothing here writes: no publication or slot is created.

use tokio_postgres::Client;

use super::stream::{KnownRelation, SourceError, sql};
use crate::config::PostgresSourceConfig;
use crate::event::ChangeColumn;

/// A table as the catalog describes it.
pub struct DescribedTable {
    /// The table's oid.
    pub oid: u32,
    /// `pg_class.reltuples` (-1 when never analysed).
    pub reltuples: i64,
    /// The publication's row filter (PostgreSQL 15+), if any.
    pub row_filter: Option<String>,
    /// Columns as the stream sends them.
    pub relation: KnownRelation,
}

/// The table's columns as pgoutput describes them: the publication's column list (PostgreSQL
/// 15+), key flags from the replica identity, generated columns left out.
pub async fn describe(
    conn: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<DescribedTable, SourceError> {
    let rel = conn
        .query_opt(
            "SELECT c.oid, c.relreplident::text, obj_description(c.oid, 'pg_class'),
                    c.reltuples::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(sql)?
        .ok_or_else(|| SourceError::Sql(format!("table {schema}.{table} does not exist")))?;
    let oid: u32 = rel.get(0);
    let identity: String = rel.get(1);
    let table_doc: Option<String> = rel.get(2);
    let reltuples: i64 = rel.get(3);
    let (columns_filter, row_filter) = if conn
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 150000",
            &[],
        )
        .await
        .map_err(sql)?
        .get::<_, bool>(0)
    {
        // No row when the publication does not exist yet (`check --registry` before the
        // first start): then every column is sent.
        match conn
            .query_opt(
                "SELECT attnames::text[], rowfilter FROM pg_publication_tables
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&publication, &schema, &table],
            )
            .await
            .map_err(sql)?
        {
            Some(r) => (
                r.get::<_, Option<Vec<String>>>(0),
                r.get::<_, Option<String>>(1),
            ),
            None => (None, None),
        }
    } else {
        (None, None)
    };
    let attrs = conn
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                    col_description(a.attrelid, a.attnum),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid
                            AND i.indisprimary AND a.attnum = ANY (i.indkey)),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid
                            AND i.indisreplident AND a.attnum = ANY (i.indkey))
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql)?;
    let columns: Vec<ChangeColumn> = attrs
        .iter()
        .filter(|a| {
            columns_filter
                .as_ref()
                .is_none_or(|f| f.contains(&a.get::<_, String>(0)))
        })
        .map(|a| {
            let is_key = match identity.as_str() {
                "f" => true,
                "i" => a.get(6),
                "n" => false,
                _ => a.get(5),
            };
            let not_null: bool = a.get(3);
            ChangeColumn {
                name: a.get(0),
                type_oid: a.get(1),
                type_modifier: a.get(2),
                nullable: !not_null && !is_key,
                is_key,
                doc: a.get(4),
            }
        })
        .collect();
    Ok(DescribedTable {
        oid,
        reltuples,
        row_filter,
        relation: KnownRelation {
            schema: schema.to_string(),
            table: table.to_string(),
            table_doc,
            columns: columns.into(),
        },
    })
}

/// Where a source's table list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablesFrom {
    /// The source's publication (`pg_publication_tables`): what it streams.
    Publication,
    /// The publication does not exist yet: the tables the configured `tables` select today
    /// (what the publication will hold once the source creates it).
    Configuration,
}

/// The tables a source streams, as `(schema, table)`, sorted: the publication's tables, or,
/// before the source has created its publication, the existing tables its `tables`
/// selectors (`schema.table`, `schema.*`) name.
pub async fn live_tables(
    conn: &Client,
    cfg: &PostgresSourceConfig,
) -> Result<(TablesFrom, Vec<(String, String)>), SourceError> {
    let exists = conn
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(sql)?
        .is_some();
    if exists {
        let rows = conn
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables
                 WHERE pubname = $1 ORDER BY 1, 2",
                &[&cfg.publication],
            )
            .await
            .map_err(sql)?;
        return Ok((
            TablesFrom::Publication,
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        ));
    }
    let mut out = Vec::new();
    for t in &cfg.tables {
        let rows = conn
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_tables
                 WHERE schemaname = $1 AND ($2::text IS NULL OR tablename = $2)",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(sql)?;
        out.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    out.sort();
    out.dedup();
    Ok((TablesFrom::Configuration, out))
}

/// The name of the database the connection is on.
pub async fn database(conn: &Client) -> Result<String, SourceError> {
    Ok(conn
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(sql)?
        .get(0))
}
