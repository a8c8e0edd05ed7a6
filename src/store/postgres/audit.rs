//! The PostgreSQL store's hash-chained audit trail ([`crate::store::AuditTrail`]).

use super::{AUDIT_LOCK, CallError, PostgresStore, pg};
use crate::store::audit::AuditRecord;
use crate::store::{AuditEntry, StoreError};

impl PostgresStore {
    pub(in crate::store) async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let sqlerr = |e: tokio_postgres::Error| pg(CallError::Sql(e));
        let mut conn = self.client.get().await.map_err(pg)?;
        let tx = conn.transaction().await.map_err(sqlerr)?;
        tx.execute(&format!("SELECT pg_advisory_xact_lock({AUDIT_LOCK})"), &[])
            .await
            .map_err(sqlerr)?;
        let prev: String = tx
            .query_opt(
                "SELECT hash FROM switchyard_dlq_audit ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(sqlerr)?
            .map(|r| r.get(0))
            .unwrap_or_default();
        let hash = crate::store::audit::link(&prev, e);
        tx.execute(
            "INSERT INTO switchyard_dlq_audit (at, actor, action, selector, count, result, role,
                 peer, request_id, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &e.at,
                &e.actor,
                &e.action,
                &e.selector,
                &e.count,
                &e.result,
                &e.role,
                &e.peer,
                &e.request_id,
                &prev,
                &hash,
            ],
        )
        .await
        .map_err(sqlerr)?;
        tx.commit().await.map_err(sqlerr)
    }

    pub(in crate::store) async fn audit_log(
        &self,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_rows(&format!("WHERE id > $1 ORDER BY id DESC LIMIT {limit}"), -1)
            .await
    }

    pub(in crate::store) async fn audit_page(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_rows(
            &format!("WHERE id > $1 ORDER BY id LIMIT {limit}"),
            after_id,
        )
        .await
    }

    async fn audit_rows(&self, tail: &str, after_id: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT id, at, actor, action, selector, count, result, role, peer,
                         request_id, prev_hash, hash
                     FROM switchyard_dlq_audit {tail}"
                ),
                &[&after_id],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord {
                id: r.get(0),
                entry: AuditEntry {
                    at: r.get(1),
                    actor: r.get(2),
                    action: r.get(3),
                    selector: r.get(4),
                    count: r.get(5),
                    result: r.get(6),
                    role: r.get(7),
                    peer: r.get(8),
                    request_id: r.get(9),
                },
                prev_hash: r.get(10),
                hash: r.get(11),
            })
            .collect())
    }
}
