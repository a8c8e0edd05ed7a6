//! The PostgreSQL store's source state: snapshot and backfill progress, the backfill queue
//! ([`crate::store::SourceState`]).

use super::{PostgresStore, pg};
use crate::store::StoreError;

impl PostgresStore {
    pub(in crate::store) async fn get_state(
        &self,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT value FROM switchyard_state WHERE key = $1", &[&key])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(in crate::store) async fn put_state(
        &self,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO switchyard_state (key, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&key, &value, &crate::event::now_micros()],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}
