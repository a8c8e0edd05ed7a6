//! Read-only catalog queries shared by the source and the CLI: which tables a source streams,
//! and each table's shape as the stream sees it (the columns pgoutput sends, with the same key
//! flags and nullability), so `switchyard check --registry` and `switchyard lineage --live`
//! build exactly the schemas and table lists the running source would. The stream's relations
//! ([`relation`]), the snapshot and the CLI ([`describe`]) all take their key columns and
//! nullability from [`columns`] here.
//!
//! The Kafka key is the table's primary key whatever its replica identity ([`key_columns`]);
//! nullability is the column's own (`NOT NULL` or not), never derived from the key.
//!
//! Nothing here writes: no publication or slot is created.

use tokio_postgres::Client;

use super::pgoutput::Relation;
use super::stream::{KnownRelation, SourceError, sql};
use crate::config::PostgresSourceConfig;
use crate::event::ChangeColumn;

/// A table as the catalog describes it.
pub(crate) struct DescribedTable {
    /// The table's oid.
    pub oid: u32,
    /// `pg_class.reltuples` (-1 when never analysed).
    pub reltuples: i64,
    /// The publication's row filter (PostgreSQL 15+), if any.
    pub row_filter: Option<String>,
    /// Columns as the stream sends them.
    pub relation: KnownRelation,
}

/// A table's `REPLICA IDENTITY` (`pg_class.relreplident`): which columns of the old row the
/// WAL holds for updates and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key's columns (nothing without a primary key).
    Default,
    /// `i`: the columns of the `USING INDEX` index.
    Index,
    /// `f`: every column.
    Full,
    /// `n`: nothing.
    Nothing,
}

impl ReplicaIdentity {
    /// From `pg_class.relreplident`.
    pub(crate) fn from_relreplident(code: &str) -> ReplicaIdentity {
        match code {
            "i" => ReplicaIdentity::Index,
            "f" => ReplicaIdentity::Full,
            "n" => ReplicaIdentity::Nothing,
            _ => ReplicaIdentity::Default,
        }
    }
}

/// The key columns of a table, by name, from its catalog facts:
///
/// - the primary key's columns, whatever the replica identity (so a table keeps its key when
///   it moves to `REPLICA IDENTITY FULL`);
/// - except under `REPLICA IDENTITY USING INDEX` on an index that lacks a primary-key column:
///   the old row of a delete then carries only the index's columns, so the index's columns
///   are the key (the only key every record of the row can carry);
/// - without a primary key, the replica identity: the `USING INDEX` columns, every column of
///   `columns` under `FULL`, none under `DEFAULT` or `NOTHING` (no key).
///
/// A route's `key = [...]` replaces this (see `debezium::shapes::table_schema`).
pub(crate) fn key_columns(
    identity: ReplicaIdentity,
    primary_key: &[String],
    identity_index: &[String],
    columns: &[String],
) -> Vec<String> {
    let index_lacks_pk = identity == ReplicaIdentity::Index
        && primary_key.iter().any(|k| !identity_index.contains(k));
    if !primary_key.is_empty() && !index_lacks_pk {
        return primary_key.to_vec();
    }
    match identity {
        ReplicaIdentity::Index => identity_index.to_vec(),
        ReplicaIdentity::Full => columns.to_vec(),
        ReplicaIdentity::Default | ReplicaIdentity::Nothing => Vec::new(),
    }
}

/// One column of a table, as `pg_attribute` has it.
#[derive(Debug, Clone)]
struct CatalogColumn {
    name: String,
    type_oid: u32,
    type_modifier: i32,
    not_null: bool,
    doc: Option<String>,
}

/// What the catalog says about a table now: its identity, keys, comment and columns
/// (generated columns left out: pgoutput never sends them).
struct TableFacts {
    identity: ReplicaIdentity,
    /// Primary-key columns in index order (empty: none).
    primary_key: Vec<String>,
    /// Columns of the `REPLICA IDENTITY USING INDEX` index (empty otherwise).
    identity_index: Vec<String>,
    table_doc: Option<String>,
    columns: Vec<CatalogColumn>,
}

