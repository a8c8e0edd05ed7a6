//! Backfills while streaming (issue #25): a table copied again in chunks between watermarks
//! while a writer updates it. Read back from Kafka: every row is there, each key's last record
//! is the database's final row, and no key's snapshot read lands after a newer change of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cdc_order::{Rng, bursts, counters, counters_db, load, read_until_final};
use crate::support::cdc::wait_for_slot;
use crate::support::{Stack, daemon, run_cli_split, wait_for_async};

const ROWS: i64 = 200_000;

/// A configuration streaming `public.counters` of `pg_url` as source `name` (no initial
/// snapshot) to topic `{table}`, with `server` lines in `[server]` and `more` sections after.
fn config_text(stack: &Stack, pg_url: &str, name: &str, server: &str, more: &str) -> String {
    format!(
        r#"
[server]
{server}
[kafka]
bootstrap_servers = "{}"
partitions = 3
[schema_registry]
url = "{}"
[sources.{name}]
type = "postgres"
url = "{pg_url}"
tables = ["public.counters"]
snapshot = "never"
[[routes]]
name = "r"
source = "{name}"
topic = "{{table}}"
{more}
"#,
        stack.broker.bootstrap(),
        stack.registry.url()
    )
}

/// [`config_text`] with the webhook port on any free port, written to the scratch dir.
fn config(stack: &Stack, pg_url: &str, name: &str) -> std::path::PathBuf {
    let path = stack.dir.path().join("routes.toml");
    let text = config_text(stack, pg_url, name, "listen = \"127.0.0.1:0\"", "");
    std::fs::write(&path, text).expect("config");
    path
}

/// `snapshot start --source NAME ARGS…` succeeds: the backfill's id.
fn start(path: &std::path::Path, name: &str, args: &[&str]) -> String {
    let mut all = vec!["snapshot", "start", "--source", name];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli_split(path, &all);
    assert_eq!(code, Some(0), "{err}");
    out.trim().to_string()
}

