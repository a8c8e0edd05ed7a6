//! The connections of a Postgres source: its parameters from the URL, and the SQL connection
//! (TLS as configured) that preflight, snapshots, backfills and on-call commands use.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tracing::debug;

use super::error::{SourceError, sql};
use crate::config::PostgresSourceConfig;

/// The source's connection parameters, from the URL.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: String,
    pub(super) database: String,
}

pub(super) fn target(url: &str) -> Result<Target, SourceError> {
    let cfg = tokio_postgres::Config::from_str(url)
        .map_err(|e| SourceError::Preflight(format!("invalid postgres url: {e}")))?;
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    Ok(Target {
        host,
        port: cfg.get_ports().first().copied().unwrap_or(5432),
        user: cfg.get_user().unwrap_or("postgres").to_string(),
        password: cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        database: cfg.get_dbname().unwrap_or("postgres").to_string(),
    })
}

/// Opens the SQL connection of a source (TLS as configured).
pub(crate) async fn connect_sql(source: &PostgresSourceConfig) -> Result<Client, SourceError> {
    let mut cfg = tokio_postgres::Config::from_str(&source.url)
        .map_err(|e| SourceError::Preflight(format!("invalid postgres url: {e}")))?;
    cfg.ssl_mode(crate::pg_tls::sql_mode(&source.tls));
    // A database behind a partition drops the handshake's packets: give up in time to retry
    // (TCP alone would wait minutes). `connect_timeout` in the URL wins.
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    if source.tls.mode == crate::config::PgSslMode::Disable {
        let (client, conn) = cfg.connect(NoTls).await.map_err(sql)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "postgres SQL connection closed");
            }
        });
        return Ok(client);
    }
    let connector = crate::pg_tls::sql_connector(&source.tls).map_err(SourceError::Preflight)?;
    let (client, conn) = cfg.connect(connector).await.map_err(sql)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "postgres SQL connection closed");
        }
    });
    Ok(client)
}
