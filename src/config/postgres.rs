//! Validation of `[sources.<name>]` tables with `type = "postgres"`.

use std::time::Duration;

use super::diagnostic::Diagnostics;
use super::raw::RawPostgresSource;
use super::{PgSslMode, PgTls, PostgresSourceConfig, SnapshotMode, TableSelection, TableSelector};

/// `leader_timeout` unless configured.
pub(super) const DEFAULT_LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Below this a leader that is slow for a moment would lose the slot: it checks its lock every
/// second, and may send or confirm only for half of this after a check.
const MIN_LEADER_TIMEOUT: Duration = Duration::from_secs(4);
const MAX_LEADER_TIMEOUT: Duration = Duration::from_secs(600);

fn pg_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Removes `sslmode` and `sslrootcert` from a URL's query; returns the rest and their values.
fn split_tls(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut mode, mut root) = (None, None);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some(("sslmode", v)) => {
                mode = Some(v.to_string());
                false
            }
            Some(("sslrootcert", v)) => {
                root = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, mode, root)
}

/// What is wrong with a URL's TLS parameters, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTlsError {
    /// The problem.
    pub message: String,
    /// The fix.
    pub help: String,
}

/// The TLS settings of a `postgres://` URL, libpq style (postgres sources and the
/// `postgres://` dead-letter store): `sslmode` (default `prefer`) and `sslrootcert` are taken
/// out of the query (tokio-postgres accepts neither verify mode nor `sslrootcert`); a relative
/// `sslrootcert` is resolved against `base_dir`. Returns the URL without them and the settings.
pub fn url_tls(url: &str, base_dir: &std::path::Path) -> Result<(String, PgTls), UrlTlsError> {
    let (url, sslmode, sslrootcert) = split_tls(url);
    let mode = match sslmode.as_deref() {
        None | Some("prefer") => PgSslMode::Prefer,
        Some("disable") => PgSslMode::Disable,
        Some("require") => PgSslMode::Require,
        Some("verify-ca") => PgSslMode::VerifyCa,
        Some("verify-full") => PgSslMode::VerifyFull,
        Some(other) => {
            return Err(UrlTlsError {
                message: format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                ),
                help: "managed services usually need sslmode=require or verify-full".into(),
            });
        }
    };
    if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) && sslrootcert.is_none() {
        return Err(UrlTlsError {
            message: "sslmode verify-ca and verify-full need sslrootcert=<CA certificate file>"
                .into(),
            help: "add &sslrootcert=/path/to/ca.pem to the url".into(),
        });
    }
    let root_cert = sslrootcert.map(|p| {
        let p = std::path::PathBuf::from(p);
        if p.is_absolute() { p } else { base_dir.join(p) }
    });
    Ok((url, PgTls { mode, root_cert }))
}

/// `url` (as [`url_tls`] returned it) with the TLS settings put back as query parameters, so
/// [`url_tls`] reads the same settings from it anywhere (an absolute `sslrootcert`).
pub fn url_with_tls(url: &str, tls: &PgTls) -> String {
    let mode = match tls.mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut out = format!("{url}{sep}sslmode={mode}");
    if let Some(root) = &tls.root_cert {
        out.push_str(&format!("&sslrootcert={}", root.display()));
    }
    out
}

/// `schema.table` (either may hold `*`), or `None` when it is not that shape.
fn table_selector(s: &str) -> Option<TableSelector> {
    let (schema, table) = s.split_once('.')?;
    (!schema.is_empty() && !table.is_empty() && !table.contains('.')).then(|| TableSelector {
        schema: schema.to_string(),
        table: (table != "*").then(|| table.to_string()),
    })
}