/// The catalog's facts about table `oid`; `None` when the table no longer exists.
async fn facts(conn: &Client, oid: u32) -> Result<Option<TableFacts>, SourceError> {
    let rel = conn
        .query_opt(
            "SELECT c.relreplident::text, obj_description(c.oid, 'pg_class'),
                    ARRAY(SELECT a.attname::text
                          FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                          JOIN pg_attribute a ON a.attnum = k.attnum
                          WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid
                          ORDER BY k.n),
                    ARRAY(SELECT a.attname::text
                          FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                          JOIN pg_attribute a ON a.attnum = k.attnum
                          WHERE i.indrelid = c.oid AND i.indisreplident AND a.attrelid = c.oid
                          ORDER BY k.n)
             FROM pg_class c WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(sql)?;
    let Some(rel) = rel else {
        return Ok(None);
    };
    let identity: String = rel.get(0);
    let attrs = conn
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                    col_description(a.attrelid, a.attnum)
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql)?;
    Ok(Some(TableFacts {
        identity: ReplicaIdentity::from_relreplident(&identity),
        table_doc: rel.get(1),
        primary_key: rel.get(2),
        identity_index: rel.get(3),
        columns: attrs
            .iter()
            .map(|a| CatalogColumn {
                name: a.get(0),
                type_oid: a.get(1),
                type_modifier: a.get(2),
                not_null: a.get(3),
                doc: a.get(4),
            })
            .collect(),
    }))
}

/// The columns `sent` (name, type oid, type modifier, in the order the tuples hold them) with
/// key flags from [`key_columns`] and nullability and comments from the catalog. A column the
/// catalog no longer has (dropped since the change was written) is nullable and no key.
fn columns(facts: &TableFacts, sent: &[(String, u32, i32)]) -> Vec<ChangeColumn> {
    let names: Vec<String> = sent.iter().map(|(n, _, _)| n.clone()).collect();
    let key = key_columns(
        facts.identity,
        &facts.primary_key,
        &facts.identity_index,
        &names,
    );
    sent.iter()
        .map(|(name, type_oid, type_modifier)| {
            let known = facts.columns.iter().find(|c| &c.name == name);
            ChangeColumn {
                name: name.clone(),
                type_oid: *type_oid,
                type_modifier: *type_modifier,
                nullable: !known.is_some_and(|c| c.not_null),
                is_key: known.is_some() && key.contains(name),
                doc: known.and_then(|c| c.doc.clone()),
            }
        })
        .collect()
}

/// A relation of the replication stream as the source knows it: pgoutput's columns (names,
/// types, order: what the tuples hold), with key flags and nullability by the same rules as
/// [`describe`].
///
/// A table dropped since the change was written (its changes are still in the slot) has no
/// catalog left: its key is then the replica identity pgoutput flags (under `DEFAULT`, the
/// primary key), every column nullable.
pub async fn relation(conn: &Client, rel: &Relation) -> Result<KnownRelation, SourceError> {
    let sent: Vec<(String, u32, i32)> = rel
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
        .collect();
    let facts = match facts(conn, rel.oid).await? {
        Some(f) => f,
        None => {
            use super::pgoutput::ReplicaIdentity as Wire;
            let flagged: Vec<String> = rel
                .columns
                .iter()
                .filter(|c| c.is_key)
                .map(|c| c.name.clone())
                .collect();
            TableFacts {
                identity: match rel.replica_identity {
                    Wire::Full => ReplicaIdentity::Full,
                    Wire::Nothing => ReplicaIdentity::Nothing,
                    Wire::Default | Wire::Index => ReplicaIdentity::Index,
                },
                primary_key: Vec::new(),
                identity_index: flagged,
                table_doc: None,
                columns: sent
                    .iter()
                    .map(|(name, type_oid, type_modifier)| CatalogColumn {
                        name: name.clone(),
                        type_oid: *type_oid,
                        type_modifier: *type_modifier,
                        not_null: false,
                        doc: None,
                    })
                    .collect(),
            }
        }
    };
    Ok(KnownRelation {
        schema: rel.namespace.clone(),
        table: rel.name.clone(),
        columns: columns(&facts, &sent).into(),
        table_doc: facts.table_doc,
    })
}

