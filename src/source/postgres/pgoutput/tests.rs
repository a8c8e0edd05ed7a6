//! One test per message type, built byte by byte as the protocol documentation lays them out,
//! plus malformed input: every truncation of every valid message is an error, never a panic.

use super::*;

#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn tag(c: u8) -> Self {
        Bytes(vec![c])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    fn text(mut self, s: &[u8]) -> Self {
        self.0.push(b't');
        self.0.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// A tuple of (id text, NULL, unchanged TOAST).
fn tuple(b: Bytes, id: &str) -> Bytes {
    b.i16(3).text(id.as_bytes()).u8(b'n').u8(b'u')
}

fn expected_tuple(id: &str) -> Tuple {
    Tuple(vec![
        Datum::Text(id.as_bytes().to_vec()),
        Datum::Null,
        Datum::UnchangedToast,
    ])
}

const TS_PG: u64 = 784_111_777_000_000; // 2024-11-05T08:49:37Z in Postgres-epoch micros

fn samples() -> Vec<Vec<u8>> {
    vec![
        Bytes::tag(b'B').u64(0x16_B374_D848).u64(TS_PG).u32(747).0,
        Bytes::tag(b'C')
            .u8(0)
            .u64(0x16_B374_D848)
            .u64(0x16_B374_D900)
            .u64(TS_PG)
            .0,
        Bytes::tag(b'O').u64(0x1_0000_0000).str("node-a").0,
        Bytes::tag(b'R')
            .u32(16384)
            .str("public")
            .str("orders")
            .u8(b'd')
            .i16(2)
            .u8(1)
            .str("id")
            .u32(20)
            .i32(-1)
            .u8(0)
            .str("total")
            .u32(1700)
            .i32(655366)
            .0,
        Bytes::tag(b'Y').u32(16500).str("public").str("mood").0,
        tuple(Bytes::tag(b'I').u32(16384).u8(b'N'), "1").0,
        tuple(Bytes::tag(b'U').u32(16384).u8(b'N'), "1").0,
        tuple(
            tuple(Bytes::tag(b'U').u32(16384).u8(b'K'), "1").u8(b'N'),
            "2",
        )
        .0,
        tuple(
            tuple(Bytes::tag(b'U').u32(16384).u8(b'O'), "1").u8(b'N'),
            "1",
        )
        .0,
        tuple(Bytes::tag(b'D').u32(16384).u8(b'K'), "1").0,
        tuple(Bytes::tag(b'D').u32(16384).u8(b'O'), "1").0,
        Bytes::tag(b'T').u32(2).u8(3).u32(16384).u32(16390).0,
        Bytes::tag(b'M')
            .u8(1)
            .u64(0x16_0000_0010)
            .str("switchyard.heartbeat")
            .u32(3)
            .raw(b"{}\n")
            .0,
    ]
}

#[test]
fn begin() {
    let m = decode(&samples()[0]).unwrap();
    assert_eq!(
        m,
        Message::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time_micros: TS_PG as i64 + PG_EPOCH_OFFSET_MICROS,
            xid: 747,
        })
    );
}

#[test]
fn commit() {
    let Message::Commit(c) = decode(&samples()[1]).unwrap() else {
        panic!("commit")
    };
    assert_eq!(c.commit_lsn, Lsn(0x16_B374_D848));
    assert_eq!(c.end_lsn, Lsn(0x16_B374_D900));
    assert_eq!(c.commit_time_micros, 1_730_796_577_000_000);
}

#[test]
fn origin() {
    let m = decode(&samples()[2]).unwrap();
    assert_eq!(
        m,
        Message::Origin(Origin {
            origin_lsn: Lsn(0x1_0000_0000),
            name: "node-a".into()
        })
    );
}

#[test]
fn relation() {
    let Message::Relation(r) = decode(&samples()[3]).unwrap() else {
        panic!("relation")
    };
    assert_eq!(
        (r.oid, r.namespace.as_str(), r.name.as_str()),
        (16384, "public", "orders")
    );
    assert_eq!(r.replica_identity, ReplicaIdentity::Default);
    assert_eq!(r.columns.len(), 2);
    assert_eq!(
        r.columns[0],
        Column {
            is_key: true,
            name: "id".into(),
            type_oid: 20,
            type_modifier: -1
        }
    );
    assert_eq!(
        (
            r.columns[1].is_key,
            r.columns[1].type_oid,
            r.columns[1].type_modifier
        ),
        (false, 1700, 655366)
    );
}

#[test]
fn type_message() {
    let m = decode(&samples()[4]).unwrap();
    assert_eq!(
        m,
        Message::Type(Type {
            oid: 16500,
            namespace: "public".into(),
            name: "mood".into()
        })
    );
}

