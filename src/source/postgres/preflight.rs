//! Preflight of a Postgres source, before it streams: the server and role can replicate, the
//! publication exists (created for `tables` if missing), published tables can be replicated
//! and read, and the slot is usable; then the slot is created when missing. Each refusal says
//! how to fix it. Published tables with TOAST-able columns and no `REPLICA IDENTITY FULL` are
//! named in a warning with the `ALTER TABLE` that fixes them.

use tokio_postgres::Client;
use tracing::{error, info, warn};

use super::stream::{PostgresSource, SourceError, sql};

impl PostgresSource {
    /// Checks the server and brings the publication in step with the configuration; returns
    /// the slot's confirmed position (`None` when the slot does not exist yet) and the tables
    /// that joined the publication.
    pub(super) async fn preflight(
        &self,
        client: &Client,
    ) -> Result<(Option<u64>, Vec<super::publication::Table>), SourceError> {
        let wal: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(sql)?
            .get(0);
        if wal != "logical" {
            return Err(SourceError::Preflight(format!(
                "wal_level is `{wal}`, logical replication needs `logical`: run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL"
            )));
        }
        let role = client
            .query_one(
                "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(sql)?;
        let (user, may_replicate): (String, bool) = (role.get(0), role.get(1));
        if !may_replicate {
            return Err(SourceError::Preflight(format!(
                "role {user} may not use replication: run ALTER ROLE {user} REPLICATION (on Amazon RDS and Aurora: GRANT rds_replication TO {user})"
            )));
        }
        let publication = &self.cfg.publication;
        let selection = self.selection.borrow().clone();
        let joined = self.follow_config(client, &selection, false).await?;
        // Tables that cannot be replicated safely: no key to identify rows by.
        let keyless = client
            .query(
                "SELECT n.nspname || '.' || c.relname FROM pg_publication_tables p
                 JOIN pg_class c ON c.relname = p.tablename
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = p.schemaname
                 WHERE p.pubname = $1 AND c.relreplident = 'd'
                   AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
                &[publication],
            )
            .await
            .map_err(sql)?;
        let unreadable = client
            .query(
                "SELECT schemaname || '.' || tablename FROM pg_publication_tables
                 WHERE pubname = $1
                   AND NOT has_table_privilege(quote_ident(schemaname) || '.' || quote_ident(tablename), 'SELECT')",
                &[publication],
            )
            .await
            .map_err(sql)?;
        if let Some(row) = unreadable.first() {
            let table: String = row.get(0);
            return Err(SourceError::Preflight(format!(
                "role {user} cannot read table {table}, which snapshots and unchanged-TOAST fills need: run GRANT SELECT ON {table} TO {user}"
            )));
        }
        if let Some(row) = keyless.first() {
            let table: String = row.get(0);
            return Err(SourceError::Preflight(format!(
                "table {table} has no primary key and REPLICA IDENTITY DEFAULT: UPDATE and DELETE on it fail on the primary once it is published. Add a primary key, or run ALTER TABLE {table} REPLICA IDENTITY FULL"
            )));
        }
        // Tables whose unchanged TOASTed values are not in the WAL: an update that leaves
        // such a value alone is filled by reading the row back, or, when the row is gone by
        // then, carries the placeholder. Warned, not refused: the stream works either way.
        for risk in super::catalog::toast_risks(client, publication).await? {
            warn!(
                source = %self.name,
                table = %risk.table,
                columns = %risk.columns.join(", "),
                fix = %risk.fix,
                "table {} has TOAST-able columns ({}) and no REPLICA IDENTITY FULL: an update that leaves a large value unchanged carries it only if the row can still be read back, else the placeholder `unavailable_value_placeholder` (header switchyard.unchanged_toast); to always carry it run {}",
                risk.table,
                risk.columns.join(", "),
                risk.fix
            );
        }
        let slot = &self.cfg.slot;
        let row = client
            .query_opt(
                "SELECT plugin, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .map_err(sql)?;
        let confirmed = match row {
            Some(r) => {
                let plugin: Option<String> = r.get(0);
                if plugin.as_deref() != Some("pgoutput") {
                    return Err(SourceError::Preflight(format!(
                        "replication slot {slot} uses plugin {plugin:?}, not pgoutput: drop it or configure another slot"
                    )));
                }
                let status: Option<String> = r.get(2);
                if status.as_deref() == Some("lost") {
                    let name = &self.name;
                    return Err(SourceError::Preflight(format!(
                        "replication slot {slot} is lost (its WAL was removed): changes were missed. Run `switchyard slot reset --source {name}` to start again from now, then re-snapshot the tables"
                    )));
                }
                let lsn: Option<String> = r.get(1);
                Some(
                    lsn.and_then(|l| l.parse::<super::lsn::Lsn>().ok())
                        .map_or(0, |l| l.0),
                )
            }
            None => None,
        };
        Ok((confirmed, joined))
    }

    /// Brings the publication in step with `selection` (see [`super::publication`]) and logs
    /// what changed; returns the tables that joined it. Selectors that match nothing are
    /// warned about; a publication the role may not alter is an error in the log, not a stop.
    /// `periodic`: the heartbeat's look for tables created since (globs, exclusions), which
    /// logs only what it changes.
    pub(super) async fn follow_config(
        &self,
        client: &Client,
        selection: &crate::config::TableSelection,
        periodic: bool,
    ) -> Result<Vec<super::publication::Table>, SourceError> {
        let publication = &self.cfg.publication;
        let synced = super::publication::sync(client, publication, selection).await?;
        if periodic && synced.refused.is_some() {
            return Ok(Vec::new());
        }
        for unmatched in synced.desired.unmatched.iter().filter(|_| !periodic) {
            warn!(source = %self.name, selector = %unmatched, "`{unmatched}` in `tables` matches no table: nothing of it is captured (switchyard check --live lists the selectors that match nothing)");
        }
        if synced.all_tables && !periodic {
            warn!(source = %self.name, publication, "publication {publication} is FOR ALL TABLES: it is left as it is, `tables` and `exclude_tables` do not narrow it");
        }
        if let Some((why, statements)) = &synced.refused {
            error!(source = %self.name, publication, error = %why, fix = %statements.join("; "), "cannot bring publication {publication} in step with `tables` ({}): it streams what it publishes now; have its owner run: {}", synced.plan.describe(), statements.join("; "));
            return Ok(Vec::new());
        }
        if synced.plan.create {
            info!(source = %self.name, publication, "created publication");
        } else if !synced.plan.is_empty() {
            let names = |t: &[super::publication::Table]| {
                t.iter()
                    .map(|(s, n)| format!("{s}.{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            info!(source = %self.name, publication, change = %synced.plan.describe(), joined = %names(&synced.joined), left = %names(&synced.left), "publication follows the configuration");
        }
        Ok(synced.joined)
    }

    /// Creates the slot (no snapshot); returns its consistent point.
    pub(super) async fn create_slot(&self, client: &Client) -> Result<u64, SourceError> {
        let slot = &self.cfg.slot;
        let r = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await
            .map_err(|e| {
                SourceError::Preflight(format!("creating replication slot {slot}: {}", sql(e)))
            })?;
        info!(source = %self.name, slot, "created replication slot");
        let lsn: String = r.get(0);
        Ok(lsn.parse::<super::lsn::Lsn>().map_or(0, |l| l.0))
    }
}
