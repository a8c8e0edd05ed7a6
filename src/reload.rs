//! Reloading the configuration file into a running instance (SIGHUP, `[router] watch`, `POST
//! /api/v1/reload`): the routes are replaced, postgres sources get their tables; the rest is
//! reported as needing a restart.

use tracing::{info, warn};

use crate::config::{Config, SourceKind};
use crate::pipeline::Pipeline;
use crate::source::postgres::publication::Selections;

/// Reloads the routes from the configuration file: a valid file replaces the route table
/// atomically (events already routed keep the old one, the next event uses the new one); an
/// invalid file is logged with every error and the running table stays. A postgres source's
/// `tables`, `exclude_tables` and `snapshot_new_tables` go to the running source, whose
/// publication follows them. Every other change to `[sources]`, and to `[schema_registry]`,
/// is reported and needs a restart.
pub(crate) fn reload(
    pipeline: &Pipeline,
    running: &Config,
    selections: &Selections,
) -> Result<usize, String> {
    reload_to(pipeline, running, selections).map(|new| new.routes.len())
}

/// [`reload`], returning the configuration now in force (its routes).
pub(crate) fn reload_to(
    pipeline: &Pipeline,
    running: &Config,
    selections: &Selections,
) -> Result<Config, String> {
    let new = Config::load(&running.path).map_err(|e| e.to_string())?;
    if needs_restart(&running.sources, &new.sources) {
        warn!(
            "the [sources] section changed beyond postgres sources' tables: those changes take effect after a restart; routes and tables are reloaded now (routes of sources that do not run yet receive nothing)"
        );
    }
    if new.schema_registry != running.schema_registry {
        warn!(
            "the [schema_registry] section changed (URL, timeout or credentials): it takes effect after a restart; routes are reloaded now"
        );
    }
    pipeline.replace_routes(&new);
    for name in selections.apply(&new) {
        info!(source = %name, "reloaded the source's tables: its publication follows them now");
    }
    Ok(new)
}

/// True when `new` differs from `running` in more than postgres sources' table selections
/// (which a reload applies).
fn needs_restart(
    running: &std::collections::BTreeMap<String, crate::config::SourceConfig>,
    new: &std::collections::BTreeMap<String, crate::config::SourceConfig>,
) -> bool {
    let without_tables =
        |sources: &std::collections::BTreeMap<String, crate::config::SourceConfig>| {
            let mut sources = sources.clone();
            for s in sources.values_mut() {
                if let SourceKind::Postgres(pg) = &mut s.kind {
                    pg.selection = crate::config::TableSelection {
                        tables: Vec::new(),
                        exclude: Vec::new(),
                        snapshot_new_tables: false,
                    };
                }
            }
            format!("{sources:?}")
        };
    without_tables(running) != without_tables(new)
}