/// Checks one postgres source; every problem is recorded in `diag`.
pub(super) fn validate(
    name: &str,
    raw: RawPostgresSource,
    config_path: &std::path::Path,
    diag: &mut Diagnostics,
) -> Option<PostgresSourceConfig> {
    let mut ok = true;
    let base_dir = super::Config::base_dir(config_path);
    let (url, tls) = connection(&raw, &base_dir, &mut ok, diag);
    let default_name = format!("switchyard_{}", name.replace('-', "_"));
    let mut ident = |v: &Option<serde_spanned::Spanned<String>>, what: &str| -> String {
        match v {
            None => default_name.clone(),
            Some(s) if pg_identifier(s.get_ref()) => s.get_ref().clone(),
            Some(s) => {
                diag.at(
                    s.span(),
                    format!("`{}` is not a valid {what} name", s.get_ref()),
                    Some("use lowercase letters, digits and _ (at most 63), not starting with a digit".into()),
                );
                ok = false;
                String::new()
            }
        }
    };
    let slot = ident(&raw.slot, "replication slot");
    let publication = ident(&raw.publication, "publication");
    let (tables, exclude) = selectors(&raw, &mut ok, diag);
    let snapshot = match &raw.snapshot {
        None => SnapshotMode::Never,
        Some(s) => diag
            .keyword(
                s,
                "snapshot mode",
                &[
                    ("never", SnapshotMode::Never),
                    ("initial", SnapshotMode::Initial),
                ],
                "write \"never\" or \"initial\"",
            )
            .unwrap_or_else(|| {
                ok = false;
                SnapshotMode::Never
            }),
    };
    let heartbeat_interval = match &raw.heartbeat_interval {
        None => Duration::from_secs(30),
        Some(v) => match super::validate::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                diag.at(
                    v.span(),
                    format!("invalid duration \"{}\"", v.get_ref()),
                    Some("write e.g. \"30s\"".into()),
                );
                ok = false;
                Duration::ZERO
            }
        },
    };
    let leader_timeout = match &raw.leader_timeout {
        None => DEFAULT_LEADER_TIMEOUT,
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d) if (MIN_LEADER_TIMEOUT..=MAX_LEADER_TIMEOUT).contains(&d) => d,
            _ => {
                diag.at(
                    v.span(),
                    format!("invalid leader_timeout \"{}\"", v.get_ref()),
                    Some(format!(
                        "write a duration from {} to {}, e.g. \"10s\" (the longest a frozen or cut-off leader keeps the slot)",
                        humantime::format_duration(MIN_LEADER_TIMEOUT),
                        humantime::format_duration(MAX_LEADER_TIMEOUT)
                    )),
                );
                ok = false;
                Duration::ZERO
            }
        },
    };
    let snapshot_chunk_rows = match &raw.snapshot_chunk_rows {
        None => 10_000,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(n @ 1..=1_000_000) => n,
            _ => {
                diag.at(
                    n.span(),
                    format!("snapshot_chunk_rows = {} is out of range", n.get_ref()),
                    Some("write a number of rows from 1 to 1000000, e.g. 10000".into()),
                );
                ok = false;
                0
            }
        },
    };
    let unavailable_value_placeholder = placeholder(&raw, &mut ok, diag);
    let _ = raw.kind;
    ok.then_some(PostgresSourceConfig {
        url,
        slot,
        publication,
        selection: TableSelection {
            tables,
            exclude,
            snapshot_new_tables: raw.snapshot_new_tables.unwrap_or(false),
        },
        heartbeat_interval,
        leader_timeout,
        tombstones: raw.tombstones.unwrap_or(true),
        tls,
        snapshot,
        snapshot_chunk_rows,
        unavailable_value_placeholder,
    })
}

