//! TLS to PostgreSQL for both connections, following libpq's `sslmode`.
//!
//! `prefer` and `require` encrypt without checking the certificate (as libpq does);
//! `verify-ca` checks the chain against `sslrootcert`; `verify-full` also checks that the
//! certificate names the host.

use pgwire_replication::config::{SslMode, TlsConfig};

use crate::config::{PgSslMode, PgTls};

/// A tokio-postgres connector for `tls`.
pub(crate) fn sql_connector(tls: &PgTls) -> Result<postgres_native_tls::MakeTlsConnector, String> {
    let mut builder = native_tls::TlsConnector::builder();
    match tls.mode {
        PgSslMode::Disable | PgSslMode::Prefer | PgSslMode::Require => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        PgSslMode::VerifyCa => {
            builder.danger_accept_invalid_hostnames(true);
        }
        PgSslMode::VerifyFull => {}
    }
    if let Some(path) = &tls.root_cert {
        let pem = std::fs::read(path)
            .map_err(|e| format!("reading sslrootcert {}: {e}", path.display()))?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        builder.add_root_certificate(cert);
    }
    let connector = builder.build().map_err(|e| e.to_string())?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// The SQL connection's `ssl_mode` (tokio-postgres knows disable, prefer and require; the
/// verification modes are enforced by the connector).
pub(crate) fn sql_mode(tls: &PgTls) -> tokio_postgres::config::SslMode {
    match tls.mode {
        PgSslMode::Disable => tokio_postgres::config::SslMode::Disable,
        PgSslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    }
}

/// The replication connection's TLS settings.
pub(crate) fn replication(tls: &PgTls) -> TlsConfig {
    TlsConfig {
        mode: match tls.mode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            PgSslMode::Require => SslMode::Require,
            PgSslMode::VerifyCa => SslMode::VerifyCa,
            PgSslMode::VerifyFull => SslMode::VerifyFull,
        },
        ca_pem_path: tls.root_cert.clone(),
        ..TlsConfig::default()
    }
}
