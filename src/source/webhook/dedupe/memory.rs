//! What deduplication keeps in memory: the newest accepted ids by [`Print`], fingerprints of
//! older ones by hour ([`Older`]), and the ids being delivered now (see the parent module).

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::{MEMORY_CAP, Outcome};

/// Memory's name for an id: two independent keyed SipHash-1-3 hashes of its key (random keys per
/// process), 128 bits. Two ids of a window sharing one (a new event then answered as a
/// duplicate) has a probability of about n²/2^129 (n ≤ 2.2 million ids: under 10^-26), far
/// below the odds of the hardware corrupting the answer.
pub(super) type Print = u128;

/// Computes [`Print`]s.
#[derive(Clone)]
pub(super) struct Printer(
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
);

impl Printer {
    pub(super) fn new() -> Printer {
        Printer(Default::default(), Default::default())
    }

    pub(super) fn print(&self, key: &str) -> Print {
        use std::hash::BuildHasher;
        (u128::from(self.0.hash_one(key)) << 64) | u128::from(self.1.hash_one(key))
    }
}

/// What memory knows, under one lock: the newest accepted ids, fingerprints of older ones and
/// the ids being delivered now.
pub(super) struct Memory {
    pub(super) at: Sharded<Print, i64>,
    pub(super) order: VecDeque<(Print, i64)>,
    /// Memory holds every id accepted since `complete_since` (micros).
    pub(super) complete_since: i64,
    /// Fingerprints of the ids memory no longer holds.
    pub(super) older: Older,
    /// Ids a request is delivering now, with the requests that wait for its outcome.
    pub(super) inflight: HashMap<Print, Vec<oneshot::Sender<Outcome>>, BuildFingerprint>,
}

impl Memory {
    pub(super) fn new(complete_since: i64, window: i64) -> Memory {
        Memory {
            at: Sharded::default(),
            // Allocated once (pages are touched as ids arrive): growing it by doubling copied
            // up to 6 MiB under memory's lock.
            order: VecDeque::with_capacity(MEMORY_CAP + 1),
            complete_since,
            older: Older::new(complete_since, window),
            inflight: HashMap::default(),
        }
    }

    pub(super) fn insert(&mut self, p: Print, at: i64) {
        self.at.insert(p, at);
        self.order.push_back((p, at));
        while self.order.len() > MEMORY_CAP {
            if let Some((old, t)) = self.order.pop_front() {
                if self.at.get(&old) == Some(&t) {
                    self.at.remove(&old);
                    self.older.add(fingerprint(old), t);
                }
                self.complete_since = self.complete_since.max(t + 1);
            }
        }
    }

    /// Whether the id is in memory, accepted since `since`.
    pub(super) fn knows(&self, p: Print, since: i64) -> bool {
        self.at.get(&p).is_some_and(|at| *at >= since)
    }

    /// Whether the id is certainly not among the ids accepted since `since`, without asking the
    /// store: memory holds every id since then, or the fingerprints of the ones it dropped
    /// do not include this one.
    pub(super) fn surely_new(&self, p: Print, since: i64) -> bool {
        self.complete_since <= since
            || (self.older.complete_since <= since && !self.older.may_hold(fingerprint(p), since))
    }

    /// Ends the delivery of `p`: its waiting requests, to be told the outcome.
    pub(super) fn finish(&mut self, p: Print) -> Vec<oneshot::Sender<Outcome>> {
        self.inflight.remove(&p).unwrap_or_default()
    }
}

/// The 64-bit fingerprint of an id memory dropped: the low half of its [`Print`] (one of the
/// two independent hashes).
pub(super) fn fingerprint(p: Print) -> u64 {
    (p & u128::from(u64::MAX)) as u64
}

