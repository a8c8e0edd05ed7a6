//! The publication follows the configuration: `tables` and `exclude_tables` are resolved
//! against the database's catalog and the publication is created, or altered to match, when
//! the leader starts its session, when a reload changes them, and at each heartbeat (so a
//! table created later that a glob selects joins within `heartbeat_interval`; its rows from
//! before are backfilled with `snapshot_new_tables`).
//!
//! **Shape.** A `schema.*` selector that no exclusion touches becomes `TABLES IN SCHEMA`, so
//! tables created in that schema later join by themselves (as before this module). Every other
//! selector is resolved to the tables that exist now (`*` within a name is a glob; globs skip
//! partitions, whose changes their partitioned parent publishes) and becomes `TABLE a, b`.
//!
//! **One transaction.** All the changes of one plan are one transaction, adds before drops, so a
//! table that moves from `TABLES IN SCHEMA` to an explicit entry is never out of the
//! publication in between: no change of it is skipped.
//!
//! **Refusals do not stop the stream.** A publication the role may not alter (owned by
//! someone else) keeps streaming what it publishes; the error names the SQL its owner can run.
//! `FOR ALL TABLES` publications are left alone. `switchyard check --live` prints the plan
//! without applying it.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::snapshot::quote_ident;
use super::stream::{SourceError, sql};
use crate::config::{TableSelection, TableSelector};
use crate::router::glob;

/// Each postgres source's table selection, where a reload sends a changed one (the source
/// holds the receiving side: see `PostgresSource::with_selection`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Selections(
    std::collections::BTreeMap<String, std::sync::Arc<tokio::sync::watch::Sender<TableSelection>>>,
);

impl Selections {
    /// One per postgres source of `config`, holding its selection.
    pub(crate) fn for_config(config: &crate::config::Config) -> Selections {
        Selections(
            config
                .sources
                .iter()
                .filter_map(|(name, s)| match &s.kind {
                    crate::config::SourceKind::Postgres(pg) => Some((
                        name.clone(),
                        std::sync::Arc::new(tokio::sync::watch::Sender::new(pg.selection.clone())),
                    )),
                    crate::config::SourceKind::Webhook(_) => None,
                })
                .collect(),
        )
    }

    /// Source `name`'s.
    pub(crate) fn get(
        &self,
        name: &str,
    ) -> Option<std::sync::Arc<tokio::sync::watch::Sender<TableSelection>>> {
        self.0.get(name).cloned()
    }

    /// Sends each running postgres source its selection in `new`, when it differs from the
    /// one it has; returns the names of the sources that got a new one.
    pub(crate) fn apply(&self, new: &crate::config::Config) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, tx) in &self.0 {
            let Some(crate::config::SourceKind::Postgres(pg)) =
                new.sources.get(name).map(|s| &s.kind)
            else {
                continue;
            };
            if tx.send_if_modified(|cur| {
                let differs = *cur != pg.selection;
                if differs {
                    *cur = pg.selection.clone();
                }
                differs
            }) {
                changed.push(name.clone());
            }
        }
        changed
    }
}

/// A table, `(schema, name)`.
pub(crate) type Table = (String, String);

/// What the configuration asks the publication to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    /// Whole schemas (`TABLES IN SCHEMA`).
    pub schemas: BTreeSet<String>,
    /// Single tables (`TABLE`).
    pub tables: BTreeSet<Table>,
    /// Selectors of `tables` that match no table (nor, for `schema.*`, a schema).
    pub unmatched: Vec<String>,
}

/// What the publication holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Current {
    /// `FOR ALL TABLES`: left alone.
    pub all_tables: bool,
    pub schemas: BTreeSet<String>,
    pub tables: BTreeSet<Table>,
}

/// The changes that bring a publication to what is desired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The publication does not exist yet: it is created.
    pub create: bool,
    pub add_schemas: Vec<String>,
    pub drop_schemas: Vec<String>,
    pub add_tables: Vec<Table>,
    pub drop_tables: Vec<Table>,
}

impl Plan {
    /// Nothing to change.
    pub(crate) fn is_empty(&self) -> bool {
        !self.create
            && self.add_schemas.is_empty()
            && self.drop_schemas.is_empty()
            && self.add_tables.is_empty()
            && self.drop_tables.is_empty()
    }