/// `snapshot status` of source `name`, as JSON.
fn status(path: &std::path::Path, name: &str) -> serde_json::Value {
    let (code, out, err) = run_cli_split(path, &["snapshot", "status", "--source", name]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).expect("status json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_concurrent_updates_keeps_per_key_order_and_ends_in_the_final_state() {
    let name = "backfill";
    let db = counters_db("backfill", ROWS).await;
    let stack = Stack::start();
    let url = db.pg.url(&db.db);
    let path = config(&stack, &url, name);
    let (sy, _) = daemon::start(load(&path)).await;
    wait_for_slot(&db.client, &format!("switchyard_{name}")).await;

    // An invalid condition is refused with the database's words, before anything starts.
    let (code, _, err) = run_cli_split(
        &path,
        &[
            "snapshot",
            "start",
            "--source",
            name,
            "--table",
            "public.counters",
            "--where",
            "no_such_column > 1",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no_such_column") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(status(&path, name)["state"], "none");

    // A writer updates random rows at a steady rate all along.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let client = crate::support::cdc::connect(&db.pg, &db.db).await;
        tokio::spawn(async move {
            let mut rng = Rng::seeded();
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                bursts(&client, &mut rng, ROWS as u64, 1, 5).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };
    let id = start(
        &path,
        name,
        &["--table", "public.counters", "--chunk-rows", "5000"],
    );
    let done = wait_for_async("the backfill to end", Duration::from_secs(300), || async {
        let s = status(&path, name);
        (s["state"] != "requested" && s["state"] != "running").then_some(s)
    })
    .await;
    assert_eq!(
        (done["id"].as_str(), done["state"].as_str()),
        (Some(id.as_str()), Some("done")),
        "{done}"
    );
    writing.store(false, Ordering::Relaxed);
    let transactions = writer.await.expect("writer");
    eprintln!("writer: {transactions} transactions during the backfill; backfill: {done}");
    assert!(
        transactions > 50,
        "the table was written to during the backfill"
    );

    let finals = counters(&db.client).await;
    let by_key = read_until_final(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        &finals,
        180,
    )
    .await;
    assert_eq!(by_key.len(), ROWS as usize, "every row is in Kafka");
    let mut reads = 0usize;
    for (id, changes) in &by_key {
        assert_eq!(
            changes.last().and_then(|c| c.v),
            finals.get(id).copied(),
            "key {id}: the last record is the database's final row: {changes:?}"
        );
        // v only grows: a read older than a change before it would show a smaller v.
        let mut newest = i64::MIN;
        for c in changes {
            let v = c.v.expect("no deletes here");
            if c.op == "r" {
                reads += 1;
                assert_eq!(
                    c.snapshot.as_deref(),
                    Some("incremental"),
                    "key {id}: {c:?}"
                );
                assert!(
                    v >= newest,
                    "key {id}: a snapshot read (v {v}) after a newer change (v {newest}): {changes:?}"
                );
            }
            newest = newest.max(v);
        }
    }
    assert!(reads > 0 && reads <= ROWS as usize, "{reads} reads");

    // A filtered backfill copies exactly the matching rows.
    let second = start(
        &path,
        name,
        &["--table", "counters", "--where", "id <= 100"],
    );
    let done = wait_for_async(
        "the filtered backfill to end",
        Duration::from_secs(120),
        || async {
            let s = status(&path, name);
            (s["id"] == second.as_str() && s["state"] == "done").then_some(s)
        },
    )
    .await;
    assert_eq!(done["rows"], 100, "{done}");
    let (_, audit, _) = run_cli_split(&path, &["dlq", "audit", "--format", "json"]);
    assert!(
        audit.contains("backfill start") && audit.contains("id <= 100"),
        "{audit}"
    );
    daemon::stop(sy).await;
}

/// A leader killed (`kill -9`) mid-backfill: the standby sharing its `postgres://` store takes
/// the slot and resumes the backfill after the last durable chunk; every row arrives, and the
/// copy was not started over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_resumes_on_the_standby_after_the_leader_is_killed() {
    const N: i64 = 60_000;
    let name = "resumed";
    let db = counters_db("backfill_failover", N).await;
    let store_db = db.pg.fresh_database("backfill_store").await;
    let stack = Stack::start();
    let instance = |n: usize| {
        let port = crate::support::free_port();
        let home = stack.dir.path().join(format!("instance-{n}"));
        std::fs::create_dir_all(&home).expect("instance dir");
        let path = home.join("routes.toml");
        let text = config_text(
            &stack,
            &db.pg.url(&db.db),
            name,
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("[dlq]\nurl = \"{}\"", db.pg.url(&store_db)),
        );
        std::fs::write(&path, text).expect("config");
        (path, format!("http://127.0.0.1:{port}"))
    };
    let (a_path, a_url) = instance(0);
    let (b_path, _) = instance(1);
    let mut a = daemon::spawn_binary(&a_path, stack.dir.path().join("a.log"));
    wait_for_slot(&db.client, &format!("switchyard_{name}")).await;
    wait_for_async("the leader to stream", Duration::from_secs(60), || async {
        (crate::support::cdc::source_state(&a_url, name).await?.0 == "streaming").then_some(())
    })
    .await;
    let mut b = daemon::spawn_binary(&b_path, stack.dir.path().join("b.log"));

    // Paced, so that it is still running when the leader dies.
    start(
        &a_path,
        name,
        &[
            "--table",
            "counters",
            "--chunk-rows",
            "2000",
            "--rate",
            "10000/s",
        ],
    );
    let at_kill = wait_for_async("a few durable chunks", Duration::from_secs(60), || async {
        let s = status(&a_path, name);
        (s["state"] == "running" && s["chunks"].as_u64() >= Some(3)).then_some(s)
    })
    .await;
    a.kill(); // SIGKILL
    let done = wait_for_async(
        "the standby to finish the backfill",
        Duration::from_secs(120),
        || async {
            let s = status(&b_path, name);
            (s["state"] == "done").then_some(s)
        },
    )
    .await;
    eprintln!("at the kill: {at_kill}\nafter: {done}");
    b.assert_running();

    let finals = counters(&db.client).await;
    let by_key = read_until_final(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        &finals,
        120,
    )
    .await;
    assert_eq!(by_key.len(), N as usize, "every row is in Kafka");
    let reads: usize = by_key
        .values()
        .map(|c| c.iter().filter(|c| c.op == "r").count())
        .sum();
    // Resumed, not started over: beyond the rows, at most the chunks in flight at the kill
    // were read twice.
    assert!(
        reads >= N as usize && reads <= N as usize + 2 * 2000,
        "{reads} reads of {N} rows: the standby started the copy over"
    );
    b.kill();
}

/// The same backfill through the admin API: an operator starts it (a viewer may not), a bad
/// condition is refused with the database's words, its status is polled, and the trail names
/// the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_through_the_admin_api_is_the_operators_and_audited() {
    use crate::admin_api::{OPERATOR, VIEWER, call};
    let name = "apibf";
    let db = counters_db("backfill_api", 1000).await;
    let stack = Stack::start();
    let path = stack.dir.path().join("routes.toml");
    let sha = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
    let tokens = format!(
        "[admin.tokens.viewer]\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [admin.tokens.operator]\nrole = \"operator\"\nsha256 = \"{}\"",
        sha(VIEWER),
        sha(OPERATOR)
    );
    let text = config_text(
        &stack,
        &db.pg.url(&db.db),
        name,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        &tokens,
    );
    std::fs::write(&path, text).expect("config");
    let (sy, _) = daemon::start(load(&path)).await;
    wait_for_slot(&db.client, &format!("switchyard_{name}")).await;
    let admin = format!("http://{}", sy.admin_addr().expect("admin"));
    let url = format!("{admin}/api/v1/backfills");
    let body = serde_json::json!({"source": name, "table": "public.counters", "chunk_rows": 300});
    assert_eq!(
        call("POST", &url, Some(VIEWER), Some(body.clone())).await.0,
        403
    );
    let (status, bad) = call(
        "POST",
        &url,
        Some(OPERATOR),
        Some(serde_json::json!({"source": name, "table": "counters", "where": "nope("})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("syntax error")),
        "{bad}"
    );
    let (status, started) = call("POST", &url, Some(OPERATOR), Some(body)).await;
    assert_eq!(status, 202, "{started}");
    let done = wait_for_async("the backfill to end", Duration::from_secs(60), || async {
        let (_, s) = call("GET", &format!("{url}/{name}"), Some(VIEWER), None).await;
        (s["state"] == "done").then_some(s)
    })
    .await;
    assert_eq!(
        (done["rows"].as_u64(), done["chunks"].as_u64()),
        (Some(1000), Some(4)),
        "{done}"
    );
    let metrics = daemon::metrics(&admin).await;
    for line in [
        "switchyard_snapshot_remaining_rows{source=\"apibf\"} 0",
        "switchyard_snapshot_rows_total{source=\"apibf\",table=\"public.counters\"} 1000",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert_eq!(
        call("DELETE", &format!("{url}/{name}"), Some(OPERATOR), None)
            .await
            .0,
        409
    );
    let (_, log) = call(
        "GET",
        &format!("{admin}/api/v1/audit?limit=100"),
        Some(VIEWER),
        None,
    )
    .await;
    assert!(
        log.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["action"] == "backfill start" && r["actor"] == "token:operator"),
        "{log}"
    );
    daemon::stop(sy).await;
}
