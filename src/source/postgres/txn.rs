//! The transaction a stream is reading, and where each of its changes sits in it.

use std::collections::HashMap;

use crate::event::ChangePosition;

/// The transaction being read: from its Begin to its Commit.
pub(super) struct Txn {
    /// The commit's LSN (pgoutput's `final_lsn`): the position of every event of it.
    pub(super) final_lsn: u64,
    pub(super) xid: u32,
    /// Commit time, microseconds since the Unix epoch.
    pub(super) commit_us: i64,
    /// Events handed on so far (the next event's ordinal in its id).
    pub(super) ordinal: u32,
    /// Row changes so far (Debezium's `transaction.total_order`; tombstones not counted).
    pub(super) total_order: u64,
    /// Row changes so far per relation (`transaction.data_collection_order`).
    pub(super) per_table: HashMap<u32, u64>,
}

impl Txn {
    pub(super) fn new(final_lsn: u64, xid: u32, commit_us: i64) -> Txn {
        Txn {
            final_lsn,
            xid,
            commit_us,
            ordinal: 0,
            total_order: 0,
            per_table: HashMap::new(),
        }
    }

    /// Where a change of `relation` read at `lsn` sits (a tombstone shares its delete's).
    pub(super) fn position(
        &mut self,
        lsn: u64,
        last_commit_lsn: Option<u64>,
        relation: u32,
        op: crate::event::ChangeOp,
    ) -> ChangePosition {
        if op != crate::event::ChangeOp::Tombstone {
            self.total_order += 1;
            *self.per_table.entry(relation).or_default() += 1;
        }
        ChangePosition {
            lsn,
            last_commit_lsn,
            commit_time_us: Some(self.commit_us),
            total_order: self.total_order,
            data_collection_order: self.per_table.get(&relation).copied().unwrap_or(1),
            incremental: false,
        }
    }
}