    /// The SQL statements, in the order they run (one transaction).
    pub(crate) fn statements(&self, publication: &str, desired: &Desired) -> Vec<String> {
        let p = quote_ident(publication);
        if self.create {
            let mut parts = Vec::new();
            if !desired.tables.is_empty() {
                parts.push(format!("TABLE {}", qualified(&desired.tables)));
            }
            if !desired.schemas.is_empty() {
                let schemas: Vec<String> = desired.schemas.iter().map(|s| quote_ident(s)).collect();
                parts.push(format!("TABLES IN SCHEMA {}", schemas.join(", ")));
            }
            return vec![if parts.is_empty() {
                format!("CREATE PUBLICATION {p}")
            } else {
                format!("CREATE PUBLICATION {p} FOR {}", parts.join(", "))
            }];
        }
        let mut out = Vec::new();
        if !self.add_tables.is_empty() {
            out.push(format!(
                "ALTER PUBLICATION {p} ADD TABLE {}",
                qualified(&self.add_tables)
            ));
        }
        for s in &self.add_schemas {
            out.push(format!(
                "ALTER PUBLICATION {p} ADD TABLES IN SCHEMA {}",
                quote_ident(s)
            ));
        }
        if !self.drop_tables.is_empty() {
            out.push(format!(
                "ALTER PUBLICATION {p} DROP TABLE {}",
                qualified(&self.drop_tables)
            ));
        }
        for s in &self.drop_schemas {
            out.push(format!(
                "ALTER PUBLICATION {p} DROP TABLES IN SCHEMA {}",
                quote_ident(s)
            ));
        }
        out
    }

    /// One line for logs and `check --live`: `add public.a, schema b; drop public.c`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |tables: &[Table], schemas: &[String]| {
            let mut names: Vec<String> = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
            names.extend(schemas.iter().map(|s| format!("schema {s}")));
            names.join(", ")
        };
        if self.create {
            parts.push("create the publication".to_string());
        }
        if !self.add_tables.is_empty() || !self.add_schemas.is_empty() {
            parts.push(format!("add {}", list(&self.add_tables, &self.add_schemas)));
        }
        if !self.drop_tables.is_empty() || !self.drop_schemas.is_empty() {
            parts.push(format!(
                "drop {}",
                list(&self.drop_tables, &self.drop_schemas)
            ));
        }
        if parts.is_empty() {
            "in step with the configuration".into()
        } else {
            parts.join("; ")
        }
    }
}

fn qualified<'a>(tables: impl IntoIterator<Item = &'a Table>) -> String {
    tables
        .into_iter()
        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn matches(sel: &TableSelector, schema: &str, table: &str) -> bool {
    glob(&sel.schema, schema) && sel.table.as_deref().is_none_or(|t| glob(t, table))
}

fn has_glob(sel: &TableSelector) -> bool {
    sel.schema.contains('*') || sel.table.as_deref().is_none_or(|t| t.contains('*'))
}

/// A table of the catalog a selector may match.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub schema: String,
    pub table: String,
    /// A partition: matched by exact names only.
    pub partition: bool,
}

/// Resolves `selection` against the catalog's `schemas` and tables.
pub(crate) fn resolve(
    selection: &TableSelection,
    schemas: &BTreeSet<String>,
    candidates: &[Candidate],
) -> Desired {
    let mut out = Desired::default();
    let excluded =
        |schema: &str, table: &str| selection.exclude.iter().any(|e| matches(e, schema, table));
    for sel in &selection.tables {
        let whole_schema = sel.table.is_none() && !sel.schema.contains('*');
        let exclusion_touches = selection
            .exclude
            .iter()
            .any(|e| glob(&e.schema, &sel.schema));
        if whole_schema && !exclusion_touches {
            if schemas.contains(&sel.schema) {
                out.schemas.insert(sel.schema.clone());
            } else {
                out.unmatched.push(sel.to_string());
            }
            continue;
        }
        let globbed = has_glob(sel);
        let mut any = false;
        for c in candidates {
            if (c.partition && globbed) || !matches(sel, &c.schema, &c.table) {
                continue;
            }
            any = true;
            if !excluded(&c.schema, &c.table) {
                out.tables.insert((c.schema.clone(), c.table.clone()));
            }
        }
        let known_schema = whole_schema && schemas.contains(&sel.schema);
        if !any && !known_schema {
            out.unmatched.push(sel.to_string());
        }
    }
    // A table its whole schema already holds needs no entry of its own.
    out.tables.retain(|(s, _)| !out.schemas.contains(s));
    out
}

/// The changes from `current` (`None`: no publication yet) to `desired`.
pub(crate) fn plan(current: Option<&Current>, desired: &Desired) -> Plan {
    let Some(current) = current else {
        return Plan {
            create: true,
            ..Plan::default()
        };
    };
    if current.all_tables {
        return Plan::default();
    }
    Plan {
        create: false,
        add_schemas: desired
            .schemas
            .difference(&current.schemas)
            .cloned()
            .collect(),
        drop_schemas: current
            .schemas
            .difference(&desired.schemas)
            .cloned()
            .collect(),
        add_tables: desired
            .tables
            .difference(&current.tables)
            .cloned()
            .collect(),
        drop_tables: current
            .tables
            .difference(&desired.tables)
            .cloned()
            .collect(),
    }
}

