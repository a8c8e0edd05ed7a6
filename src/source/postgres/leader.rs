//! One streaming instance per replication slot: several switchyard instances may run the same
//! configuration, and the one holding a Postgres advisory lock on the source database streams
//! the slot while the others wait hot.
//!
//! The lock is session-level, held by a dedicated connection for as long as the instance leads.
//! When the leader dies (even kill -9) its connection closes, the server releases the lock, and
//! a standby, retrying every [`RETRY`], takes it and starts from the slot's confirmed position:
//! everything the old leader had not confirmed is delivered again (at-least-once), nothing is
//! skipped. Postgres itself lets only one walsender use a slot at a time, so the lock is the
//! orderly election and the slot's `active_pid` the fence. A leader that cannot reach its lock
//! connection any more stops streaming at once (see [`Lease::lost`]).

use std::time::Duration;

use sha2::Digest;
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::info;

use super::stream::{SourceError, connect_sql, sql};
use crate::config::PostgresSourceConfig;
use crate::source::health::SourceHealth;

/// How often a standby tries the lock, and a leader checks its lock connection.
pub const RETRY: Duration = Duration::from_secs(1);

/// The advisory lock key of a slot: stable across versions and instances (the first 8 bytes of
/// SHA-256 of `switchyard.slot:<slot>`).
pub fn lock_key(slot: &str) -> i64 {
    let digest = sha2::Sha256::digest(format!("switchyard.slot:{slot}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Leadership of one slot: the connection that holds its lock.
pub struct Lease {
    client: Client,
}

impl Lease {
    /// True while the lock connection answers (and so still holds the lock).
    pub async fn alive(&self) -> bool {
        !self.client.is_closed() && self.client.simple_query("SELECT 1").await.is_ok()
    }

    /// Resolves when the lock connection is gone: the lock may then be someone else's.
    pub async fn lost(&self) {
        loop {
            tokio::time::sleep(RETRY).await;
            let check = tokio::time::timeout(RETRY * 5, self.alive()).await;
            if !matches!(check, Ok(true)) {
                return;
            }
        }
    }
}

/// Waits until this instance holds the slot's lock; `None` when `stop` turned true first.
/// Meanwhile the source's state is `standby`.
pub async fn acquire(
    name: &str,
    cfg: &PostgresSourceConfig,
    health: &SourceHealth,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Lease>, SourceError> {
    let client = connect_sql(cfg).await?;
    let key = lock_key(&cfg.slot);
    let mut announced = false;
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(sql)?;
        let held: bool = row.try_get(0).map_err(sql)?;
        if held {
            if announced {
                info!(source = %name, slot = %cfg.slot, "took over the slot: this instance streams it now");
            }
            return Ok(Some(Lease { client }));
        }
        if !announced {
            info!(source = %name, slot = %cfg.slot, "another instance streams this slot; standing by");
            health.set(name, "standby", None);
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_differ_per_slot() {
        assert_eq!(lock_key("switchyard_appdb"), lock_key("switchyard_appdb"));
        assert_ne!(lock_key("switchyard_appdb"), lock_key("switchyard_other"));
        // Pinned: instances of different versions must agree on the key.
        let digest = sha2::Sha256::digest(b"switchyard.slot:s");
        assert_eq!(
            lock_key("s").to_be_bytes().as_slice(),
            &digest.as_slice()[..8]
        );
    }
}
