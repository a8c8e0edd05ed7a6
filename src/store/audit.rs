//! The audit trail's hash chain: each row carries the digest of the row before it, so a row
//! changed, removed or inserted in the store afterwards breaks the chain at that point, and
//! [`verify`] (`switchyard dlq audit --verify`, `GET /api/v1/audit/verify`) names the first
//! broken link.
//!
//! ```text
//!  row n-1: … hash(n-1) ──┐
//!  row n:   prev = hash(n-1), fields … ──► hash(n) = sha256(prev ‖ fields, as a JSON array)
//! ```
//!
//! The store appends under a lock (SQLite: its write transaction; PostgreSQL: an advisory
//! lock), so instances sharing a store extend one chain. Rows written before the chain existed
//! (an upgraded store) have no hash: they may only come first, and are counted, not verified.
//! What the chain does not show: rows removed from the end (keep a copy of the last hash
//! elsewhere — `verify` reports it — to notice that).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One line of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When, micros since the epoch.
    pub at: i64,
    /// Who: `token:<name>` (the admin API, authenticated), `local:<user>` (the CLI straight on
    /// the store: break-glass), `switchyard` (the daemon itself).
    pub actor: String,
    /// The role the actor acted with (`viewer`, `operator`, `admin`; empty when not through
    /// the admin API).
    pub role: String,
    /// `replay`, `replay --dry-run`, `discard`, `view raw payload`, `denied`, …
    pub action: String,
    /// The selector as typed (or the request's method and path).
    pub selector: String,
    /// How many entries it applied to.
    pub count: i64,
    /// What happened.
    pub result: String,
    /// The peer address of the request (admin API), empty otherwise.
    pub peer: String,
    /// The request's id (admin API: also in its `x-request-id` answer header).
    pub request_id: String,
}

/// The audit-trail view of a [`Store`] ([`Store::audit_trail`]).
#[derive(Clone, Copy)]
pub struct AuditTrail<'a>(pub(super) &'a Store);

impl AuditTrail<'_> {
    /// Appends to the audit log, chained to the row before ([`link`]).
    pub async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.0, s => s.audit(entry).await)
    }

    /// Audit rows after `after_id`, oldest first, at most `limit`.
    pub async fn page(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self.0, s => s.audit_page(after_id, limit).await)
    }

    /// Walks the whole audit log and checks its chain ([`Verifier`]).
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let mut v = Verifier::default();
        let mut after = 0;
        'pages: loop {
            let page = self.page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for r in &page {
                if !v.push(r) {
                    break 'pages;
                }
            }
        }
        Ok(v.finish())
    }

    /// The audit log, newest first.
    pub async fn newest(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self.0, s => s.audit_log(limit).await)
    }
}

/// One stored row of the audit log, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// The row's id in the store (ascending in write order).
    pub id: i64,
    /// What was recorded.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The previous row's hash (`""` for the first).
    pub prev_hash: String,
    /// This row's hash (`""` for rows written before the chain).
    pub hash: String,
}

/// The hash of a row holding `entry` after a row whose hash is `prev` (hex).
pub(crate) fn link(prev: &str, e: &AuditEntry) -> String {
    let fields = serde_json::json!([
        prev,
        e.at,
        e.actor,
        e.role,
        e.action,
        e.selector,
        e.count,
        e.result,
        e.peer,
        e.request_id,
    ]);
    hex::encode(Sha256::digest(fields.to_string().as_bytes()))
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows checked (chained).
    pub verified: u64,
    /// Rows written before the chain existed (no hash), at the start of the log.
    pub unchained: u64,
    /// The first row that does not follow from the one before it, and why.
    pub broken: Option<BrokenLink>,
    /// The hash of the last row: keep it elsewhere to notice rows removed from the end.
    pub last_hash: String,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The id of the first row that does not verify.
    pub id: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks rows (in id order, in pages) as they come; call [`Verifier::finish`] at the end.
#[derive(Debug, Default)]
pub(crate) struct Verifier {
    found: Verification,
    chained: bool,
}

impl Verifier {
    /// Checks the next row; false once the chain is broken (no need to read further).
    pub(crate) fn push(&mut self, r: &AuditRecord) -> bool {
        if self.found.broken.is_some() {
            return false;
        }
        let broken = |reason: String| Some(BrokenLink { id: r.id, reason });
        if r.hash.is_empty() {
            if self.chained {
                self.found.broken = broken(
                    "the row has no hash, but rows before it are chained: its hash was removed"
                        .into(),
                );
                return false;
            }
            self.found.unchained += 1;
            return true;
        }
        if r.prev_hash != self.found.last_hash {
            self.found.broken = broken(format!(
                "it names {} as the previous row's hash, but the previous row's hash is {}: a row \
                 before it was changed, removed or inserted",
                short(&r.prev_hash),
                short(&self.found.last_hash)
            ));
            return false;
        }
        let want = link(&r.prev_hash, &r.entry);
        if want != r.hash {
            self.found.broken = broken(
                "its fields do not match its hash: the row was changed after it was written".into(),
            );
            return false;
        }
        self.chained = true;
        self.found.verified += 1;
        self.found.last_hash = r.hash.clone();
        true
    }

    /// What was found.
    pub(crate) fn finish(self) -> Verification {
        self.found
    }
}

fn short(hash: &str) -> String {
    if hash.is_empty() {
        "nothing".into()
    } else {
        format!("{}…", hash.chars().take(12).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            at: n,
            actor: "token:alice".into(),
            role: "operator".into(),
            action: "discard".into(),
            selector: "--id 1".into(),
            count: 1,
            result: "ok".into(),
            peer: "127.0.0.1".into(),
            request_id: format!("r{n}"),
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = String::new();
        (1..=n)
            .map(|i| {
                let e = entry(i);
                let hash = link(&prev, &e);
                let r = AuditRecord {
                    id: i,
                    entry: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn verify(rows: &[AuditRecord]) -> Verification {
        let mut v = Verifier::default();
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_change_is_found_at_its_row() {
        let rows = chain(5);
        let ok = verify(&rows);
        assert_eq!((ok.verified, ok.broken), (5, None));
        assert_eq!(ok.last_hash, rows[4].hash);

        let mut changed = rows.clone();
        changed[2].entry.count = 1000;
        assert_eq!(verify(&changed).broken.map(|b| b.id), Some(3));

        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).broken.map(|b| b.id), Some(3));

        let mut rehashed = rows.clone();
        rehashed[3].entry.actor = "token:mallory".into();
        rehashed[3].hash = link(&rehashed[3].prev_hash, &rehashed[3].entry);
        assert_eq!(
            verify(&rehashed).broken.map(|b| b.id),
            Some(5),
            "a row rewritten with a fresh hash breaks the next link"
        );

        let mut unhashed = rows;
        unhashed[2].hash.clear();
        assert_eq!(verify(&unhashed).broken.map(|b| b.id), Some(3));
    }

    #[test]
    fn rows_from_before_the_chain_are_counted_first() {
        let mut rows: Vec<AuditRecord> = (1..=2)
            .map(|i| AuditRecord {
                id: i,
                entry: entry(i),
                prev_hash: String::new(),
                hash: String::new(),
            })
            .collect();
        let mut chained = chain(2);
        for (k, r) in chained.iter_mut().enumerate() {
            r.id = 3 + k as i64;
        }
        rows.extend(chained);
        let v = verify(&rows);
        assert_eq!((v.unchained, v.verified, v.broken), (2, 2, None));
    }
}
