//! Decoder for the `pgoutput` logical replication protocol (version 1): the payload of each
//! XLogData message of a replication stream started with `proto_version '1'`.
//!
//! Every message type of protocol 1 is decoded: Begin, Commit, Origin, Relation, Type, Insert,
//! Update (with an old key `K` or old row `O`, or neither), Delete, Truncate and logical decoding
//! Message. Column values arrive in text form; an unchanged TOASTed value is
//! [`Datum::UnchangedToast`], never a NULL, so the source can fill it in. Malformed input is a
//! [`DecodeError`] naming the message and the byte offset; the decoder never panics and never
//! allocates more than the input's length for one message.

use super::lsn::Lsn;

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Start of a transaction.
    Begin(Begin),
    /// End of a transaction.
    Commit(Commit),
    /// The transaction came from another node.
    Origin(Origin),
    /// A table's shape, sent before its first change and again after it changes.
    Relation(Relation),
    /// A non-built-in type used by a relation.
    Type(Type),
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// Tables were truncated.
    Truncate(Truncate),
    /// `pg_logical_emit_message` output.
    LogicalMessage(LogicalMessage),
}

/// `B`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `C`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags (unused by Postgres so far).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the transaction: what to confirm once it is durable.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_micros: i64,
}

/// `O`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub origin_lsn: Lsn,
    /// Origin name.
    pub name: String,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (the key).
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (e.g. numeric precision and scale), -1 when none.
    pub type_modifier: i32,
}

/// `REPLICA IDENTITY` of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: every column.
    Full,
    /// `i`: a unique index.
    Index,
}

/// `R`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub oid: u32,
    /// Schema (`pg_catalog` arrives as the empty string).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity.
    pub replica_identity: ReplicaIdentity,
    /// Columns in order.
    pub columns: Vec<Column>,
}

/// `Y`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// Type OID.
    pub oid: u32,
    /// Schema.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

pub use crate::event::{Datum, Tuple};

/// `I`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Relation OID.
    pub relation: u32,
    /// The new row.
    pub new: Tuple,
}

/// What an update or delete carries of the old row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the old key columns (others are NULL); sent when the key changed.
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

/// `U`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Relation OID.
    pub relation: u32,
    /// The old key or row, when the replica identity sends it.
    pub old: Option<OldTuple>,
    /// The new row.
    pub new: Tuple,
}

/// `D`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Relation OID.
    pub relation: u32,
    /// The old key or row.
    pub old: OldTuple,
}

/// `T`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// `CASCADE` was given.
    pub cascade: bool,
    /// `RESTART IDENTITY` was given.
    pub restart_identity: bool,
    /// The truncated relations.
    pub relations: Vec<u32>,
}

/// `M`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Emitted inside the transaction (else immediately).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content.
    pub content: Vec<u8>,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput {message} message at byte {offset}: {problem}")]
