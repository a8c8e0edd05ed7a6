//! The pgoutput decoder (`source::postgres::pgoutput::decode`) on the bytes of a replication
//! stream: every message type written by a model writer and read back, the same messages cut
//! short, with length and count fields set to huge values, with wrong tags, and plain noise.

use proptest::prelude::*;
use switchyard::source::postgres::lsn::Lsn;
use switchyard::source::postgres::pgoutput::{
    Begin, Column, Commit, Datum, Delete, Insert, LogicalMessage, Message, OldTuple,
    PG_EPOCH_OFFSET_MICROS, Relation, ReplicaIdentity, Truncate, Tuple, Type, Update, decode,
};

use crate::{cases, within_heap};

/// The most a decode may hold for `len` input bytes: every decoded item (a column, a value)
/// takes at least one input byte and at most 64 bytes of heap, so a length field that asks for
/// more than the message holds shows as far more than this.
fn heap_limit(len: usize) -> u64 {
    64 * len as u64 + 4096
}

/// Decodes with the allocation bound and the shape of an error checked.
fn decode_checked(bytes: &[u8]) -> Result<Message, String> {
    let shown = || format!("decoding {} bytes {:02x?}", bytes.len(), short(bytes));
    let out = within_heap(heap_limit(bytes.len()), &shown, || decode(bytes));
    out.map_err(|e| {
        assert!(
            e.offset <= bytes.len(),
            "{}: error offset {} past the end",
            shown(),
            e.offset
        );
        let text = e.to_string();
        assert!(
            text.starts_with("malformed pgoutput ") && !e.problem.is_empty(),
            "{}: {text}",
            shown()
        );
        text
    })
}

fn short(b: &[u8]) -> &[u8] {
    &b[..b.len().min(64)]
}

