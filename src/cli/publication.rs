//! `switchyard check --live`: each postgres source's publication against its `tables` and
//! `exclude_tables`, read from the database without changing anything.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, SourceKind};
use crate::source::postgres::{publication, stream};

/// Prints, per postgres source, what its publication would change to follow the configuration
/// (as the leader does at start and on reload). Exit 1 when a selector matches no table, 2
/// when a database cannot be reached or read.
pub(super) fn check_live(config: &Config) -> ExitCode {
    super::on_runtime(check(config))
}

async fn check(config: &Config) -> ExitCode {
    let (mut unmatched, mut unreachable) = (0, 0);
    for (name, source) in &config.sources {
        let SourceKind::Postgres(pg) = &source.kind else {
            continue;
        };
        let looked = async {
            let conn = tokio::time::timeout(Duration::from_secs(10), stream::connect_sql(pg))
                .await
                .map_err(|_| "the database did not answer within 10s".to_string())?
                .map_err(|e| e.to_string())?;
            let desired = publication::desired(&conn, &pg.selection)
                .await
                .map_err(|e| e.to_string())?;
            let current = publication::current(&conn, &pg.publication)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((desired, current))
        };
        let (desired, current) = match looked.await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: source `{name}`: {e}");
                unreachable += 1;
                continue;
            }
        };
        let plan = publication::plan(current.as_ref(), &desired);
        let what = if current.as_ref().is_some_and(|c| c.all_tables) {
            "FOR ALL TABLES, left as it is".to_string()
        } else if plan.create {
            let mut names: Vec<String> = desired
                .tables
                .iter()
                .map(|(s, t)| format!("{s}.{t}"))
                .collect();
            names.extend(desired.schemas.iter().map(|s| format!("schema {s}")));
            format!("would be created with {}", names.join(", "))
        } else if plan.is_empty() {
            plan.describe()
        } else {
            format!("would {}", plan.describe())
        };
        println!("  source {name}: publication {}: {what}", pg.publication);
        for selector in &desired.unmatched {
            eprintln!(
                "error: source `{name}`: `{selector}` in `tables` matches no table in the database\n  help: check the name (`*` matches any run of characters within a name), or create the table first"
            );
            unmatched += 1;
        }
    }
    if unreachable > 0 {
        ExitCode::from(2)
    } else if unmatched > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
