//! The slot and the connections: heartbeats keep an idle slot moving, TLS for both
//! connections, on-call's slot status and reset, preflight errors that say what to fix.

use crate::support::cdc::*;
use crate::support::consume::read_topic;
use crate::support::postgres::PgCluster;
use crate::support::{Stack, daemon, wait_for_async};
use std::time::Duration;
use switchyard::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_idle_database_heartbeats_keep_the_slot_from_holding_wal() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let pg = PgCluster::start();
    let db = pg.fresh_database("idle").await;
    let busy = pg.fresh_database("busy").await;
    let client = connect(&pg, &db).await;
    client
        .batch_execute("CREATE TABLE quiet (id int PRIMARY KEY)")
        .await
        .expect("schema");
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.quiet\"",
        "quiet",
    );
    let text = std::fs::read_to_string(&config.path)
        .expect("read")
        .replace(
            "tombstones = false",
            "tombstones = false\nheartbeat_interval = \"500ms\"",
        );
    std::fs::write(&config.path, text).expect("write");
    let (sy, _) = daemon::start(Config::load(&config.path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    // Another database writes ~16 MB of WAL; nothing in the captured database changes.
    let lsn = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .ok()?
                .get::<_, Option<String>>(0)
                .and_then(|l| l.parse::<switchyard::source::postgres::lsn::Lsn>().ok())
        }
    };
    let before = lsn("SELECT pg_current_wal_lsn()::text").await.expect("lsn");
    let other = connect(&pg, &busy).await;
    other
        .batch_execute("CREATE TABLE noise AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 60000) g")
        .await
        .expect("noise");
    let after = lsn("SELECT pg_current_wal_lsn()::text").await.expect("lsn");
    assert!(
        after.0 - before.0 > 5_000_000,
        "the noise wrote WAL: {before} to {after}"
    );
    // The slot confirms past all of it although no change of its database came (on a busy
    // machine it may already have moved while the noise was written: heartbeats confirm what
    // was read). Held WAL would leave it before `after`.
    wait_for_async(
        "heartbeats to move the slot past the noise",
        Duration::from_secs(30),
        || async {
            let confirmed = lsn(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = 'switchyard_appdb'",
            )
            .await?;
            (confirmed >= after).then_some(())
        },
    )
    .await;
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full_work_for_both_connections() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let pg = PgCluster::start_with_tls();
    let db = pg.fresh_database("secure").await;
    let client = connect(&pg, &db).await;
    client
        .batch_execute(
            "CREATE ROLE tls_only LOGIN SUPERUSER REPLICATION;
             CREATE TABLE secrets (id int PRIMARY KEY, v text)",
        )
        .await
        .expect("schema");
    let base = format!("postgres://tls_only@127.0.0.1:{}/{db}", pg.port());
    // verify-full checks the certificate against a host name.
    let host_base = format!("postgres://tls_only@localhost:{}/{db}", pg.port());
    let ca = pg.ca_cert();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[kafka]