// ---- A model writer: the protocol documentation's layout, message by message ----

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn time(&mut self, unix_micros: i64) -> &mut Self {
        self.u64((unix_micros - PG_EPOCH_OFFSET_MICROS) as u64)
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    fn tuple(&mut self, t: &Tuple) -> &mut Self {
        self.i16(t.0.len() as i16);
        for d in &t.0 {
            match d {
                Datum::Null => {
                    self.u8(b'n');
                }
                Datum::UnchangedToast => {
                    self.u8(b'u');
                }
                Datum::Text(b) | Datum::Binary(b) => {
                    self.u8(if matches!(d, Datum::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    self.u32(b.len() as u32);
                    self.0.extend_from_slice(b);
                }
            }
        }
        self
    }
    fn old(&mut self, old: &OldTuple) -> &mut Self {
        match old {
            OldTuple::Key(t) => self.u8(b'K').tuple(t),
            OldTuple::Full(t) => self.u8(b'O').tuple(t),
        }
    }
}

/// The bytes pgoutput sends for `m`.
fn encode(m: &Message) -> Vec<u8> {
    let mut w = W(Vec::new());
    match m {
        Message::Begin(b) => {
            w.u8(b'B')
                .u64(b.final_lsn.0)
                .time(b.commit_time_micros)
                .u32(b.xid);
        }
        Message::Commit(c) => {
            w.u8(b'C')
                .u8(c.flags)
                .u64(c.commit_lsn.0)
                .u64(c.end_lsn.0)
                .time(c.commit_time_micros);
        }
        Message::Origin(o) => {
            w.u8(b'O').u64(o.origin_lsn.0).str(&o.name);
        }
        Message::Relation(r) => {
            w.u8(b'R').u32(r.oid).str(&r.namespace).str(&r.name);
            w.u8(match r.replica_identity {
                ReplicaIdentity::Default => b'd',
                ReplicaIdentity::Nothing => b'n',
                ReplicaIdentity::Full => b'f',
                ReplicaIdentity::Index => b'i',
            });
            w.i16(r.columns.len() as i16);
            for c in &r.columns {
                w.u8(u8::from(c.is_key))
                    .str(&c.name)
                    .u32(c.type_oid)
                    .u32(c.type_modifier as u32);
            }
        }
        Message::Type(t) => {
            w.u8(b'Y').u32(t.oid).str(&t.namespace).str(&t.name);
        }
        Message::Insert(i) => {
            w.u8(b'I').u32(i.relation).u8(b'N').tuple(&i.new);
        }
        Message::Update(u) => {
            w.u8(b'U').u32(u.relation);
            if let Some(old) = &u.old {
                w.old(old);
            }
            w.u8(b'N').tuple(&u.new);
        }
        Message::Delete(d) => {
            w.u8(b'D').u32(d.relation).old(&d.old);
        }
        Message::Truncate(t) => {
            w.u8(b'T')
                .u32(t.relations.len() as u32)
                .u8(u8::from(t.cascade) | u8::from(t.restart_identity) << 1);
            for r in &t.relations {
                w.u32(*r);
            }
        }
        Message::LogicalMessage(m) => {
            w.u8(b'M')
                .u8(u8::from(m.transactional))
                .u64(m.lsn.0)
                .str(&m.prefix)
                .u32(m.content.len() as u32);
            w.0.extend_from_slice(&m.content);
        }
    }
    w.0
}

// ---- Generators of valid messages ----

/// Names as Postgres sends them: UTF-8 without NUL, sometimes empty, sometimes not ASCII.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_][a-z0-9_]{0,12}", "", "\\PC{0,6}"].prop_map(|s: String| s.replace('\0', ""))
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Commit times whose Postgres-epoch form fits the wire's 64 bits.
fn time() -> impl Strategy<Value = i64> {
    i64::MIN + PG_EPOCH_OFFSET_MICROS..=i64::MAX
}

fn datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        Just(Datum::Null),
        Just(Datum::UnchangedToast),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Datum::Text),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Datum::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(datum(), 0..8).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let column = (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| Column {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    );
    let identity = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ];
    prop_oneof![
        (lsn(), time(), any::<u32>()).prop_map(|(final_lsn, commit_time_micros, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time_micros,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), time()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_micros)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            })
        ),
        (lsn(), name()).prop_map(|(origin_lsn, name)| {
            Message::Origin(switchyard::source::postgres::pgoutput::Origin { origin_lsn, name })
        }),
        (
            any::<u32>(),
            name(),
            name(),
            identity,
            proptest::collection::vec(column, 0..6)
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type(Type {
            oid,
            namespace,
            name
        })),
        (any::<u32>(), tuple())
            .prop_map(|(relation, new)| Message::Insert(Insert { relation, new })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple())
            .prop_map(|(relation, old, new)| Message::Update(Update { relation, old, new })),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation, old)| Message::Delete(Delete { relation, old })),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..6)
        )
            .prop_map(|(cascade, restart_identity, relations)| {
                Message::Truncate(Truncate {
                    cascade,
                    restart_identity,
                    relations,
                })
            }),
        (
            any::<bool>(),
            lsn(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(transactional, lsn, prefix, content)| {
                Message::LogicalMessage(LogicalMessage {
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            }),
    ]
}

/// An edit that makes a valid message almost right.
#[derive(Debug, Clone)]
enum Edit {
    /// Cut the message at this fraction of its length (per mille).
    Truncate(u16),
    /// Write a 32-bit value (a length, a count, an OID) at this fraction of the length.
    Word(u16, u32),
    /// Write a 16-bit value (a column count) at this fraction of the length.
    Half(u16, u16),
    /// Replace the message tag.
    Tag(u8),
    /// XOR one byte.
    Flip(u16, u8),
    /// Insert bytes.
    Insert(u16, Vec<u8>),
}

/// Values that make a length or a count huge, negative or off by one.
fn hostile_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(u32::MAX),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(1 << 31 | 1),
        Just(0x0001_0000),
        Just(0x00ff_ffff),
        any::<u32>(),
        0u32..64,
    ]
}

