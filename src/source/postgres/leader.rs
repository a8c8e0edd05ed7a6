//! One streaming instance per replication slot: several switchyard instances may run the same
//! configuration, and the one holding a Postgres advisory lock on the source database streams
//! the slot while the others wait hot.
//!
//! **Election.** The lock is session-level, held by a dedicated connection for as long as the
//! instance leads; standbys try it every [`RETRY`]. When the leader dies (even kill -9) its
//! connection closes, the server releases the lock, and a standby takes it within about a
//! second and starts from the slot's confirmed position: everything the old leader had not
//! confirmed is delivered again (at-least-once), nothing is skipped.
//!
//! **A leader that stops answering** (frozen, or cut off from the database by the network)
//! keeps its connection open, so the lock would be kept until TCP gives up (hours). The lock
//! session therefore runs with `idle_session_timeout = leader_timeout` (PostgreSQL 14+): the
//! leader asks `SELECT 1` on it every [`RETRY`], so only a leader that stopped answering is
//! idle that long, and the server then ends its session and releases the lock. Server-side TCP
//! keepalives are set too (they are what remains on PostgreSQL 13 and older).
//!
//! **Fencing the old leader.** Each check that the lock connection answers renews a [`Fence`]
//! for [`validity`] (at most half of `leader_timeout`), counted from when the check was *sent*,
//! so the fence always lapses before the server can have released the lock. The leader hands a
//! record to Kafka and confirms a position to the slot only while its fence holds, checked right
//! before each (`pipeline::ordered` and `source::postgres::stream`). A leader that wakes up after
//! a freeze finds its fence lapsed (the monotonic clock ran on while it was stopped) and stops
//! before it sends or confirms anything; it then stands by.
//!
//! **Taking over from a leader that stopped answering.** Its walsender may still hold the slot
//! (the server notices a silent client only after `wal_sender_timeout`), so the new leader ends
//! it (`pg_terminate_backend` on the slot's `active_pid`: allowed for the same role). And the
//! old leader may have left records in its Kafka client's queue when it froze; they are sent
//! when it wakes unless their `message.timeout.ms` (`[kafka] delivery_timeout`) has passed. They
//! were handed over while the old fence held, so before the lock was released: after
//! `delivery_timeout + validity − leader_timeout` past the takeover none of them can still be
//! sent, and the new leader waits that long ([`Lease::quiet`]) before it streams, so that no
//! record of the old leader can land after one of the new leader's. A predecessor that died
//! (its walsender gone with its connection) leaves nothing queued: no wait.
//!
//! Bounds, with the defaults (`leader_timeout` 10 s, `delivery_timeout` 20 s): a killed leader
//! is replaced within ~2 s; a frozen or cut-off one within `leader_timeout` + 1 s, and the new
//! leader streams `max(leader_timeout, delivery_timeout + validity)` + ~1 s (24 s) after the freeze.

use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::stream::{SourceError, connect_sql, sql};
use crate::config::PostgresSourceConfig;
use crate::pipeline::health::SourceHealth;

/// How often a standby tries the lock, and a leader checks its lock connection.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// How long a successful check of the lock lets the leader send and confirm: half of
/// `leader_timeout`, at most 3 s (checks come every [`RETRY`]).
pub(crate) fn validity(leader_timeout: Duration) -> Duration {
    (leader_timeout / 2).min(Duration::from_secs(3))
}

