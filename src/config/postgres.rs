//! Validation of `[sources.<name>]` tables with `type = "postgres"`.

use std::time::Duration;

use super::diagnostic::Diagnostics;
use super::raw::RawPostgresSource;
use super::{PostgresSourceConfig, TableSelector};

fn pg_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Checks one postgres source; every problem is recorded in `diag`.
pub(super) fn validate(
    name: &str,
    raw: RawPostgresSource,
    diag: &mut Diagnostics,
) -> Option<PostgresSourceConfig> {
    let mut ok = true;
    let url = raw.url.get_ref().clone();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        diag.at(
            raw.url.span(),
            "the postgres source url must start with postgres://",
            Some(
                "write url = \"postgres://user@host:5432/db\"; give the password as ${PGPASSWORD}"
                    .into(),
            ),
        );
        ok = false;
    }
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
    let mut tables = Vec::new();
    if raw.tables.get_ref().is_empty() {
        diag.at(
            raw.tables.span(),
            "`tables` is empty",
            Some(
                "list the tables to capture, e.g. tables = [\"public.orders\"] or [\"public.*\"]"
                    .into(),
            ),
        );
        ok = false;
    }
    for t in raw.tables.get_ref() {
        match t.get_ref().split_once('.') {
            Some((schema, table))
                if !schema.is_empty() && !table.is_empty() && !table.contains('.') =>
            {
                tables.push(TableSelector {
                    schema: schema.to_string(),
                    table: (table != "*").then(|| table.to_string()),
                });
            }
            _ => {
                diag.at(
                    t.span(),
                    format!("`{}` is not schema.table", t.get_ref()),
                    Some(
                        "write \"public.orders\", or \"public.*\" for every table of a schema"
                            .into(),
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(s) = &raw.snapshot {
        match s.get_ref().as_str() {
            "never" => {}
            "initial" => {
                diag.at(
                    s.span(),
                    "snapshot = \"initial\" is not available in this version yet",
                    Some("use snapshot = \"never\": changes committed after the slot exists are captured".into()),
                );
                ok = false;
            }
            other => {
                diag.at(
                    s.span(),
                    format!("unknown snapshot mode \"{other}\""),
                    Some("write \"never\" or \"initial\"".into()),
                );
                ok = false;
            }
        }
    }
    let heartbeat_interval = match &raw.heartbeat_interval {
        None => Duration::from_secs(30),
        Some(v) => match humantime::parse_duration(v.get_ref()) {
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
    let _ = raw.kind;
    ok.then_some(PostgresSourceConfig {
        url,
        slot,
        publication,
        tables,
        heartbeat_interval,
        tombstones: raw.tombstones.unwrap_or(true),
    })
}