fn hostile_u16() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0x7fff),
        Just(0x8000),
        Just(0xffff),
        Just(0x0100),
        any::<u16>(),
        0u16..16,
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0u16..1000;
    prop_oneof![
        at.clone().prop_map(Edit::Truncate),
        (at.clone(), hostile_u32()).prop_map(|(a, v)| Edit::Word(a, v)),
        (at.clone(), hostile_u16()).prop_map(|(a, v)| Edit::Half(a, v)),
        any::<u8>().prop_map(Edit::Tag),
        (at.clone(), 1u8..=255).prop_map(|(a, x)| Edit::Flip(a, x)),
        (at, proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(a, b)| Edit::Insert(a, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |per_mille: u16, len: usize| len * usize::from(per_mille) / 1000;
    match edit {
        Edit::Truncate(p) => bytes.truncate(at(*p, bytes.len())),
        Edit::Word(p, v) => {
            let i = at(*p, bytes.len().saturating_sub(4));
            if let Some(w) = bytes.get_mut(i..i + 4) {
                w.copy_from_slice(&v.to_be_bytes());
            }
        }
        Edit::Half(p, v) => {
            let i = at(*p, bytes.len().saturating_sub(2));
            if let Some(w) = bytes.get_mut(i..i + 2) {
                w.copy_from_slice(&v.to_be_bytes());
            }
        }
        Edit::Tag(t) => {
            if let Some(b) = bytes.first_mut() {
                *b = *t;
            }
        }
        Edit::Flip(p, x) => {
            let i = at(*p, bytes.len());
            if let Some(b) = bytes.get_mut(i) {
                *b ^= x;
            }
        }
        Edit::Insert(p, more) => {
            let i = at(*p, bytes.len());
            bytes.splice(i..i, more.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(cases(5000))]

    /// What the writer writes, the decoder reads back unchanged.
    #[test]
    fn every_message_reads_back_as_written(m in message()) {
        let bytes = encode(&m);
        prop_assert_eq!(decode_checked(&bytes), Ok(m));
    }

    /// Every proper prefix of a message is an error naming the message, never a panic.
    #[test]
    fn a_message_cut_short_is_an_error(m in message(), cut in 0usize..1000) {
        let bytes = encode(&m);
        let at = bytes.len() * cut / 1000;
        let result = decode_checked(&bytes[..at]);
        prop_assert!(result.is_err(), "{} of {} bytes decoded: {:?}", at, bytes.len(), result);
    }

    /// Valid messages with hostile edits: huge lengths and counts, wrong tags, inserted bytes.
    /// Whatever decodes, decodes again the same from what the writer makes of it.
    #[test]
    fn an_edited_message_never_panics_nor_allocates_from_its_lengths(
        m in message(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = encode(&m);
        for e in &edits {
            apply(&mut bytes, e);
        }
        if let Ok(read) = decode_checked(&bytes) {
            prop_assert_eq!(decode_checked(&encode(&read)), Ok(read));
        }
    }

    /// Noise: arbitrary bytes after each tag.
    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_beyond_their_size(
        tag in prop_oneof![
            proptest::sample::select(b"BCORYIUDTM".to_vec()),
            any::<u8>(),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&rest);
        if let Ok(read) = decode_checked(&bytes) {
            prop_assert_eq!(decode_checked(&encode(&read)), Ok(read));
        }
    }
}

/// Regressions: each length or count field at its most hostile, in an otherwise valid message.
#[test]
fn huge_length_and_count_fields_are_errors_without_large_allocations() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("column count 32767 in a relation", {
            let mut w = W(Vec::new());
            w.u8(b'R')
                .u32(1)
                .str("public")
                .str("t")
                .u8(b'd')
                .i16(i16::MAX);
            w.0
        }),
        ("column count -1 in a relation", {
            let mut w = W(Vec::new());
            w.u8(b'R').u32(1).str("public").str("t").u8(b'd').i16(-1);
            w.0
        }),
        ("column count 32767 in a tuple", {
            let mut w = W(Vec::new());
            w.u8(b'I').u32(1).u8(b'N').i16(i16::MAX);
            w.0
        }),
        ("value length 2^31-1", {
            let mut w = W(Vec::new());
            w.u8(b'I').u32(1).u8(b'N').i16(1).u8(b't').u32(0x7fff_ffff);
            w.0
        }),
        ("value length -2^31", {
            let mut w = W(Vec::new());
            w.u8(b'I').u32(1).u8(b'N').i16(1).u8(b'b').u32(0x8000_0000);
            w.0
        }),
        ("relation count 2^32-1 in a truncate", {
            let mut w = W(Vec::new());
            w.u8(b'T').u32(u32::MAX).u8(0);
            w.0
        }),
        ("content length 2^32-1 in a logical message", {
            let mut w = W(Vec::new());
            w.u8(b'M').u8(1).u64(0).str("p").u32(u32::MAX);
            w.0
        }),
        ("a string without its NUL", {
            let mut w = W(Vec::new());
            w.u8(b'O').u64(0);
            w.0.extend_from_slice(&[b'x'; 100]);
            w.0
        }),
    ];
    for (what, bytes) in cases {
        let err = decode_checked(&bytes).expect_err(what);
        assert!(
            err.contains("cannot fit")
                || err.contains("needs")
                || err.contains("negative")
                || err.contains("NUL"),
            "{what}: {err}"
        );
    }
}