/// The source's connection: its URL without the TLS parameters, and those. A URL that is not
/// a postgres:// one, or TLS settings that do not parse, are reported and clear `ok`.
fn connection(
    raw: &RawPostgresSource,
    base_dir: &std::path::Path,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> (String, PgTls) {
    let (url, tls) = match url_tls(raw.url.get_ref(), base_dir) {
        Ok(v) => v,
        Err(e) => {
            diag.at(raw.url.span(), e.message, Some(e.help));
            *ok = false;
            let tls = PgTls {
                mode: PgSslMode::Prefer,
                root_cert: None,
            };
            (split_tls(raw.url.get_ref()).0, tls)
        }
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        diag.at(
            raw.url.span(),
            "the postgres source url must start with postgres://",
            Some(
                "write url = \"postgres://user@host:5432/db\"; give the password as ${PGPASSWORD}"
                    .into(),
            ),
        );
        *ok = false;
    }
    (url, tls)
}

/// The tables to capture and the ones to leave out, as selectors (`schema.table`, with `*`
/// globs); an empty `tables` or an entry that is no selector is reported and clears `ok`.
fn selectors(
    raw: &RawPostgresSource,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> (Vec<TableSelector>, Vec<TableSelector>) {
    if raw.tables.get_ref().is_empty() {
        diag.at(
            raw.tables.span(),
            "`tables` is empty",
            Some(
                "list the tables to capture, e.g. tables = [\"public.orders\"] or [\"public.*\"]"
                    .into(),
            ),
        );
        *ok = false;
    }
    let mut parse = |list: &[serde_spanned::Spanned<String>], key: &str| {
        let mut out = Vec::new();
        for t in list {
            match table_selector(t.get_ref()) {
                Some(sel) => out.push(sel),
                None => {
                    diag.at(
                        t.span(),
                        format!("`{}` in `{key}` is not schema.table", t.get_ref()),
                        Some(
                            "write \"public.orders\", \"public.order_*\" (`*` matches any run of characters), or \"public.*\" for every table of a schema"
                                .into(),
                        ),
                    );
                    *ok = false;
                }
            }
        }
        out
    };
    let tables = parse(raw.tables.get_ref(), "tables");
    let exclude = raw
        .exclude_tables
        .as_ref()
        .map(|e| parse(e.get_ref(), "exclude_tables"))
        .unwrap_or_default();
    (tables, exclude)
}

/// What stands in for an unchanged TOASTed value: the key's text, or bytes after `hex:`.
fn placeholder(raw: &RawPostgresSource, ok: &mut bool, diag: &mut Diagnostics) -> Vec<u8> {
    match &raw.unavailable_value_placeholder {
        None => super::DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER
            .as_bytes()
            .to_vec(),
        Some(v) => match v.get_ref().strip_prefix("hex:") {
            None => v.get_ref().as_bytes().to_vec(),
            Some(digits) => match hex::decode(digits) {
                Ok(bytes) => bytes,
                Err(e) => {
                    diag.at(
                        v.span(),
                        format!("unavailable_value_placeholder `{}`: {e}", v.get_ref()),
                        Some(
                            "after `hex:` write an even number of hex digits, e.g. \"hex:deadbeef\"; or a plain string without the `hex:` prefix"
                                .into(),
                        ),
                    );
                    *ok = false;
                    Vec::new()
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigErrors, SourceKind};

    fn load(source_lines: &str) -> Result<Config, ConfigErrors> {
        let text = format!(
            "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
             [sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.*\"]\n\
             {source_lines}"
        );
        Config::from_str_with_env(Path::new("conf/routes.toml"), &text, |_| None)
    }

    fn placeholder(config: &Config) -> Vec<u8> {
        match &config.sources["db"].kind {
            SourceKind::Postgres(p) => p.unavailable_value_placeholder.clone(),
            SourceKind::Webhook(_) => panic!("a postgres source"),
        }
    }

    #[test]
    fn the_unavailable_value_placeholder_defaults_to_debeziums_and_reads_hex() {
        let default = load("").expect("valid");
        assert_eq!(placeholder(&default), b"__debezium_unavailable_value");
        let text = load("unavailable_value_placeholder = \"<toast>\"\n").expect("valid");
        assert_eq!(placeholder(&text), b"<toast>");
        let hex = load("unavailable_value_placeholder = \"hex:00ff7a\"\n").expect("valid");
        assert_eq!(placeholder(&hex), [0x00, 0xff, 0x7a]);
        let empty = load("unavailable_value_placeholder = \"\"\n").expect("valid");
        assert_eq!(placeholder(&empty), b"");
    }

    #[test]
    fn a_bad_hex_placeholder_is_an_error_at_its_line_and_column() {
        let errors = load("unavailable_value_placeholder = \"hex:abc\"\n")
            .expect_err("odd number of digits")
            .0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with(
                "conf/routes.toml:9:33: unavailable_value_placeholder `hex:abc`: Odd number of digits"
            ),
            "{}",
            text[0]
        );
        assert!(text[0].contains("help: after `hex:`"), "{}", text[0]);
        let errors = load("unavailable_value_placeholder = \"hex:zz\"\n")
            .expect_err("not hex")
            .0;
        assert!(
            errors[0].to_string().contains("Invalid character 'z'"),
            "{}",
            errors[0]
        );
    }
}
