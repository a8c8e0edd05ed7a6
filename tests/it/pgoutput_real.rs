//! The pgoutput decoder reads what a real PostgreSQL 15 sends: the bytes come from
//! `pg_logical_slot_get_binary_changes` on a private cluster.

use switchyard::source::postgres::pgoutput::{Datum, Message, OldTuple, ReplicaIdentity, decode};

use crate::support::postgres::PgCluster;

#[tokio::test]
async fn the_decoder_reads_every_message_a_real_server_sends() {
    let pg = PgCluster::start();
    let db = pg.fresh_database("pgoutput_real").await;
    let (client, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    // One statement per call: each is its own transaction, as a slot needs.
    for sql in [
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text, big text, total numeric(10,2))",
        // Out of line and uncompressed, so that an update of another column leaves it unchanged.
        "ALTER TABLE orders ALTER COLUMN big SET STORAGE EXTERNAL",
        "CREATE TABLE audit (id int PRIMARY KEY, what text)",
        "ALTER TABLE audit REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE orders, audit",
        "SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
        "INSERT INTO orders VALUES (1, 'café ✓', repeat('x', 100000), 12.50)",
        "UPDATE orders SET note = NULL WHERE id = 1",
        "UPDATE orders SET id = 2 WHERE id = 1",
        "INSERT INTO audit VALUES (7, 'created')",
        "UPDATE audit SET what = 'changed' WHERE id = 7",
        "DELETE FROM orders WHERE id = 2",
        "TRUNCATE audit",
        "SELECT pg_logical_emit_message(true, 'switchyard.heartbeat', '{}')",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('s', NULL, NULL,
                 'proto_version', '1', 'publication_names', 'p', 'messages', 'true')",
            &[],
        )
        .await
        .expect("changes");
    let messages: Vec<Message> = rows
        .iter()
        .map(|r| decode(r.get::<_, &[u8]>(0)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    drop(client);
    let _ = task.await;

    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| match m {
            Message::Begin(_) => "B",
            Message::Commit(_) => "C",
            Message::Relation(_) => "R",
            Message::Insert(_) => "I",
            Message::Update(_) => "U",
            Message::Delete(_) => "D",
            Message::Truncate(_) => "T",
            Message::LogicalMessage(_) => "M",
            Message::Origin(_) => "O",
            Message::Type(_) => "Y",
        })
        .collect();
    assert_eq!(
        kinds.join(""),
        "BRIC BUC BUC BRIC BUC BDC BRTC BMC".replace(' ', ""),
        "one transaction per statement; a relation before its first use and again after TRUNCATE"
    );

    let Message::Relation(orders) = &messages[1] else {
        panic!("relation first")
    };
    assert_eq!(
        (orders.namespace.as_str(), orders.name.as_str()),
        ("public", "orders")
    );
    assert_eq!(orders.replica_identity, ReplicaIdentity::Default);
    let names: Vec<&str> = orders.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "note", "big", "total"]);
    assert!(orders.columns[0].is_key && !orders.columns[1].is_key);
    assert_eq!(orders.columns[3].type_oid, 1700, "numeric");

    let Message::Insert(ins) = &messages[2] else {
        panic!("insert")
    };
    assert_eq!(ins.new.0[0], Datum::Text(b"1".to_vec()));
    assert_eq!(ins.new.0[1], Datum::Text("café ✓".as_bytes().to_vec()));
    assert!(matches!(&ins.new.0[2], Datum::Text(t) if t.len() == 100_000));
    assert_eq!(ins.new.0[3], Datum::Text(b"12.50".to_vec()));

    // The TOASTed column did not change: it is "unchanged", not NULL; the note is NULL.
    let Message::Update(upd) = &messages[5] else {
        panic!("update")
    };
    assert_eq!(
        upd.old, None,
        "REPLICA IDENTITY DEFAULT sends no old row when the key is unchanged"
    );
    assert_eq!(upd.new.0[1], Datum::Null);
    assert!(
        matches!(upd.new.0[2], Datum::UnchangedToast),
        "the unchanged TOASTed column must arrive as 'u'"
    );

    // The key changed: the old key comes along.
    let Message::Update(key_change) = &messages[8] else {
        panic!("update")
    };
    assert!(
        matches!(&key_change.old, Some(OldTuple::Key(t)) if t.0[0] == Datum::Text(b"1".to_vec()))
    );

    // REPLICA IDENTITY FULL sends the whole old row.
    let Message::Update(full) = &messages[15] else {
        panic!("update of audit")
    };
    assert!(
        matches!(&full.old, Some(OldTuple::Full(t)) if t.0[1] == Datum::Text(b"created".to_vec()))
    );

    let Message::Delete(del) = &messages[18] else {
        panic!("delete")
    };
    assert!(matches!(&del.old, OldTuple::Key(t) if t.0[0] == Datum::Text(b"2".to_vec())));
    let Message::Truncate(tr) = &messages[22] else {
        panic!("truncate")
    };
    assert_eq!(tr.relations.len(), 1);
    let Message::LogicalMessage(m) = &messages[25] else {
        panic!("message")
    };
    assert_eq!(
        (m.prefix.as_str(), m.content.as_slice()),
        ("switchyard.heartbeat", b"{}".as_slice())
    );

    // Commit LSNs only move forward.
    let commits: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Commit(c) => Some(c.end_lsn),
            _ => None,
        })
        .collect();
    assert!(commits.windows(2).all(|w| w[0] < w[1]), "{commits:?}");
}
