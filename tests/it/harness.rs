//! The harness gives each test a real Postgres that can do logical replication.

use crate::support::postgres::PgCluster;

#[tokio::test]
async fn a_private_cluster_has_logical_replication_and_a_fresh_database() {
    let pg = PgCluster::start();
    let db = pg.fresh_database("harness_check").await;
    let (client, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let row = client.query_one("SHOW wal_level", &[]).await.expect("show");
    assert_eq!(row.get::<_, String>(0), "logical");
    client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot('s1', 'pgoutput')",
            &[],
        )
        .await
        .expect("a pgoutput slot can be created");
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("db");
    assert_eq!(row.get::<_, String>(0), "harness_check");
    drop(client);
    let _ = task.await;
}
