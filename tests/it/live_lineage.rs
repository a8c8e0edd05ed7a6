//! `switchyard lineage --live` and `check --registry` read a postgres source's real tables
//! (read-only) instead of the configured globs.

use std::path::{Path, PathBuf};

use crate::support::postgres::PgCluster;
use crate::support::registry::Registry;
use crate::support::{free_port, run_cli_split as run, scratch};

fn write_config(dir: &Path, pg_url: &str, registry: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[schema_registry]
url = "{registry}"
timeout = "3s"

[sources.appdb]
type = "postgres"
url = "{pg_url}"
tables = ["public.*"]

[[routes]]
name = "changes"
source = "appdb"
"#
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn labels(json: &str, kind: &str) -> Vec<String> {
    let graph: serde_json::Value = serde_json::from_str(json).expect("lineage json");
    let mut out: Vec<String> = graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["kind"] == kind)
        .filter_map(|n| n["label"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_live_lists_the_real_tables_behind_a_glob_and_check_registry_their_subjects() {
    let dir = scratch();
    let pg = PgCluster::start();
    let db = pg.fresh_database("lineage").await;
    let (client, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric(10,2) NOT NULL);
             CREATE TABLE public.customers (id int PRIMARY KEY, email text);
             CREATE SCHEMA other; CREATE TABLE other.ignored (id int PRIMARY KEY);",
        )
        .await
        .expect("schema");
    let registry = Registry::start(dir.path());
    let path = write_config(dir.path(), &pg.url(&db), &registry.url());

    let (code, stdout, stderr) = run(&path, &["lineage", "--format", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(labels(&stdout, "table"), ["public.*"], "offline: the glob");

    let (code, stdout, stderr) = run(&path, &["lineage", "--live", "--format", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        labels(&stdout, "table"),
        ["public.customers", "public.orders"],
        "live: the tables the glob selects today"
    );
    assert_eq!(
        labels(&stdout, "topic"),
        ["appdb.public.customers", "appdb.public.orders"]
    );
    assert!(stderr.contains("does not exist yet"), "{stderr}");

    // The schemas the source would register, from the same table shapes; nothing registered.
    let (code, stdout, stderr) = run(&path, &["check", "--registry"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for subject in [
        "appdb.public.orders-value",
        "appdb.public.orders-key",
        "appdb.public.customers-value",
    ] {
        assert!(
            stdout.contains(&format!("{subject}: new subject")),
            "{subject}: {stdout}"
        );
    }
    assert!(!stdout.contains("other.ignored"), "{stdout}");

    // Once the publication exists, it is what the source streams.
    client
        .batch_execute("CREATE PUBLICATION switchyard_appdb FOR TABLE public.orders")
        .await
        .expect("publication");
    let (code, stdout, stderr) = run(&path, &["lineage", "--live", "--format", "openlineage"]);
    assert_eq!(code, Some(0), "{stderr}");
    let events: serde_json::Value = serde_json::from_str(&stdout).expect("openlineage json");
    assert_eq!(events[0]["job"]["name"], "changes");
    assert_eq!(
        events[0]["inputs"],
        serde_json::json!([{"namespace": format!("postgres://127.0.0.1:{}/lineage", pg.port()), "name": "public.orders"}])
    );
    assert_eq!(
        events[0]["outputs"],
        serde_json::json!([{"namespace": "kafka://127.0.0.1:9092", "name": "appdb.public.orders"}])
    );
    drop(client);
    let _ = task.await;

    // No database: the live list cannot be read.
    let closed = write_config(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{}/lineage", free_port()),
        &registry.url(),
    );
    let (code, _, stderr) = run(&closed, &["lineage", "--live"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read the live table list: source `appdb`"),
        "{stderr}"
    );
}