/// Fingerprints of ids memory dropped: half of the id's [`Print`], 64 bits, in one set per hour
/// of acceptance. A fingerprint not found means "not accepted" for certain; one found
/// means "perhaps" (a duplicate, or one chance in 2^64 / n of another id), which the store
/// then answers. So once memory is full, a new id still costs no store read: about 10 bytes
/// each, at most [`OLDER_CAP`] (the oldest hours are dropped beyond that, and ids of those
/// hours are looked up in the store again).
pub(super) struct Older {
    /// (first micro of the hour, fingerprints), oldest first.
    hours: VecDeque<(i64, Sharded<u64, ()>)>,
    len: usize,
    /// Memory and these fingerprints know every id accepted since then (micros).
    pub(super) complete_since: i64,
    /// Hours older than this window are dropped (micros).
    window: i64,
}

/// Fingerprints kept at most (about 20 MiB).
pub(super) const OLDER_CAP: usize = 2_000_000;
const HOUR: i64 = 3_600_000_000;

impl Older {
    pub(super) fn new(complete_since: i64, window: i64) -> Older {
        Older {
            hours: VecDeque::new(),
            len: 0,
            complete_since,
            window,
        }
    }

    pub(super) fn add(&mut self, fp: u64, at: i64) {
        let hour = at - at.rem_euclid(HOUR);
        // Ids leave memory in acceptance order: almost always the newest hour.
        let i = match self.hours.iter().rposition(|(h, _)| *h <= hour) {
            Some(i) if self.hours[i].0 == hour => i,
            found => {
                let i = found.map_or(0, |i| i + 1);
                self.hours.insert(i, (hour, Sharded::default()));
                // Hours past the window no longer matter to any claim.
                while self
                    .hours
                    .front()
                    .is_some_and(|(h, _)| h + HOUR < at - self.window)
                {
                    self.drop_oldest();
                }
                self.hours
                    .iter()
                    .rposition(|(h, _)| *h == hour)
                    .unwrap_or(0)
            }
        };
        if let Some((_, set)) = self.hours.get_mut(i)
            && set.insert(fp, ()).is_none()
        {
            self.len += 1;
        }
        while self.len > OLDER_CAP && self.hours.len() > 1 {
            self.drop_oldest();
        }
    }

    /// Takes in `built`, the fingerprints of the ids accepted before `before` (read from the
    /// store at start-up while this one collected the ids memory dropped since): from then on
    /// both are known, from `built`'s start unless this one has since dropped hours too.
    /// Runs under memory's lock, so it costs what this one holds (the ids dropped during the
    /// read), not what `built` holds (up to [`OLDER_CAP`]).
    pub(super) fn absorb(&mut self, mut built: Older, before: i64) {
        let newer = std::mem::replace(self, Older::new(0, 0));
        for (hour, set) in newer.hours {
            let i = match built.hours.iter().position(|(h, _)| *h >= hour) {
                Some(i) if built.hours[i].0 == hour => i,
                found => {
                    let i = found.unwrap_or(built.hours.len());
                    built.hours.insert(i, (hour, Sharded::default()));
                    i
                }
            };
            if let Some((_, into)) = built.hours.get_mut(i) {
                for (fp, ()) in set.into_iter() {
                    if into.insert(fp, ()).is_none() {
                        built.len += 1;
                    }
                }
            }
        }
        if newer.complete_since > before {
            // This one dropped hours after `before`: what both know starts there.
            built.complete_since = built.complete_since.max(newer.complete_since);
        }
        built.window = newer.window;
        *self = built;
        while self.len > OLDER_CAP && self.hours.len() > 1 {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((h, set)) = self.hours.pop_front() {
            self.len -= set.len();
            self.complete_since = self.complete_since.max(h + HOUR);
        }
    }

    fn may_hold(&self, fp: u64, since: i64) -> bool {
        self.hours
            .iter()
            .rev()
            .take_while(|(h, _)| h + HOUR > since)
            .any(|(_, set)| set.get(&fp).is_some())
    }
}

/// Shards of [`Sharded`]: a map growing past its capacity rehashes one shard, a sixteenth of
/// its entries.
const SHARDS: usize = 16;

/// A hash map split by key into [`SHARDS`] maps. Growing a single map of memory's 200,000 ids
/// (or an hour's fingerprints) rehashed all of them at once, under memory's lock: every request
/// of both HTTP threads waited (20–50 ms pauses in open-loop runs at 10,000 requests/s); a
/// shard's rehash is a sixteenth of that.
pub(super) struct Sharded<K, V> {
    shards: [HashMap<K, V, BuildFingerprint>; SHARDS],
}

/// Which shard a key is in: bits its map's hash does not use for buckets or tags.
pub(super) trait ShardKey: std::hash::Hash + Eq {
    fn shard(&self) -> usize;
}

impl ShardKey for u128 {
    fn shard(&self) -> usize {
        // The high half (the map hashes the low half, an independent hash).
        ((self >> 64) as usize) % SHARDS
    }
}

impl ShardKey for u64 {
    fn shard(&self) -> usize {
        // Between the bucket bits (low) and the tag bits (top 7).
        ((self >> 40) as usize) % SHARDS
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: std::array::from_fn(|_| HashMap::default()),
        }
    }
}

