//! The SQLite store's hash-chained audit trail ([`crate::store::AuditTrail`]).

use super::*;
use crate::store::audit::AuditRecord;
use crate::store::{AuditEntry, StoreError};
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    pub(in crate::store) async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        let err = self.err();
        self.with(move |c| {
            // The write transaction orders appends of every process on this file: each row is
            // chained to the one written before it.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(&err)?;
            let prev: String = tx
                .query_row(
                    "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?
                .unwrap_or_default();
            let hash = crate::store::audit::link(&prev, &e);
            tx.execute(
                "INSERT INTO audit_log (at, actor, action, selector, count, result, role, peer,
                     request_id, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    e.at,
                    e.actor,
                    e.action,
                    e.selector,
                    e.count,
                    e.result,
                    e.role,
                    e.peer,
                    e.request_id,
                    prev,
                    hash
                ],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)
        })
        .await
    }

    pub(in crate::store) async fn audit_log(
        &self,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_rows(format!("ORDER BY id DESC LIMIT {limit}"), 0)
            .await
    }

    pub(in crate::store) async fn audit_page(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_rows(format!("WHERE id > ?1 ORDER BY id LIMIT {limit}"), after_id)
            .await
    }

    async fn audit_rows(
        &self,
        tail: String,
        after_id: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let err = self.err();
        self.with(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT id, at, actor, action, selector, count, result, role, peer, request_id,
                         prev_hash, hash
                     FROM audit_log {tail}"
                ))
                .map_err(&err)?;
            let read = |r: &rusqlite::Row<'_>| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    entry: AuditEntry {
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        selector: r.get(4)?,
                        count: r.get(5)?,
                        result: r.get(6)?,
                        role: r.get(7)?,
                        peer: r.get(8)?,
                        request_id: r.get(9)?,
                    },
                    prev_hash: r.get(10)?,
                    hash: r.get(11)?,
                })
            };
            let rows = if tail.contains("?1") {
                stmt.query_map([after_id], read)
            } else {
                stmt.query_map([], read)
            }
            .map_err(&err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&err)
        })
        .await
    }
}