/// The table's columns as pgoutput describes them: the publication's column list (PostgreSQL
/// 15+), generated columns left out; key flags and nullability as in [`relation`].
pub(crate) async fn describe(
    conn: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<DescribedTable, SourceError> {
    let rel = conn
        .query_opt(
            "SELECT c.oid, c.reltuples::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(sql)?
        .ok_or_else(|| SourceError::NoTable(format!("{schema}.{table}")))?;
    let oid: u32 = rel.get(0);
    let reltuples: i64 = rel.get(1);
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
    let facts = facts(conn, oid)
        .await?
        .ok_or_else(|| SourceError::NoTable(format!("{schema}.{table}")))?;
    let sent: Vec<(String, u32, i32)> = facts
        .columns
        .iter()
        .filter(|c| columns_filter.as_ref().is_none_or(|f| f.contains(&c.name)))
        .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
        .collect();
    Ok(DescribedTable {
        oid,
        reltuples,
        row_filter,
        relation: KnownRelation {
            schema: schema.to_string(),
            table: table.to_string(),
            columns: columns(&facts, &sent).into(),
            table_doc: facts.table_doc,
        },
    })
}

/// A published table whose unchanged TOASTed values are not in the WAL: it has columns that
/// can be stored out of line (`attstorage` other than `p`) and no `REPLICA IDENTITY FULL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToastRisk {
    /// `schema.table`, quoted where SQL needs it.
    pub table: String,
    /// The TOAST-able columns.
    pub columns: Vec<String>,
    /// The statement that puts every old value in the WAL.
    pub fix: String,
}

/// The published tables of `publication` whose unchanged TOASTed values may be unavailable
/// (see [`ToastRisk`]), sorted by name.
pub async fn toast_risks(conn: &Client, publication: &str) -> Result<Vec<ToastRisk>, SourceError> {
    let rows = conn
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname),
                    array_agg(a.attname::text ORDER BY a.attnum),
                    format('ALTER TABLE %I.%I REPLICA IDENTITY FULL', n.nspname, c.relname)
             FROM pg_publication_tables p
             JOIN pg_namespace n ON n.nspname = p.schemaname
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             JOIN pg_type t ON t.oid = a.atttypid
             WHERE p.pubname = $1 AND c.relreplident <> 'f'
               AND a.attstorage <> 'p' AND t.typlen = -1 AND a.attgenerated = ''
             GROUP BY n.nspname, c.relname
             ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(sql)?;
    Ok(rows
        .iter()
        .map(|r| ToastRisk {
            table: r.get(0),
            columns: r.get(1),
            fix: r.get(2),
        })
        .collect())
}

/// Where a source's table list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TablesFrom {
    /// The source's publication (`pg_publication_tables`): what it streams.
    Publication,
    /// The publication does not exist yet: the tables the configured `tables` select today
    /// (what the publication will hold once the source creates it).
    Configuration,
}

/// The tables a source streams, as `(schema, table)`, sorted: the publication's tables, or,
/// before the source has created its publication, the existing tables its `tables` and
/// `exclude_tables` select.
pub(crate) async fn live_tables(
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
    let desired = super::publication::desired(conn, &cfg.selection).await?;
    let mut out: Vec<(String, String)> = desired.tables.into_iter().collect();
    if !desired.schemas.is_empty() {
        let schemas: Vec<String> = desired.schemas.into_iter().collect();
        let rows = conn
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_tables WHERE schemaname = ANY($1)",
                &[&schemas],
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

#[cfg(test)]
mod tests {
    use super::{ReplicaIdentity as Ri, key_columns};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_key_is_the_primary_key_whatever_the_replica_identity() {
        let pk = names(&["tenant", "id"]);
        let all = names(&["tenant", "id", "note", "body"]);
        for identity in [Ri::Default, Ri::Full, Ri::Nothing] {
            assert_eq!(key_columns(identity, &pk, &[], &all), pk, "{identity:?}");
        }
        // An identity index that holds the primary key's columns keeps the primary key.
        let wide = names(&["id", "tenant", "note"]);
        assert_eq!(key_columns(Ri::Index, &pk, &wide, &all), pk);
    }

    #[test]
    fn without_a_primary_key_the_replica_identity_is_the_key() {
        let all = names(&["email", "note"]);
        let index = names(&["email"]);
        assert_eq!(key_columns(Ri::Index, &[], &index, &all), index);
        assert_eq!(key_columns(Ri::Full, &[], &[], &all), all);
        assert!(key_columns(Ri::Default, &[], &[], &all).is_empty());
        assert!(key_columns(Ri::Nothing, &[], &[], &all).is_empty());
    }

    #[test]
    fn an_identity_index_without_the_primary_key_is_the_key_deletes_can_carry() {
        let pk = names(&["id"]);
        let index = names(&["email"]);
        let all = names(&["id", "email"]);
        assert_eq!(key_columns(Ri::Index, &pk, &index, &all), index);
    }

    #[test]
    fn relreplident_codes() {
        assert_eq!(Ri::from_relreplident("d"), Ri::Default);
        assert_eq!(Ri::from_relreplident("i"), Ri::Index);
        assert_eq!(Ri::from_relreplident("f"), Ri::Full);
        assert_eq!(Ri::from_relreplident("n"), Ri::Nothing);
    }
}