bootstrap_servers = "{}"
[schema_registry]
url = "{}"
[sources.req]
type = "postgres"
url = "{base}?sslmode=require"
tables = ["public.secrets"]
[sources.full]
type = "postgres"
url = "{host_base}?sslmode=verify-full&sslrootcert={}"
tables = ["public.secrets"]
[[routes]]
name = "req"
source = "req"
topic = "{{source}}.{{table}}"
[[routes]]
name = "full"
source = "full"
topic = "{{source}}.{{table}}"
"#,
            broker.bootstrap(),
            registry.url(),
            ca.display()
        ),
    )
    .expect("config");
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    for slot in ["switchyard_req", "switchyard_full"] {
        wait_for_async("the slots to be created over TLS", Duration::from_secs(30), || async {
            lsn(&client, &format!("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}' AND active")).await
        })
        .await;
    }
    client
        .batch_execute("INSERT INTO secrets VALUES (1, 'over TLS')")
        .await
        .expect("insert");
    for topic in ["req.secrets", "full.secrets"] {
        let records = tokio::task::spawn_blocking({
            let bootstrap = broker.bootstrap();
            let topic = topic.to_string();
            move || read_topic(&bootstrap, &topic, 1, Duration::from_secs(20))
        })
        .await
        .expect("consumer");
        assert_eq!(records.len(), 1, "{topic}");
    }
    let plain = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.usename = 'tls_only' AND NOT s.ssl",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get::<_, i64>(0);
    assert_eq!(plain, 0, "every connection of the source is encrypted");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_sees_the_slot_and_can_reset_it_only_when_it_is_not_in_use() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start("slots", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.t\"",
        "t",
    );
    let path = config.path.clone();
    let slot = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("slot")
            .args(args)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run switchyard slot")
    };
    let (sy, _) = daemon::start(config).await;
    wait_for_async("the slot to be active", Duration::from_secs(30), || async {
        lsn(&client, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb' AND active").await
    })
    .await;
    let status = slot(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("switchyard_appdb") && text.contains("true"),
        "{text}"
    );
    let busy = slot(&["reset", "--source", "appdb"]);
    assert_eq!(
        busy.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    daemon::stop(sy).await;
    wait_for_async(
        "the slot to be released",
        Duration::from_secs(30),
        || async {
            let row = client
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
                    &[],
                )
                .await
                .ok()?;
            (!row.get::<_, bool>(0)).then_some(())
        },
    )
    .await;
    let unknown = slot(&["reset", "--source", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    let reset = slot(&["reset", "--source", "appdb"]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the slot is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_errors_say_what_to_fix_and_the_source_recovers_once_fixed() {
    let stack = Stack::start();
    let pg = PgCluster::start();
    let db = pg.fresh_database("preflight").await;
    let admin = connect(&pg, &db).await;
    admin
        .batch_execute(
            "CREATE ROLE cdc LOGIN;
             CREATE TABLE t (id int PRIMARY KEY);
             CREATE TABLE nokey (v text);
             CREATE PUBLICATION pub FOR TABLE t, nokey;",
        )
        .await
        .expect("setup");
    admin
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('switchyard_preflight', 'test_decoding')",
        )
        .await
        .expect("a slot of another plugin");
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.preflight]\ntype = \"postgres\"\n\
             url = \"postgres://cdc@127.0.0.1:{}/{db}\"\npublication = \"pub\"\n\
             tables = [\"public.t\", \"public.nokey\"]\n[[routes]]\nname = \"r\"\nsource = \"preflight\"\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.port()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;

    // Each problem in turn: the error names the fix; once it is applied the source goes on.
    let steps: [(&str, &str); 4] = [
        ("ALTER ROLE cdc REPLICATION", "ALTER ROLE cdc REPLICATION"),
        (
            "GRANT SELECT ON public.",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc",
        ),
        (
            "ALTER TABLE public.nokey REPLICA IDENTITY FULL",
            "ALTER TABLE nokey REPLICA IDENTITY FULL",
        ),
        (
            "uses plugin Some(\"test_decoding\"), not pgoutput",
            "SELECT pg_drop_replication_slot('switchyard_preflight')",
        ),
    ];
    for (says, fix) in steps {
        let (state, error) = wait_for_async(
            &format!("the source to fail with `{says}`"),
            Duration::from_secs(90),
            || async {
                let (state, error) = source_state(&url, "preflight").await?;
                error.contains(says).then_some((state, error))
            },
        )
        .await;
        assert_eq!(state, "failing", "{error}");
        admin.batch_execute(fix).await.expect("fix");
    }
    wait_for_async("the source to stream", Duration::from_secs(90), || async {
        let (state, _) = source_state(&url, "preflight").await?;
        (state == "streaming").then_some(())
    })
    .await;
    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics.contains("switchyard_source_up{source=\"preflight\"} 1"),
        "{metrics}"
    );
    daemon::stop(sy).await;
}
