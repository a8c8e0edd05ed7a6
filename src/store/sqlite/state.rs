//! The SQLite store's source state: snapshot and backfill progress, the backfill queue
//! ([`crate::store::SourceState`]).

use super::*;
use crate::store::StoreError;
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    pub(in crate::store) async fn get_state(
        &self,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        let err = self.err();
        self.with(move |c| {
            c.query_row(
                "SELECT value FROM state WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)
        })
        .await
    }

    pub(in crate::store) async fn put_state(
        &self,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        let err = self.err();
        self.with(move |c| {
            c.execute(
                "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![key, value, crate::event::now_micros()],
            )
            .map(|_| ())
            .map_err(&err)
        })
        .await
    }
}
