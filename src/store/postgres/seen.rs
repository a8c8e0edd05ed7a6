//! The PostgreSQL store's seen webhook ids (deduplication and delivery claims).

use super::{PostgresStore, pg};
use crate::store::{StoreError, WebhookIdClaim, WebhookIdState};

impl PostgresStore {
    pub(in crate::store) async fn seen_since(
        &self,
        key: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT 1 FROM switchyard_webhook_seen WHERE key = $1 AND at >= $2",
                &[&key, &since],
            )
            .await
            .map_err(pg)?;
        Ok(row.is_some())
    }

    /// Remembers accepted ids and, in the same statement (one commit), ends this store's
    /// claims on them: another instance sees an id claimed or accepted, never neither.
    pub(in crate::store) async fn remember_seen(
        &self,
        entries: Vec<(String, i64)>,
    ) -> Result<(), StoreError> {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let ats: Vec<i64> = entries.iter().map(|(_, a)| *a).collect();
        self.client
            .execute(
                "WITH seen AS (
                    INSERT INTO switchyard_webhook_seen (key, at)
                    SELECT * FROM unnest($1::text[], $2::bigint[])
                    ON CONFLICT (key) DO UPDATE SET at = excluded.at
                 )
                 DELETE FROM switchyard_webhook_claims WHERE key = ANY($1) AND owner = $3",
                &[&keys, &ats, &self.owner],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Claims the webhook id `key` for this instance until `until` (micros), unless it was
    /// accepted since `since` or another instance holds a live claim on it. The claim is
    /// written first and the accepted ids read after it (a statement of its own, so it sees
    /// every acceptance committed before the claim): an instance that accepts an id ends its
    /// claim in the commit that records the id (see [`PostgresStore::remember_seen`]).
    pub(in crate::store) async fn claim_webhook_id(
        &self,
        key: &str,
        since: i64,
        until: i64,
    ) -> Result<WebhookIdClaim, StoreError> {
        let now = crate::event::now_micros();
        let won = self
            .client
            .query_opt(
                "INSERT INTO switchyard_webhook_claims AS c (key, owner, until)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, until = excluded.until
                    WHERE c.until < $4
                 RETURNING 1",
                &[&key, &self.owner, &until, &now],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !won {
            return Ok(WebhookIdClaim::ClaimedElsewhere);
        }
        let seen = self
            .client
            .query_opt(
                "SELECT at FROM switchyard_webhook_seen WHERE key = $1 AND at >= $2",
                &[&key, &since],
            )
            .await
            .map_err(pg)?;
        match seen {
            Some(row) => {
                // Accepted before: the answer is `duplicate` whether or not the claim just
                // taken can be released now (if not, it expires by itself).
                if let Err(e) = self.release_webhook_id(key).await {
                    tracing::warn!(error = %e, "could not release a webhook deduplication claim; it expires by itself");
                }
                Ok(WebhookIdClaim::Accepted(row.get(0)))
            }
            None => Ok(WebhookIdClaim::Won),
        }
    }

    /// Whether `key` was accepted since `since`, is claimed (live), or neither: one statement,
    /// so an acceptance and the end of its claim are seen together.
    pub(in crate::store) async fn webhook_id_state(
        &self,
        key: &str,
        since: i64,
    ) -> Result<WebhookIdState, StoreError> {
        let now = crate::event::now_micros();
        let row = self
            .client
            .query_one(
                "SELECT (SELECT at FROM switchyard_webhook_seen WHERE key = $1 AND at >= $2),
                        EXISTS (SELECT 1 FROM switchyard_webhook_claims
                                WHERE key = $1 AND until >= $3)",
                &[&key, &since, &now],
            )
            .await
            .map_err(pg)?;
        let accepted: Option<i64> = row.get(0);
        let claimed: bool = row.get(1);
        Ok(match (accepted, claimed) {
            (Some(at), _) => WebhookIdState::Accepted(at),
            (None, true) => WebhookIdState::Claimed,
            (None, false) => WebhookIdState::Free,
        })
    }

    /// Ends this instance's claim on `key` (its delivery failed: the id is free again).
    pub(in crate::store) async fn release_webhook_id(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "DELETE FROM switchyard_webhook_claims WHERE key = $1 AND owner = $2",
                &[&key, &self.owner],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(in crate::store) async fn recent_seen(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT key, at FROM switchyard_webhook_seen WHERE at >= $1 ORDER BY at DESC LIMIT {limit}"
                ),
                &[&since],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(in crate::store) async fn purge_seen(&self, before: i64) -> Result<u64, StoreError> {
        // Claims whose instance never ended them (it died) and that have expired.
        self.client
            .execute(
                "DELETE FROM switchyard_webhook_claims WHERE until < $1",
                &[&crate::event::now_micros()],
            )
            .await
            .map_err(pg)?;
        self.client
            .execute(
                "DELETE FROM switchyard_webhook_seen WHERE at < $1",
                &[&before],
            )
            .await
            .map_err(pg)
    }
}