pub struct DecodeError {
    /// The message type being decoded.
    pub message: &'static str,
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub problem: String,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self, problem: impl Into<String>) -> DecodeError {
        DecodeError {
            message: self.message,
            offset: self.pos,
            problem: problem.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                self.error(format!(
                    "{what}: needs {n} bytes, {} left",
                    self.buf.len() - self.pos
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(self.u32(what)? as i32)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn lsn(&mut self, what: &str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(self.u64(what)?))
    }

    fn timestamp(&mut self, what: &str) -> Result<i64, DecodeError> {
        let pg = self.u64(what)? as i64;
        pg.checked_add(PG_EPOCH_OFFSET_MICROS)
            .ok_or_else(|| self.error(format!("{what}: timestamp out of range")))
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.error(format!("{what}: string has no terminating NUL")))?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|e| self.error(format!("{what}: not UTF-8: {e}")))?
            .to_string();
        self.pos += nul + 1;
        Ok(s)
    }

    fn count(&mut self, what: &str, each_at_least: usize) -> Result<usize, DecodeError> {
        let n = self.i16(what)?;
        let n =
            usize::try_from(n).map_err(|_| self.error(format!("{what}: negative count {n}")))?;
        // Bound allocations by what the input could possibly hold.
        if n.saturating_mul(each_at_least) > self.buf.len() - self.pos {
            return Err(self.error(format!("{what}: {n} entries cannot fit in the message")));
        }
        Ok(n)
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.count("column count", 1)?;
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let kind = self.u8("column kind")?;
            values.push(match kind {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' | b'b' => {
                    let len = self.i32("value length")?;
                    let len = usize::try_from(len)
                        .map_err(|_| self.error(format!("column {i}: negative length {len}")))?;
                    let bytes = self.take(len, "value")?.to_vec();
                    if kind == b't' {
                        Datum::Text(bytes)
                    } else {
                        Datum::Binary(bytes)
                    }
                }
                other => {
                    self.pos -= 1;
                    return Err(self.error(format!(
                        "column {i}: unknown value kind {:?}",
                        char::from(other)
                    )));
                }
            });
        }
        Ok(Tuple(values))
    }

    fn old_tuple(&mut self, tag: u8) -> Result<OldTuple, DecodeError> {
        Ok(match tag {
            b'K' => OldTuple::Key(self.tuple()?),
            _ => OldTuple::Full(self.tuple()?),
        })
    }

    fn finish<T>(&self, value: T) -> Result<T, DecodeError> {
        if self.pos == self.buf.len() {
            Ok(value)
        } else {
            Err(self.error(format!(
                "{} unexpected trailing bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}

/// Decodes one pgoutput message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let Some((&tag, _)) = buf.split_first() else {
        return Err(DecodeError {
            message: "(empty)",
            offset: 0,
            problem: "no bytes".into(),
        });
    };
    let message = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => {
            return Err(DecodeError {
                message: "(unknown)",
                offset: 0,
                problem: format!(
                    "unknown message type {:?}; streaming (protocol 2+) messages need proto_version 1",
                    char::from(other)
                ),
            });
        }
    };
    let mut r = Reader {
        buf,
        pos: 1,
        message,
    };
    let msg = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: r.lsn("final LSN")?,
            commit_time_micros: r.timestamp("commit time")?,
            xid: r.u32("xid")?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit LSN")?,
            end_lsn: r.lsn("end LSN")?,
            commit_time_micros: r.timestamp("commit time")?,
        }),
        b'O' => Message::Origin(Origin {
            origin_lsn: r.lsn("origin LSN")?,
            name: r.string("origin name")?,
        }),
        b'R' => {
            let oid = r.u32("relation OID")?;
            let namespace = r.string("namespace")?;
            let name = r.string("relation name")?;
            let replica_identity = match r.u8("replica identity")? {
                b'd' => ReplicaIdentity::Default,
                b'n' => ReplicaIdentity::Nothing,
                b'f' => ReplicaIdentity::Full,
                b'i' => ReplicaIdentity::Index,
                other => {
                    r.pos -= 1;
                    return Err(
                        r.error(format!("unknown replica identity {:?}", char::from(other)))
                    );
                }
            };
            // flags + NUL + oid + typmod: at least 10 bytes a column.
            let n = r.count("column count", 10)?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                columns.push(Column {
                    is_key: r.u8("column flags")? & 1 == 1,
                    name: r.string("column name")?,
                    type_oid: r.u32("column type OID")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type(Type {
            oid: r.u32("type OID")?,
            namespace: r.string("namespace")?,
            name: r.string("type name")?,
        }),
        b'I' => {
            let relation = r.u32("relation OID")?;
            match r.u8("tuple marker")? {
                b'N' => Message::Insert(Insert {
                    relation,
                    new: r.tuple()?,
                }),
                other => {
                    r.pos -= 1;
                    return Err(r.error(format!("expected 'N', found {:?}", char::from(other))));
                }
            }
        }
        b'U' => {
            let relation = r.u32("relation OID")?;
            let mut marker = r.u8("tuple marker")?;
            let old = match marker {
                b'K' | b'O' => {
                    let old = r.old_tuple(marker)?;
                    marker = r.u8("tuple marker")?;
                    Some(old)
                }
                _ => None,
            };
            if marker != b'N' {
                r.pos -= 1;
                return Err(r.error(format!("expected 'N', found {:?}", char::from(marker))));
            }
            Message::Update(Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32("relation OID")?;
            match r.u8("tuple marker")? {
                m @ (b'K' | b'O') => Message::Delete(Delete {
                    relation,
                    old: r.old_tuple(m)?,
                }),
                other => {
                    r.pos -= 1;
                    return Err(r.error(format!(
                        "expected 'K' or 'O', found {:?}",
                        char::from(other)
                    )));
                }
            }
        }
        b'T' => {
            let n = r.u32("relation count")? as usize;
            let options = r.u8("options")?;
            if n.saturating_mul(4) > buf.len() - r.pos {
                return Err(r.error(format!("{n} relations cannot fit in the message")));
            }
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32("relation OID")?);
            }
            Message::Truncate(Truncate {
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
                relations,
            })
        }
        _ => {
            let flags = r.u8("flags")?;
            let lsn = r.lsn("message LSN")?;
            let prefix = r.string("prefix")?;
            let len = r.u32("content length")? as usize;
            Message::LogicalMessage(LogicalMessage {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.take(len, "content")?.to_vec(),
            })
        }
    };
    r.finish(msg)
}

#[cfg(test)]
mod tests;