/// The advisory lock key of a slot: stable across versions and instances (the first 8 bytes of
/// SHA-256 of `switchyard.slot:<slot>`).
pub(crate) fn lock_key(slot: &str) -> i64 {
    let digest = sha2::Sha256::digest(format!("switchyard.slot:{slot}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

pub(crate) use crate::pipeline::fence::Fence;
use crate::pipeline::fence::millis;

/// Leadership of one slot: the connection that holds its lock.
pub(crate) struct Lease {
    client: Client,
    fence: Fence,
    validity: Duration,
    /// How long to wait before streaming: the previous leader stopped answering and may still
    /// hold records in its Kafka client (see the module doc). Zero otherwise.
    pub quiet: Duration,
}

impl Lease {
    /// True while the lock connection answers (and so still holds the lock); renews the fence.
    pub(crate) async fn alive(&self) -> bool {
        let sent = Instant::now();
        // Within the fence's validity: a check that takes longer has lapsed it anyway, and a
        // partition would otherwise hold it until TCP gives up.
        let answered = !self.client.is_closed()
            && matches!(
                tokio::time::timeout(self.validity, self.client.simple_query("SELECT 1")).await,
                Ok(Ok(_))
            );
        if answered {
            self.fence.renew(sent, self.validity);
        } else {
            self.fence.revoke();
        }
        answered
    }

    /// Resolves when the lock may be someone else's: the lock connection is gone, does not
    /// answer within the fence's validity, or the fence lapsed (this process was stopped).
    pub(crate) async fn lost(&self) {
        loop {
            tokio::time::sleep(RETRY).await;
            if !self.fence.holds() {
                return;
            }
            if !self.alive().await {
                return;
            }
        }
    }
}

/// Waits until this instance holds the slot's lock; `None` when `stop` turned true first.
/// Meanwhile the source's state is `standby`. Once it holds the lock, a walsender still
/// attached to the slot (a previous leader that stopped answering) is ended, and the lease says
/// how long to wait before streaming (`delivery_timeout`: the Kafka client's message timeout).
pub(crate) async fn acquire(
    name: &str,
    cfg: &PostgresSourceConfig,
    health: &SourceHealth,
    stop: &mut watch::Receiver<bool>,
    fence: &Fence,
    delivery_timeout: Duration,
) -> Result<Option<Lease>, SourceError> {
    fence.revoke();
    let client = connect_sql(cfg).await?;
    bound_the_lock_session(name, &client, cfg.leader_timeout).await?;
    let key = lock_key(&cfg.slot);
    let mut announced = false;
    loop {
        let sent = Instant::now();
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(sql)?;
        let held: bool = row.try_get(0).map_err(sql)?;
        if held {
            if announced {
                info!(source = %name, slot = %cfg.slot, "took over the slot: this instance streams it now");
            }
            let validity = validity(cfg.leader_timeout);
            let quiet = if end_walsender(name, &client, &cfg.slot).await? {
                (delivery_timeout + validity).saturating_sub(cfg.leader_timeout)
            } else {
                Duration::ZERO
            };
            fence.renew(sent, validity);
            return Ok(Some(Lease {
                client,
                fence: fence.clone(),
                validity,
                quiet,
            }));
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

/// Makes the server end the lock session (and so release the lock) once it has been idle for
/// `timeout`, and probe its TCP connection: a leader that stops answering loses the slot.
async fn bound_the_lock_session(
    name: &str,
    client: &Client,
    timeout: Duration,
) -> Result<(), SourceError> {
    let ms = millis(timeout);
    let secs = timeout.as_secs().max(1);
    // Keepalives: first probe after a third of the timeout, then every sixth, three probes;
    // unacknowledged data gives up after the timeout. One statement each: a server without
    // one of them (tcp_user_timeout is PostgreSQL 12+) keeps the others.
    for set in [
        format!("SET tcp_keepalives_idle = {}", (secs / 3).max(1)),
        format!("SET tcp_keepalives_interval = {}", (secs / 6).max(1)),
        "SET tcp_keepalives_count = 3".to_string(),
        format!("SET tcp_user_timeout = {ms}"),
    ] {
        if let Err(e) = client.batch_execute(&set).await {
            warn!(source = %name, error = %e, "could not bound the leadership lock's TCP connection ({set})");
        }
    }
    match client
        .batch_execute(&format!("SET idle_session_timeout = {ms}"))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
            warn!(source = %name, "the server has no idle_session_timeout (PostgreSQL 13 or older): a frozen or cut-off leader keeps the slot until TCP keepalives give up");
            Ok(())
        }
        Err(e) => Err(sql(e)),
    }
}

/// Ends the walsender still attached to `slot`, if any (a previous leader that stopped
/// answering), and waits until the slot is free; true when there was one.
async fn end_walsender(name: &str, client: &Client, slot: &str) -> Result<bool, SourceError> {
    let query = "SELECT s.active_pid, a.application_name, a.client_addr::text
                 FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
                 WHERE s.slot_name = $1 AND s.active_pid IS NOT NULL";
    let Some(row) = client.query_opt(query, &[&slot]).await.map_err(sql)? else {
        return Ok(false);
    };
    let pid: i32 = row.try_get(0).map_err(sql)?;
    let app: Option<String> = row.try_get(1).map_err(sql)?;
    let addr: Option<String> = row.try_get(2).map_err(sql)?;
    warn!(source = %name, slot = %slot, pid, application = app.as_deref().unwrap_or(""), client = addr.as_deref().unwrap_or("local"), "the slot is still streamed by a previous leader that stopped answering; ending its walsender");
    let ended: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .map_err(sql)?
        .try_get(0)
        .map_err(sql)?;
    if !ended {
        warn!(source = %name, pid, "could not end the walsender (already gone?)");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let still = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active_pid = $2",
                &[&slot, &pid],
            )
            .await
            .map_err(sql)?;
        if still.is_none() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(SourceError::Stream(format!(
        "the walsender (pid {pid}) of a previous leader still holds slot `{slot}` 10 s after it was asked to end"
    )))
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