#[test]
fn insert_keeps_null_and_unchanged_toast_apart() {
    let m = decode(&samples()[5]).unwrap();
    assert_eq!(
        m,
        Message::Insert(Insert {
            relation: 16384,
            new: expected_tuple("1")
        })
    );
}

#[test]
fn update_without_old_tuple() {
    let m = decode(&samples()[6]).unwrap();
    assert_eq!(
        m,
        Message::Update(Update {
            relation: 16384,
            old: None,
            new: expected_tuple("1")
        })
    );
}

#[test]
fn update_with_old_key() {
    let m = decode(&samples()[7]).unwrap();
    assert_eq!(
        m,
        Message::Update(Update {
            relation: 16384,
            old: Some(OldTuple::Key(expected_tuple("1"))),
            new: expected_tuple("2"),
        })
    );
}

#[test]
fn update_with_old_row() {
    let Message::Update(u) = decode(&samples()[8]).unwrap() else {
        panic!("update")
    };
    assert_eq!(u.old, Some(OldTuple::Full(expected_tuple("1"))));
}

#[test]
fn delete_with_key_and_with_full_row() {
    let Message::Delete(d) = decode(&samples()[9]).unwrap() else {
        panic!("delete")
    };
    assert_eq!(d.old, OldTuple::Key(expected_tuple("1")));
    let Message::Delete(d) = decode(&samples()[10]).unwrap() else {
        panic!("delete")
    };
    assert_eq!(d.old, OldTuple::Full(expected_tuple("1")));
}

#[test]
fn truncate() {
    let m = decode(&samples()[11]).unwrap();
    assert_eq!(
        m,
        Message::Truncate(Truncate {
            cascade: true,
            restart_identity: true,
            relations: vec![16384, 16390]
        })
    );
}

#[test]
fn logical_decoding_message() {
    let m = decode(&samples()[12]).unwrap();
    assert_eq!(
        m,
        Message::LogicalMessage(LogicalMessage {
            transactional: true,
            lsn: Lsn(0x16_0000_0010),
            prefix: "switchyard.heartbeat".into(),
            content: b"{}\n".to_vec(),
        })
    );
}

#[test]
fn every_truncation_of_every_message_is_an_error_not_a_panic() {
    for sample in samples() {
        for len in 0..sample.len() {
            let err = decode(&sample[..len]).expect_err("a truncated message must not decode");
            assert!(err.offset <= len, "{err}");
        }
        let mut longer = sample.clone();
        longer.push(0);
        let err = decode(&longer).expect_err("trailing bytes are an error");
        assert!(err.problem.contains("trailing"), "{err}");
    }
}

#[test]
fn malformed_messages_name_what_is_wrong() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![b'Z', 1, 2], "unknown message type 'Z'"),
        (Bytes::tag(b'S').u32(1).u8(1).0, "unknown message type 'S'"),
        (
            Bytes::tag(b'I').u32(1).u8(b'X').0,
            "expected 'N', found 'X'",
        ),
        (
            Bytes::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'q').0,
            "unknown value kind 'q'",
        ),
        (Bytes::tag(b'I').u32(1).u8(b'N').i16(-1).0, "negative count"),
        (
            Bytes::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-5).0,
            "negative length",
        ),
        (Bytes::tag(b'I').u32(1).u8(b'N').i16(30000).0, "cannot fit"),
        (
            Bytes::tag(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(i32::MAX)
                .0,
            "needs 2147483647 bytes",
        ),
        (
            Bytes::tag(b'R')
                .u32(1)
                .str("public")
                .str("t")
                .u8(b'x')
                .i16(0)
                .0,
            "unknown replica identity 'x'",
        ),
        (Bytes::tag(b'R').u32(1).raw(b"pub").0, "no terminating NUL"),
        (
            Bytes::tag(b'Y').u32(1).raw(&[0xff, 0xfe, 0]).str("t").0,
            "not UTF-8",
        ),
        (Bytes::tag(b'D').u32(1).u8(b'N').0, "expected 'K' or 'O'"),
        (Bytes::tag(b'T').u32(u32::MAX).u8(0).0, "cannot fit"),
        (
            Bytes::tag(b'M')
                .u8(0)
                .u64(1)
                .str("p")
                .u32(100)
                .raw(b"short")
                .0,
            "needs 100 bytes",
        ),
    ];
    for (bytes, expected) in cases {
        let err = decode(&bytes).expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "expected `{expected}` in `{err}`"
        );
    }
    assert_eq!(decode(&[]).unwrap_err().problem, "no bytes");
}