/// Reads the catalog's schemas and tables, and resolves `selection` against them.
pub(crate) async fn desired(
    client: &Client,
    selection: &TableSelection,
) -> Result<Desired, SourceError> {
    let system = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";
    let schemas = client
        .query(
            &format!("SELECT n.nspname::text FROM pg_namespace n WHERE {system}"),
            &[],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let candidates: Vec<Candidate> = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relispartition FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND {system} ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| Candidate {
            schema: r.get(0),
            table: r.get(1),
            partition: r.get(2),
        })
        .collect();
    Ok(resolve(selection, &schemas, &candidates))
}

/// What the publication holds, `None` when it does not exist.
pub(crate) async fn current(
    client: &Client,
    publication: &str,
) -> Result<Option<Current>, SourceError> {
    let Some(row) = client
        .query_opt(
            "SELECT puballtables, current_setting('server_version_num')::int FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql)?
    else {
        return Ok(None);
    };
    let (all_tables, version): (bool, i32) = (row.get(0), row.get(1));
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_publication_rel r
             JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // `TABLES IN SCHEMA` arrived in PostgreSQL 15.
    let schemas = if version >= 150_000 {
        client
            .query(
                "SELECT n.nspname::text FROM pg_publication_namespace pn
                 JOIN pg_publication p ON p.oid = pn.pnpubid
                 JOIN pg_namespace n ON n.oid = pn.pnnspid
                 WHERE p.pubname = $1",
                &[&publication],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        BTreeSet::new()
    };
    Ok(Some(Current {
        all_tables,
        schemas,
        tables,
    }))
}

/// The tables the publication publishes (whole schemas expanded).
pub(crate) async fn published(
    client: &Client,
    publication: &str,
) -> Result<BTreeSet<Table>, SourceError> {
    Ok(client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// What [`sync`] found and did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Synced {
    pub desired: Desired,
    pub plan: Plan,
    /// The plan could not be applied: why, and the SQL the publication's owner can run.
    pub refused: Option<(String, Vec<String>)>,
    /// `FOR ALL TABLES`: left alone.
    pub all_tables: bool,
    /// Tables published now that were not before (none when the publication was created).
    pub joined: Vec<Table>,
    /// Tables no longer published.
    pub left: Vec<Table>,
}

/// Brings `publication` in step with `selection`: creates it when missing, else alters it
/// (one transaction). A refusal to alter is returned in [`Synced::refused`], not as an
/// error: the stream goes on with what is published. Creating it is required, so a refusal
/// to create is an error.
pub(crate) async fn sync(
    client: &Client,
    publication: &str,
    selection: &TableSelection,
) -> Result<Synced, SourceError> {
    let desired = desired(client, selection).await?;
    let current = current(client, publication).await?;
    let plan = plan(current.as_ref(), &desired);
    let mut out = Synced {
        all_tables: current.as_ref().is_some_and(|c| c.all_tables),
        desired: desired.clone(),
        plan: plan.clone(),
        ..Synced::default()
    };
    if plan.is_empty() {
        return Ok(out);
    }
    let statements = plan.statements(publication, &desired);
    let before = if plan.create {
        BTreeSet::new()
    } else {
        published(client, publication).await?
    };
    let batch = format!("BEGIN; {}; COMMIT", statements.join("; "));
    if let Err(e) = client.batch_execute(&batch).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let why = sql(e).to_string();
        if plan.create {
            return Err(SourceError::Preflight(format!(
                "creating publication {publication}: {why}. Creating it needs ownership of the tables (or superuser); or have their owner run: {}",
                statements.join("; ")
            )));
        }
        out.refused = Some((why, statements));
        return Ok(out);
    }
    if !plan.create {
        let after = published(client, publication).await?;
        out.joined = after.difference(&before).cloned().collect();
        out.left = before.difference(&after).cloned().collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> TableSelector {
        let (schema, table) = s.split_once('.').expect("schema.table");
        TableSelector {
            schema: schema.into(),
            table: (table != "*").then(|| table.into()),
        }
    }

    fn selection(tables: &[&str], exclude: &[&str]) -> TableSelection {
        TableSelection {
            tables: tables.iter().map(|t| sel(t)).collect(),
            exclude: exclude.iter().map(|t| sel(t)).collect(),
            snapshot_new_tables: false,
        }
    }

    fn catalog() -> (BTreeSet<String>, Vec<Candidate>) {
        let schemas = ["public", "sales", "empty"].map(String::from).into();
        let tables = [
            ("public", "orders", false),
            ("public", "order_items", false),
            ("public", "order_items_2026", true),
            ("public", "users", false),
            ("sales", "leads", false),
            ("sales", "deals", false),
        ];
        let candidates = tables
            .iter()
            .map(|(s, t, p)| Candidate {
                schema: s.to_string(),
                table: t.to_string(),
                partition: *p,
            })
            .collect();
        (schemas, candidates)
    }

    fn t(s: &str, n: &str) -> Table {
        (s.into(), n.into())
    }

    #[test]
    fn a_whole_schema_without_exclusions_is_published_as_its_schema() {
        let (schemas, tables) = catalog();
        let d = resolve(
            &selection(&["public.*", "sales.leads"], &[]),
            &schemas,
            &tables,
        );
        assert_eq!(d.schemas, ["public".to_string()].into());
        assert_eq!(d.tables, [t("sales", "leads")].into());
        assert!(d.unmatched.is_empty());
    }

    #[test]
    fn globs_match_within_a_name_skip_partitions_and_exclusions_apply() {
        let (schemas, tables) = catalog();
        let d = resolve(&selection(&["public.order*"], &[]), &schemas, &tables);
        assert_eq!(
            d.tables,
            [t("public", "order_items"), t("public", "orders")].into()
        );
        // An exclusion in a whole schema turns it into its tables minus the excluded.
        let d = resolve(
            &selection(&["public.*", "sales.*"], &["public.order_*", "sales.deals"]),
            &schemas,
            &tables,
        );
        assert!(d.schemas.is_empty(), "{d:?}");
        assert_eq!(
            d.tables,
            [
                t("public", "orders"),
                t("public", "users"),
                t("sales", "leads")
            ]
            .into()
        );
        // A partition named exactly is taken.
        let d = resolve(
            &selection(&["public.order_items_2026"], &[]),
            &schemas,
            &tables,
        );
        assert_eq!(d.tables, [t("public", "order_items_2026")].into());
    }

    #[test]
    fn selectors_that_match_nothing_are_named() {
        let (schemas, tables) = catalog();
        let d = resolve(
            &selection(
                &["public.invoices", "public.inv_*", "nowhere.*", "empty.*"],
                &[],
            ),
            &schemas,
            &tables,
        );
        assert_eq!(
            d.unmatched,
            ["public.invoices", "public.inv_*", "nowhere.*"]
        );
        // An empty schema is still a schema: tables created in it later join.
        assert_eq!(d.schemas, ["empty".to_string()].into());
    }

    #[test]
    fn a_plan_adds_and_drops_the_difference_adds_first_in_one_transaction() {
        let (schemas, tables) = catalog();
        let desired = resolve(
            &selection(&["public.*"], &["public.users"]),
            &schemas,
            &tables,
        );
        let current = Current {
            all_tables: false,
            schemas: ["public".to_string()].into(),
            tables: [t("sales", "leads")].into(),
        };
        let p = plan(Some(&current), &desired);
        assert_eq!(
            p.add_tables,
            [t("public", "order_items"), t("public", "orders")]
        );
        assert_eq!(p.drop_schemas, ["public"]);
        assert_eq!(p.drop_tables, [t("sales", "leads")]);
        assert_eq!(
            p.statements("pub", &desired),
            [
                "ALTER PUBLICATION \"pub\" ADD TABLE \"public\".\"order_items\", \"public\".\"orders\"",
                "ALTER PUBLICATION \"pub\" DROP TABLE \"sales\".\"leads\"",
                "ALTER PUBLICATION \"pub\" DROP TABLES IN SCHEMA \"public\"",
            ]
        );
        assert_eq!(
            p.describe(),
            "add public.order_items, public.orders; drop sales.leads, schema public"
        );
        // In step: nothing to do; FOR ALL TABLES: left alone.
        let same = Current {
            all_tables: false,
            schemas: BTreeSet::new(),
            tables: desired.tables.clone(),
        };
        assert!(plan(Some(&same), &desired).is_empty());
        let all = Current {
            all_tables: true,
            ..Current::default()
        };
        assert!(plan(Some(&all), &desired).is_empty());
        let create = plan(None, &desired);
        assert_eq!(
            create.statements("pub", &desired),
            [
                "CREATE PUBLICATION \"pub\" FOR TABLE \"public\".\"order_items\", \"public\".\"orders\""
            ]
        );
    }
}