impl<K: ShardKey, V> Sharded<K, V> {
    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.shards[k.shard()].get(k)
    }

    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.shards[k.shard()].insert(k, v)
    }

    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        self.shards[k.shard()].remove(k)
    }

    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub(super) fn into_iter(self) -> impl Iterator<Item = (K, V)> {
        self.shards.into_iter().flatten()
    }
}

/// Prints and fingerprints are already uniform hashes: maps and sets use them as they are.
#[derive(Default, Clone, Copy)]
pub(super) struct BuildFingerprint;

impl std::hash::BuildHasher for BuildFingerprint {
    type Hasher = FingerprintHasher;
    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

pub(super) struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s and `u128`s are hashed here; any other input still gets a usable hash.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = fingerprint(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_memory_dropped_are_known_by_fingerprint_so_new_ids_need_no_store_read() {
        let printer = Printer::new();
        let id = |i: &str| printer.print(&format!("s\u{1f}evt_{i}"));
        let mut m = Memory::new(0, 24 * HOUR);
        let t0 = 10 * HOUR;
        let n = MEMORY_CAP + 5_000;
        for i in 0..n {
            m.insert(id(&i.to_string()), t0 + i as i64);
        }
        // Memory alone no longer knows everything since the window's start...
        assert!(m.complete_since > 0);
        // ...but with the fingerprints a new id is certainly new,
        assert!(m.surely_new(id("new"), 0));
        // a dropped id is "perhaps" (the store decides), and a kept one is in memory.
        assert!(!m.surely_new(id("3"), 0));
        assert!(!m.knows(id("3"), 0));
        assert_eq!(m.older.len, 5_000);
        assert!(m.knows(id(&(n - 1).to_string()), t0));
        assert!(!m.knows(id(&(n - 1).to_string()), t0 + n as i64));
    }

    #[test]
    fn sharded_maps_keep_every_entry_and_spread_them_over_all_shards() {
        let printer = Printer::new();
        let mut at: Sharded<Print, i64> = Sharded::default();
        let mut fps: Sharded<u64, ()> = Sharded::default();
        for i in 0..10_000i64 {
            let p = printer.print(&format!("s\u{1f}evt_{i}"));
            assert_eq!(at.insert(p, i), None);
            assert_eq!(fps.insert(fingerprint(p), ()), None);
        }
        assert_eq!(at.len(), 10_000);
        assert_eq!(fps.len(), 10_000);
        // Each shard holds about a sixteenth: none grows alone.
        for shards in [
            at.shards.iter().map(HashMap::len).collect::<Vec<_>>(),
            fps.shards.iter().map(HashMap::len).collect::<Vec<_>>(),
        ] {
            assert!(shards.iter().all(|&n| n > 400 && n < 850), "{shards:?}");
        }
        let p = printer.print("s\u{1f}evt_7");
        assert_eq!(at.get(&p), Some(&7));
        assert_eq!(at.insert(p, 70), Some(7));
        assert_eq!(at.remove(&p), Some(70));
        assert_eq!(at.get(&p), None);
        assert_eq!(at.len(), 9_999);
        assert_eq!(fps.into_iter().count(), 10_000);
    }

    #[test]
    fn prints_are_stable_within_a_process_and_differ_between_ids() {
        let printer = Printer::new();
        let a = printer.print("s\u{1f}evt_1");
        assert_eq!(a, printer.print("s\u{1f}evt_1"));
        assert_ne!(a, printer.print("s\u{1f}evt_2"));
        assert_ne!(a, printer.print("t\u{1f}evt_1"));
        // The two halves are independent hashes.
        assert_ne!((a >> 64) as u64, fingerprint(a));
    }

    /// Claims `key` and finishes it as accepted; true if this call led (a new id).

    #[test]
    fn fingerprints_read_at_start_up_join_the_ones_memory_dropped_meanwhile() {
        let printer = Printer::new();
        let fp = |k: &str| fingerprint(printer.print(k));
        let window = 24 * HOUR;
        let (since, before) = (HOUR, 10 * HOUR + 5);
        // Read from the store: ids of hours 3 and 10, before `before`.
        let mut built = Older::new(since, window);
        built.add(fp("old-3"), 3 * HOUR + 1);
        built.add(fp("old-10"), 10 * HOUR + 1);
        // Meanwhile memory dropped newer ids (hours 10 and 11) into its own fingerprints.
        let mut o = Older::new(before, window);
        o.add(fp("new-10"), 10 * HOUR + 7);
        o.add(fp("new-11"), 11 * HOUR + 7);
        o.add(fp("old-10"), 10 * HOUR + 9); // accepted again later: counted once
        assert!(!o.may_hold(fp("old-3"), since));
        o.absorb(built, before);
        // Both are known now, from the start of what the store was read for.
        assert_eq!(o.complete_since, since);
        for k in ["old-3", "old-10", "new-10", "new-11"] {
            assert!(o.may_hold(fp(k), since), "{k}");
        }
        assert!(!o.may_hold(fp("never"), since));
        assert_eq!(o.len, 4);
        let hours: Vec<i64> = o.hours.iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, vec![3 * HOUR, 10 * HOUR, 11 * HOUR]);

        // Had memory's fingerprints dropped hours meanwhile, they no longer know everything
        // since `before`: what they know is not extended backwards.
        let mut built = Older::new(since, window);
        built.add(fp("old-3"), 3 * HOUR + 1);
        let mut o = Older::new(before, window);
        o.complete_since = 11 * HOUR;
        o.absorb(built, before);
        assert_eq!(o.complete_since, 11 * HOUR);
    }

    #[test]
    fn fingerprints_of_hours_past_the_window_are_dropped_and_the_claim_falls_back_to_the_store() {
        let window = 2 * HOUR;
        let mut o = Older::new(0, window);
        let printer = Printer::new();
        let fp = fingerprint(printer.print("a"));
        o.add(fp, HOUR + 5);
        assert!(o.may_hold(fp, 0));
        assert!(!o.may_hold(fingerprint(printer.print("b")), 0));
        // An id accepted four hours later: the first hour is past the window.
        o.add(fingerprint(printer.print("c")), 5 * HOUR + 1);
        assert_eq!(o.hours.len(), 1);
        assert!(!o.may_hold(fp, 0));
        // What the dropped hour knew is now only in the store: claims since then must ask it.
        assert_eq!(o.complete_since, 2 * HOUR);
        // A late eviction of an older hour goes into its own, ordered, set.
        o.add(fingerprint(printer.print("d")), 4 * HOUR + 1);
        let hours: Vec<i64> = o.hours.iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, vec![4 * HOUR, 5 * HOUR]);
        assert!(o.may_hold(fingerprint(printer.print("d")), 4 * HOUR));
        assert!(!o.may_hold(fingerprint(printer.print("d")), 5 * HOUR));
    }
}
